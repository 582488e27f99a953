"""`python -m tasks.metrics`: one JSON object on stdout, `error: ...` and exit status 2 on bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.metrics.__main__ import main

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
E2E = DATA / "metrics" / "e2e_example"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tasks.metrics", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_e2e_official_vector_subprocess():
    if shutil.which("java") is None:
        pytest.fail("Java is required (apt-get install -y default-jre-headless)")
    proc = run_cli("e2e", E2E / "baseline-output.txt", E2E / "devel-conc.txt")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["metric"] == "e2e" and result["unavailable"] == {}
    assert {k: round(v, 4) for k, v in result["scores"].items()} == {
        "BLEU": 0.7203,
        "NIST": 7.8212,
        "METEOR": 0.4801,
        "ROUGE_L": 0.7910,
        "CIDEr": 2.3039,
    }
    assert result["scores"]["NIST"] == pytest.approx(7.821151927455771, abs=1e-12)  # full precision
    assert "mteval-v13a" in result["settings"]["NIST"]


def test_squad_and_dart_in_process(tmp_path, capsys):
    assert (
        main(
            [
                "squad",
                str(DATA / "squad" / "dev-v1.1.reconstructed.json"),
                str(DATA / "metrics" / "squad_example" / "predictions_logistic_baseline.json"),
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["scores"] == {
        "exact_match": pytest.approx(40.14191106906339, abs=1e-9),
        "f1": pytest.approx(50.98153647324461, abs=1e-9),
    }
    hyp = tmp_path / "hypothesis"
    hyp.write_text("the cat sat .\nA dog\n", encoding="utf-8")
    refs = []
    for i, text in enumerate(["the cat sat .\na dog barks\n", "the cat sat .\na dog\n"]):
        refs.append(tmp_path / f"reference{i}")
        refs[-1].write_text(text, encoding="utf-8")
    assert main(["dart", str(hyp), *map(str, refs), "--no-meteor"]) == 0
    out = json.loads(capsys.readouterr().out)
    # "A dog" is lower-cased by the LoRA preprocessing and equals reference1 of line 2.
    assert out["scores"] == {"BLEU": pytest.approx(100.0), "TER": 0.0}
    assert out["settings"]["num_refs"] == 2 and "METEOR" in out["unavailable"]


def test_bad_input_exit_code_subprocess(tmp_path):
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("only one\n", encoding="utf-8")
    proc = run_cli("e2e", hyp, E2E / "devel-conc.txt")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: ") and "hyp.txt" in proc.stderr
    assert proc.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "file is empty"),
        (b"caf\xe9\n", "line 1: not valid UTF-8"),
    ],
)
def test_bad_files_in_process(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    assert main(["e2e", str(bad), str(E2E / "devel-conc.txt"), "--no-coco"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}") and message in err
    assert main(["dart", str(bad), str(bad)]) == 2
    assert message in capsys.readouterr().err
    assert main(["squad", str(bad), str(bad)]) == 2
    assert message in capsys.readouterr().err


def test_missing_file(capsys, tmp_path):
    assert main(["squad", str(tmp_path / "nope.json"), str(tmp_path / "nope2.json")]) == 2
    assert "nope.json: cannot read file" in capsys.readouterr().err


def test_scoring_command_imports_no_deep_learning_library():
    # `python -m tasks.metrics squad ...` must stay fast: no torch / transformers behind `tasks`.
    code = (
        "import runpy, sys; sys.argv = ['tasks.metrics', 'squad', sys.argv[1], sys.argv[2]];\n"
        "try:\n    runpy.run_module('tasks.metrics', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'numpy', 'scipy'})\n"
        "assert not heavy, heavy"
    )
    dataset = DATA / "squad" / "dev-v1.1.reconstructed.json"
    preds = DATA / "metrics" / "squad_example" / "predictions_logistic_baseline.json"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(dataset), str(preds)], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["scores"]["exact_match"] == pytest.approx(40.14191106906339)


def test_squad_question_without_answers_exits_2_naming_file_and_id(tmp_path):
    """Issue 26 #5: evaluate-v1.1.py would crash in max(); the command keeps its exit-code contract."""
    qas = [{"id": "q1", "question": "Who?", "answers": [{"text": "Ann", "answer_start": 0}]},
           {"id": "q2", "question": "What?", "answers": []}]  # fmt: skip
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": "Ann met Bob.", "qas": qas}]}]}))  # fmt: skip
    predictions = tmp_path / "predictions.json"
    predictions.write_text(json.dumps({"q1": "Ann", "q2": "Bob"}))
    proc = run_cli("squad", dataset, predictions)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"error: {dataset}: question 'q2' has no answers")
    assert proc.stderr.count("\n") == 1
