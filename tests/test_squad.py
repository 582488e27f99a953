"""SQuAD: JSON reading, overlapping windows and their labels, span post-processing, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from core import ConfigError
from models.hf import build_tokenizer
from runners.config import heads_for
from runners.train import run
from tasks.base import DataError
from tasks.metrics.squad import normalize_answer, score_files
from tasks.squad import Config, Squad, as_squad_dataset, best_answer, load_split, make_features
from tests.conftest import SHARED, make_cfg

SQUAD_DIR = SHARED / "squad"
DEV = "dev-v1.1.reconstructed.json"


@pytest.fixture(scope="module")
def gpt2_tokenizer():
    cfg = OmegaConf.create(
        {"name": "t", "tokenizer": str(SHARED / "tokenizers" / "gpt2"), "path": None, "hub_id": None}
    )
    return build_tokenizer(cfg, [])


def dev_cfg(**kw) -> Config:
    return Config(data_dir=str(SQUAD_DIR), files={"validation": DEV}, **kw)


def test_reads_the_full_dev_file_and_slices():
    rows = load_split(dev_cfg(), "validation")
    assert len(rows) == 10570
    assert rows[0]["id"] == "56be4db0acb8001400a502ec"
    assert rows[0]["answers"]["text"][0] == "Denver Broncos"
    assert all(r["context"][s:].startswith(t) for r in rows[:500] for t, s in zip(*r["answers"].values()))
    assert load_split(dev_cfg(), "validation[10:20]") == rows[10:20]


def test_missing_file_and_bad_split_name_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"missing SQuAD file .*train-v1.1.json; set task.data_dir"):
        Squad(Config(data_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="bad split"):
        Config(eval_splits=["validation[:x]"])
    with pytest.raises(ConfigError, match="doc_stride"):
        Config(max_length=64, doc_stride=64)


def test_window_labels_decode_to_the_answer(gpt2_tokenizer):
    """Every window that holds the answer is labelled with the tokens that cover it."""
    examples = load_split(dev_cfg(), "validation[:60]")
    feats = make_features(examples, gpt2_tokenizer, max_length=64, stride=16, keep_meta=True)
    assert len(feats) > 2 * len(examples)  # long contexts: several windows each
    labelled = exact = 0
    for f in feats:
        ex_index, offsets = f["meta"]
        assert len(f["input_ids"]) <= 64
        if f["start_positions"] == 0:  # not wholly in this window (GPT-2 has no CLS: index 0)
            continue
        labelled += 1
        ex = examples[ex_index]
        text = ex["context"][offsets[f["start_positions"]][0] : offsets[f["end_positions"]][1]]
        gold = ex["answers"]["text"][0]
        assert gold in text  # the covering tokens
        exact += normalize_answer(text) == normalize_answer(gold)
    assert labelled >= len(examples)
    assert exact >= 0.9 * labelled  # token boundaries inside an answer (e.g. '8' in '18') are rare


def test_best_span_across_a_window_boundary(gpt2_tokenizer):
    words = [f"w{i}" for i in range(40)]
    context = " ".join(words)

    def example(answer):
        start = context.index(answer)
        return {
            "id": "q1",
            "title": "t",
            "question": "Which?",
            "context": context,
            "answers": {"text": [answer], "answer_start": [start]},
        }

    def windows_of(answer):
        return make_features([example(answer)], gpt2_tokenizer, max_length=24, stride=10, keep_meta=True)

    # the answer: two words before the end of window 0's context and two after it
    w0_last = max(o[1] for o in windows_of(words[0])[0]["meta"][1] if o is not None)
    k = len(context[:w0_last].split())  # words wholly or partly in window 0
    answer = " ".join(words[k - 2 : k + 2])
    feats = windows_of(answer)
    offsets = [f["meta"][1] for f in feats]

    def token_at(window, char):  # index of the context token covering character `char`
        return next(j for j, o in enumerate(offsets[window]) if o is not None and o[0] <= char < o[1])

    a_start, a_end = context.index(answer), context.index(answer) + len(answer) - 1
    # the answer starts in window 0 and runs past its end; window 1 holds all of it
    assert a_start < w0_last < a_end
    assert min(o[0] for o in offsets[1] if o is not None) < a_start
    assert feats[0]["start_positions"] == 0 and feats[1]["start_positions"] > 0
    windows = []
    for w, f in enumerate(feats):
        n = len(f["input_ids"])
        start, end = np.full(n + 3, -100.0), np.full(n + 3, -100.0)
        start[n:] = end[n:] = 100.0  # logits past the window (batch padding): never a candidate
        start[0] = 50.0  # a question token: not context
        windows.append([start, end, offsets[w]])
    s0, w0_end = token_at(0, a_start), max(j for j, o in enumerate(offsets[0]) if o is not None)
    windows[0][0][s0], windows[0][1][w0_end] = 5.0, 3.0  # the answer cut at window 0's end: 8
    s1, e1 = token_at(1, a_start), token_at(1, a_end)
    windows[1][0][s1], windows[1][1][e1] = 4.0, 5.0  # the whole answer in window 1: 9
    windows[1][1][s1 - 1] = 20.0  # ends before the start: 24, refused
    assert best_answer(windows, context, n_best=20, max_answer_length=30) == answer
    assert (
        best_answer(windows[:1], context, n_best=20, max_answer_length=30) == context[a_start:w0_last].strip()
    )

    windows[1][1][s1 - 1] = -100.0
    windows[1][0][s1 - 3] = 7.0  # a longer span scoring 12
    longer = context[offsets[1][s1 - 3][0] : offsets[1][e1][1]].strip()
    assert len(longer) > len(answer) and longer.endswith(answer)
    assert best_answer(windows, context, n_best=20, max_answer_length=30) == longer
    assert best_answer(windows, context, n_best=20, max_answer_length=e1 - s1 + 1) == answer  # too long
    # n_best = 1 keeps only each window's top start (a question token here) and end: nothing valid
    assert best_answer(windows, context, n_best=1, max_answer_length=30) == ""


def test_dataset_layout_round_trips_through_the_official_scorer(tmp_path):
    examples = load_split(dev_cfg(), "validation[:5]")
    (tmp_path / "d.json").write_text(json.dumps({"version": "1.1", "data": as_squad_dataset(examples)}))
    preds = {ex["id"]: ex["answers"]["text"][0] for ex in examples[:4]}
    (tmp_path / "p.json").write_text(json.dumps(preds))
    assert score_files(tmp_path / "d.json", tmp_path / "p.json", warn=False)["scores"] == {
        "exact_match": 80.0,
        "f1": 80.0,
    }


def test_head_modules_per_head_type():
    for model in ("deberta_v3_base", "tiny_deberta", "gpt2", "tiny_gpt2"):
        model_cfg = OmegaConf.to_container(make_cfg(f"model={model}", "task=squad").model, resolve=True)
        assert heads_for(model_cfg, Squad.head.fget(None)) == ["qa_outputs"]
    gpt2 = OmegaConf.to_container(make_cfg("model=gpt2").model, resolve=True)
    assert heads_for(gpt2, {"type": "causal_lm"}) == []
    assert heads_for(gpt2, {"type": "sequence_classification"}) == ["score"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny_deberta", "tiny_gpt2"])
def test_squad_run_learns_and_saves_rescorable_predictions(model, tmp_path):
    """Memorising 12 questions (train split = eval split): F1 from near chance to near 100."""
    cfg = make_cfg(
        "task=squad",
        f"model={model}",
        "method=ft",
        f"task.data_dir={SQUAD_DIR}",
        f"task.files.validation={DEV}",
        'task.train_split="validation[100:112]"',
        'task.eval_splits=["validation[100:112]"]',
        "task.max_length=128",
        "task.doc_stride=32",
        "train.epochs=40",
        "train.batch_size=8",
        "train.lr=5e-3",
        "train.eval_epochs=[1]",
        results_dir=tmp_path,
    )
    record = run(cfg)
    first = record["metrics"]["history"][0]["eval"]["validation[100:112]"]
    last = record["metrics"]["final"]["validation[100:112]"]
    assert last["f1"] > first["f1"] + 50 and last["f1"] > 75
    out = Path(record["artifacts"]) / "outputs" / "epoch_40" / "validation[100:112]"
    rescored = score_files(out / "dataset.json", out / "predictions.json", warn=False)["scores"]
    assert rescored == {"exact_match": last["exact_match"], "f1": last["f1"]}
    assert len(json.loads((out / "predictions.json").read_text())) == 12


def test_window_longer_than_the_model_and_bad_caps_name_the_fix(gpt2_tokenizer):
    task = Squad(dev_cfg(train_split="validation[:2]", eval_splits=["validation[2:4]"]))
    small = SimpleNamespace(config=SimpleNamespace(n_positions=256))
    with pytest.raises(ConfigError, match=r"task.max_length=384 exceeds the model's 256 positions"):
        task.build(small, gpt2_tokenizer)
    with pytest.raises(ConfigError, match="max_eval_samples must be an integer >= 1"):
        dev_cfg(max_eval_samples=0)
    with pytest.raises(ConfigError, match="eval_splits is empty"):
        dev_cfg(eval_splits=[])


# ------------------------------------------------------------------ faulty files (issue 26 #4, #5)


def _dev_slice(tmp_path, edit=None) -> Path:
    """The first 3 paragraphs of the dev file, one JSON key a line (so lines mean something)."""
    data = json.loads((SQUAD_DIR / DEV).read_text(encoding="utf-8"))
    article = data["data"][0]
    data["data"] = [{**article, "paragraphs": article["paragraphs"][:3]}]
    if edit:
        edit(data["data"][0]["paragraphs"])
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def _task_on(path: Path, eval_split="validation"):
    return Squad(Config(data_dir=str(path.parent), files={"validation": path.name},
                        train_split="validation", eval_splits=[eval_split]))  # fmt: skip


def test_a_latin1_byte_names_the_file_line_and_fix(tmp_path):
    path = _dev_slice(tmp_path)
    raw = path.read_bytes()
    at = raw.index(b"Broncos")  # é in latin-1, as an editor saving in the wrong encoding writes it
    path.write_bytes(raw[:at] + b"\xe9" + raw[at:])
    line = raw[:at].count(b"\n") + 1
    with pytest.raises(DataError, match=rf"dev.json:{line}: byte 0xe9 at offset {at} is not UTF-8.*re-save"):
        _task_on(path)


def test_questions_without_answers_or_twice_are_refused_before_training(tmp_path):
    def no_answers(paragraphs):
        paragraphs[1]["qas"][2]["answers"] = []

    path = _dev_slice(tmp_path, no_answers)
    qid = json.loads(path.read_text())["data"][0]["paragraphs"][1]["qas"][2]["id"]
    with pytest.raises(DataError, match=rf"dev.json: question '{qid}' has no answers.*remove it"):
        _task_on(path)

    def twice(paragraphs):
        paragraphs[2]["qas"].append(paragraphs[0]["qas"][0])

    with pytest.raises(DataError, match="occurs twice"):
        _task_on(_dev_slice(tmp_path, twice))


def test_an_empty_file_or_slice_names_the_file(tmp_path):
    path = _dev_slice(tmp_path)
    with pytest.raises(
        DataError, match=r"dev.json: split 'validation\[5:5\]' selects none of its \d+ questions"
    ):
        _task_on(path, "validation[5:5]")
    path.write_text(json.dumps({"version": "1.1", "data": []}))
    with pytest.raises(DataError, match="dev.json holds no questions"):
        _task_on(path)
    path.write_text('{"version": "1.1", "data": [')
    with pytest.raises(DataError, match="dev.json: line 1: invalid JSON"):
        _task_on(path)
