"""SQuAD v1.1 EM / F1: the official test vector and hand-computed cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.metrics import squad
from tasks.metrics._io import MetricInputError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_official_vector(capsys):
    result = squad.score_files(
        DATA / "squad" / "dev-v1.1.reconstructed.json",
        DATA / "metrics" / "squad_example" / "predictions_logistic_baseline.json",
    )
    # evaluate-v1.1.py on the same files.
    assert result["scores"]["exact_match"] == pytest.approx(40.14191106906339, abs=1e-9)
    assert result["scores"]["f1"] == pytest.approx(50.98153647324461, abs=1e-9)
    err = capsys.readouterr().err
    assert err.count("will receive score 0.") == 10570 - result["settings"]["questions_answered"]


def test_normalize_answer():
    assert squad.normalize_answer("The  Cat's hat!") == "cats hat"
    assert squad.normalize_answer("an apple, a pear and THE plum.") == "apple pear and plum"
    assert squad.normalize_answer("theory of Anthem") == "theory of anthem"  # only whole words
    assert squad.normalize_answer("...!?") == ""
    assert squad.normalize_answer("Café «déjà» vu") == "café «déjà» vu"  # « » not in string.punctuation


def test_f1_and_em_by_hand():
    # "the big red dog" vs "a red dog barked": tokens [big, red, dog] vs [red, dog, barked],
    # overlap 2 -> P = 2/3, R = 2/3, F1 = 2/3.
    assert squad.f1_score("the big red dog", "a red dog barked") == pytest.approx(2 / 3)
    # Repeated tokens count with multiplicity: [a1 a1 b] vs [a1 b b] -> overlap 2, F1 2/3.
    assert squad.f1_score("a1 a1 b", "a1 b b") == pytest.approx(2 / 3)
    assert squad.f1_score("", "dog") == 0
    assert squad.f1_score("!!!", "!!!") == 0  # both normalise to nothing: no shared token
    assert squad.exact_match_score("!!!", "...") is True
    assert squad.exact_match_score("The Dog.", "dog") is True


def test_squad_scores_by_hand(capsys):
    data = [
        {
            "paragraphs": [
                {
                    "context": "x",
                    "qas": [
                        {"id": "q1", "answers": [{"text": "Denver Broncos"}, {"text": "Broncos"}]},
                        {"id": "q2", "answers": [{"text": "Santa Clara, California"}]},
                        {"id": "q3", "answers": [{"text": "gold"}]},
                    ],
                }
            ]
        }
    ]
    preds = {"q1": "the Broncos", "q2": "Santa Clara", "extra": "ignored"}
    scores = squad.squad_scores(data, preds)
    # q1: EM 1 (vs "Broncos"), F1 1; q2: EM 0, F1 P=1, R=2/3 -> 0.8; q3 unanswered: 0.
    assert scores["exact_match"] == pytest.approx(100 * 1 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 0.8) / 3)
    assert capsys.readouterr().err == "Unanswered question q3 will receive score 0.\n"


def test_bad_inputs(tmp_path):
    ds = tmp_path / "dev.json"
    ds.write_text(json.dumps({"version": "1.1", "data": []}), encoding="utf-8")
    preds = tmp_path / "preds.json"
    preds.write_text('{"q1": "a",\n "q2": }', encoding="utf-8")
    with pytest.raises(MetricInputError, match=r"preds.json: line 2: invalid JSON"):
        squad.score_files(ds, preds)
    preds.write_text('{"q1": ["a"]}', encoding="utf-8")
    with pytest.raises(MetricInputError, match=r"prediction for 'q1' is not a string"):
        squad.score_files(ds, preds)
    preds.write_text("{}", encoding="utf-8")
    with pytest.raises(MetricInputError, match="no questions"):
        squad.score_files(ds, preds)
