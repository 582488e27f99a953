"""GLUE: TSV loading of every task in ../shared/data/glue, splits, metrics on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from tasks.base import DataError
from tasks.glue import TSV_DIRS, Config, Glue, load_split
from tasks.metrics.glue import glue_metrics

# rows per split in the original release (MANIFEST.md), and the label values they hold
PRESENT = {
    "cola": {"train": 8551, "validation": 1043},
    "sst2": {"train": 67349, "validation": 872},
    "mrpc": {"train": 3668, "validation": 408},
    "stsb": {"train": 5749, "validation": 1500},
    "qnli": {"validation": 5463},
    "rte": {"train": 2490, "validation": 277},
    "wnli": {"train": 635, "validation": 71},
}


@pytest.mark.parametrize("subset", sorted(PRESENT))
def test_every_present_glue_tsv_loads(subset, glue_dir):
    cfg = Config(subset=subset, data_dir=str(glue_dir))
    for split, n in PRESENT[subset].items():
        rows = load_split(cfg, split)
        assert len(rows) == n
        pair = subset not in ("cola", "sst2")
        assert all(
            len(r["text"]) == (2 if pair else 1) and all(isinstance(t, str) for t in r["text"]) for r in rows
        )
        labels = {r["label"] for r in rows}
        if subset == "stsb":
            assert min(labels) >= 0 and max(labels) <= 5 and len(labels) > 10
        else:
            assert labels == {0, 1}


def test_tsv_fields_and_label_encoding(glue_dir):
    cola = load_split(Config(subset="cola", data_dir=str(glue_dir)), "validation")
    assert cola[0]["text"][0].startswith("The sailors rode the breeze clear of the rocks")
    assert cola[0]["label"] == 1
    rte = load_split(Config(subset="rte", data_dir=str(glue_dir)), "validation")
    assert rte[0]["label"] == 1  # first RTE dev pair is not_entailment -> 1, as on the Hub
    mrpc = load_split(Config(subset="mrpc", data_dir=str(glue_dir)), "train")
    assert mrpc[0]["text"][0].startswith("Amrozi accused his brother")  # header had a BOM


def test_split_slices(glue_dir):
    cfg = Config(subset="wnli", data_dir=str(glue_dir))
    full = load_split(cfg, "validation")
    assert load_split(cfg, "validation[10:20]") == full[10:20]
    assert load_split(cfg, "validation[:5]") == full[:5]


def test_mnli_has_two_eval_splits_and_missing_files_name_the_fix(glue_dir):
    cfg = Config(
        subset="mnli", data_dir=str(glue_dir), eval_splits=["validation_matched", "validation_mismatched"]
    )
    with pytest.raises(DataError, match=r"missing GLUE file .*MNLI/train.tsv; set task.data_dir"):
        Glue(cfg)
    with pytest.raises(DataError, match=r"missing GLUE file .*MNLI/dev_mismatched.tsv"):
        load_split(cfg, "validation_mismatched")


def test_task_object_trains_on_a_slice_of_another_split(glue_dir):
    task = Glue(
        Config(
            subset="qnli",
            data_dir=str(glue_dir),
            train_split="validation[:100]",
            eval_splits=["validation[100:150]"],
        )
    )
    assert len(task.raw["train"]) == 100 and len(task.raw["validation[100:150]"]) == 50
    assert task.head == {
        "type": "sequence_classification",
        "num_labels": 2,
        "problem_type": "single_label_classification",
    }


def test_all_nine_tasks_have_a_tsv_mapping_and_config():
    from runners.config import options

    assert set(TSV_DIRS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}
    assert {f"glue/{t}" for t in TSV_DIRS} <= set(options("task"))


# --- metrics on hand-computed cases ---------------------------------------------------------


def test_cola_mcc_by_hand():
    # TP=1 FP=1 TN=2 FN=0: (1·2 − 1·0)/√((1+1)(1+0)(2+1)(2+0)) = 2/√12
    m = glue_metrics("cola", [1, 1, 0, 0], [1, 0, 0, 0])
    assert m["mcc"] == pytest.approx(2 / math.sqrt(12))
    assert m["acc"] == pytest.approx(0.75)


def test_mrpc_and_qqp_f1_of_positive_class_by_hand():
    # precision 1/2, recall 1 -> F1 2/3
    for task in ("mrpc", "qqp"):
        m = glue_metrics(task, [1, 1, 0, 0], [1, 0, 0, 0])
        assert m["f1"] == pytest.approx(2 / 3) and m["acc"] == pytest.approx(0.75)


def test_stsb_pearson_spearman_by_hand():
    # deviations p: (−1, 0, 1), y: (−4/3, −1/3, 5/3): r = 3 / √(2 · 42/9); ranks agree: ρ = 1
    m = glue_metrics("stsb", [1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert m["pearson"] == pytest.approx(3 / math.sqrt(2 * 42 / 9))
    assert m["spearman"] == pytest.approx(1.0)


@pytest.mark.parametrize("task", ["sst2", "mnli", "qnli", "rte", "wnli"])
def test_accuracy_tasks(task):
    assert glue_metrics(task, [0, 2, 1, 1, 0], [0, 2, 0, 1, 1]) == {"acc": pytest.approx(3 / 5)}


def test_metric_input_errors():
    with pytest.raises(ValueError, match="unknown GLUE task"):
        glue_metrics("squad", [1], [1])
    with pytest.raises(ValueError, match="equally many"):
        glue_metrics("sst2", [1, 0], [1])


@pytest.mark.parametrize("subset", ["cola", "stsb", "mrpc"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_glue_collate_is_transformers_datacollatorwithpadding(subset, side, glue_dir):
    """The hand-written pad collate (6x faster) gives DataCollatorWithPadding's batch: keys, values,
    dtypes (float labels for STS-B), on real dev rows with a WordPiece tokenizer and with GPT-2's BPE."""
    import torch
    from transformers import DataCollatorWithPadding

    from models.hf import build_tokenizer, train_wordpiece
    from tests.conftest import SHARED

    split = "validation[:64]"
    task = Glue(
        Config(subset=subset, data_dir=str(glue_dir), train_split=split, eval_splits=["validation[:4]"])
    )
    texts = [t for row in task.raw["train"] for t in row["text"]]
    tokenizers = [
        train_wordpiece(texts, 400),
        build_tokenizer({"tokenizer": str(SHARED / "tokenizers" / "gpt2")}, texts),
    ]
    for tok in tokenizers:
        tok.padding_side = side
        data = task.build(None, tok)
        ref = DataCollatorWithPadding(tok)
        for start in range(0, 64, 16):
            items = data.train[start : start + 16]
            got, want = data.collate(items), ref(items)
            assert set(got) == set(want) and want["input_ids"].shape[1] == max(
                len(i["input_ids"]) for i in items
            )
            for key in want:
                assert got[key].dtype == want[key].dtype, key
                assert torch.equal(got[key], want[key]), key
        assert data.collate(items)["labels"].dtype == (torch.float32 if subset == "stsb" else torch.int64)


def test_stsb_eval_split_that_no_correlation_can_score_is_refused_before_training(glue_dir):
    """Issue 26 #5: one STS-B eval example crashed scipy after training; constant scores give NaN."""

    def task(split, **kw):
        return Glue(Config(subset="stsb", data_dir=str(glue_dir), train_split="validation[:8]",
                           eval_splits=[split], **kw))  # fmt: skip

    with pytest.raises(
        DataError, match=r"STS-B/dev.tsv: eval split 'validation\[:1\]' holds 1 example.*widen"
    ):
        task("validation[:1]")
    with pytest.raises(DataError, match="holds 1 example"):
        task("validation", max_eval_samples=1)
    assert len(task("validation[:2]").raw["validation[:2]"]) == 2
    with pytest.raises(ValueError, match="need >= 2 examples"):
        glue_metrics("stsb", [1.0], [2.0])
    # CoLA's MCC is defined (0) on one class: not refused, but said in the record's task_notes
    cola = Glue(Config(subset="cola", data_dir=str(glue_dir), train_split="validation[:8]",
                       eval_splits=["validation[:4]"]))  # fmt: skip
    assert glue_metrics("cola", [1, 0, 1, 1], [1, 1, 1, 1])["mcc"] == 0.0
    assert "one class" in cola.notes()["mcc validation[:4]"]
