"""GLUE metrics with scikit-learn / scipy (no hub-loaded metric).

CoLA: Matthews corr.; STS-B: Pearson and Spearman; MRPC, QQP: accuracy and F1 of the positive
class; every other task: accuracy. MNLI's matched / mismatched dev sets are scored separately by
the caller (one call per split).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
MAIN_METRIC = {"cola": "mcc", "stsb": "pearson"} | {
    t: "acc" for t in ("sst2", "mrpc", "qqp", "mnli", "qnli", "rte", "wnli")
}


def glue_metrics(task: str, preds, labels) -> dict[str, float]:
    """Scores `preds` (class ids, or floats for STS-B) against `labels`; values are plain floats."""
    if task not in MAIN_METRIC:
        raise ValueError(f"unknown GLUE task {task!r}; valid: {', '.join(TASKS)}")
    preds, labels = np.asarray(preds), np.asarray(labels)
    if preds.shape != labels.shape or preds.size == 0:
        raise ValueError(
            f"need equally many predictions and labels (>0), got {preds.shape} and {labels.shape}"
        )
    if task == "stsb":
        if preds.size < 2:  # scipy's own error names no task; the Task refuses such splits before training
            raise ValueError(f"STS-B: Pearson / Spearman need >= 2 examples, got {preds.size}")
        return {
            "pearson": float(pearsonr(preds, labels)[0]),
            "spearman": float(spearmanr(preds, labels)[0]),
        }
    out = {"acc": float(accuracy_score(labels, preds))}
    if task == "cola":
        out["mcc"] = float(matthews_corrcoef(labels, preds))
    if task in ("mrpc", "qqp"):
        out["f1"] = float(f1_score(labels, preds, pos_label=1, zero_division=0))
    return out
