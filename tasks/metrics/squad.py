"""SQuAD v1.1 exact match and F1, as the official `evaluate-v1.1.py` computes them (own code).

Answers are normalised by lower-casing, removing `string.punctuation` characters, removing the
words a/an/the and collapsing whitespace; F1 is the token-overlap F1 (multiset intersection);
each question takes its best score over the gold answers; a question without a prediction
scores 0 and is reported on stderr as "Unanswered question <id> will receive score 0."; both
totals are x100 / number of questions. Predictions for ids not in the dataset are ignored, as
the official script ignores them. A question without answers (a v2.0 unanswerable one) is refused
with its id (MetricInputError): the official script takes max() over its answers and crashes on it
(ValueError) when it has a prediction, and scores it 0 when it has none; here it is refused in both
cases, the only deviation: such a file is not v1.1 data.
"""

from __future__ import annotations

import json
import re
import string
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from tasks.metrics import _io

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop articles, collapse whitespace (official order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, ground_truth: str) -> bool:
    """True when both normalise to the same string."""
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token F1 of the normalised strings; 0 when no token is shared (also when either is empty)."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(dataset: list, predictions: Mapping[str, str], *, warn: bool = True) -> dict[str, float]:
    """EM and F1 (0-100) of `predictions` ({question id: answer text}) on a SQuAD v1.1 `data` list.

    Args:
        dataset: the "data" list of a SQuAD v1.1 JSON file (articles > paragraphs > qas).
        predictions: answer text per question id.
        warn: print the official "Unanswered question ..." line to stderr for each missing id.

    Returns:
        {"exact_match": float, "f1": float}, as evaluate-v1.1.py prints them.
    """
    exact_match = f1 = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if not qa["answers"]:  # max() below would fail; say which question instead
                    raise _io.MetricInputError(
                        f"question {qa['id']!r} has no answers; SQuAD v1.1 scores every question against "
                        f"its answers (v2.0 unanswerable questions are not supported): remove it"
                    )
                if qa["id"] not in predictions:
                    if warn:
                        print(f"Unanswered question {qa['id']} will receive score 0.", file=sys.stderr)
                    continue
                golds = [answer["text"] for answer in qa["answers"]]
                prediction = predictions[qa["id"]]
                exact_match += max(exact_match_score(prediction, g) for g in golds)
                f1 += max(f1_score(prediction, g) for g in golds)
    if total == 0:
        raise _io.MetricInputError("the dataset holds no questions")
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


def _load_json(path: str | Path):
    text = _io.read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _io.MetricInputError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None


def score_files(dataset_path: str | Path, predictions_path: str | Path, *, warn: bool = True) -> dict:
    """Scores a predictions JSON ({id: text}) against a SQuAD v1.1 dataset JSON, like the script.

    As the official script, a dataset whose "version" is not "1.1" is still scored, with a
    message on stderr.
    """
    dataset = _load_json(dataset_path)
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise _io.MetricInputError(f'{dataset_path}: not a SQuAD dataset (no top-level "data" list)')
    if dataset.get("version") != "1.1":
        print(f"Evaluation expects v-1.1, but got dataset with v-{dataset.get('version')}", file=sys.stderr)
    predictions = _load_json(predictions_path)
    if not isinstance(predictions, dict):
        raise _io.MetricInputError(f"{predictions_path}: expected a JSON object {{question id: answer text}}")
    for qid, answer in predictions.items():
        if not isinstance(answer, str):
            raise _io.MetricInputError(f"{predictions_path}: prediction for {qid!r} is not a string")
    try:
        scores = squad_scores(dataset["data"], predictions, warn=warn)
    except (KeyError, TypeError, AttributeError) as exc:
        raise _io.MetricInputError(f"{dataset_path}: malformed SQuAD structure ({exc!r})") from None
    except _io.MetricInputError as exc:
        raise _io.MetricInputError(f"{dataset_path}: {exc}") from None
    answered = sum(
        1 for a in dataset["data"] for p in a["paragraphs"] for q in p["qas"] if q["id"] in predictions
    )
    settings = {
        "script": "evaluate-v1.1.py (SQuAD v1.1)",
        "dataset_version": dataset.get("version"),
        "questions_answered": answered,
    }
    return {"metric": "squad", "scores": scores, "settings": settings, "unavailable": {}}
