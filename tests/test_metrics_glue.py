"""GLUE metrics (tasks.metrics.glue) against hand-computed values."""

from __future__ import annotations

import math

import pytest

from tasks.metrics.glue import glue_metrics


def test_accuracy_and_f1_mrpc():
    preds = [1, 1, 0, 0, 1, 0]
    labels = [1, 0, 0, 1, 1, 0]
    # TP 2, FP 1, FN 1, TN 2: acc 4/6, precision 2/3, recall 2/3, F1 2/3.
    out = glue_metrics("mrpc", preds, labels)
    assert out == {"acc": pytest.approx(4 / 6), "f1": pytest.approx(2 / 3)}
    assert glue_metrics("rte", preds, labels) == {"acc": pytest.approx(4 / 6)}


def test_matthews_cola():
    preds = [1, 1, 1, 0, 0, 1, 0, 1]
    labels = [1, 1, 0, 0, 1, 1, 0, 0]
    # TP 3, FP 2, TN 2, FN 1: MCC = (3*2 - 2*1) / sqrt(5 * 4 * 4 * 3).
    out = glue_metrics("cola", preds, labels)
    assert out["mcc"] == pytest.approx((3 * 2 - 2 * 1) / math.sqrt(5 * 4 * 4 * 3))
    assert out["acc"] == pytest.approx(5 / 8)


def test_stsb_pearson_spearman():
    preds = [1.0, 2.0, 3.0, 4.0]
    labels = [1.0, 3.0, 2.0, 5.0]
    # Pearson: deviations (-1.5,-.5,.5,1.5) and (-1.75,.25,-.75,2.25): cov 5.5,
    # sums of squares 5 and 8.75 -> 5.5 / sqrt(43.75). Spearman: ranks (1,2,3,4) vs (1,3,2,4),
    # d^2 = 0+1+1+0 -> 1 - 6*2 / (4*15) = 0.8.
    out = glue_metrics("stsb", preds, labels)
    assert out["pearson"] == pytest.approx(5.5 / math.sqrt(43.75))
    assert out["spearman"] == pytest.approx(0.8)


def test_bad_input():
    with pytest.raises(ValueError, match="unknown GLUE task"):
        glue_metrics("mnli-mm", [0], [0])
    with pytest.raises(ValueError):
        glue_metrics("sst2", [0, 1], [0])
