"""Training-set sizes of the paper tasks, known without reading any data file.

Used by `make check-experiments` and `plan=true` (runners/check_experiments.py) to compute a run's
real optimizer-step count before anything is downloaded: the same formula as runners/train.py over
`train_examples(task)` examples. Sizes are those of the official train splits (what a full paper run
reads); a `train_split` slice and `max_train_samples` are applied as the task modules apply them.
"""

from __future__ import annotations

import math
import re

# GLUE train sets (Wang et al. 2019; identical to the TSVs of download_glue_data.py and HF `glue`;
# ../shared/data/MANIFEST.md counts the ones we hold: CoLA, SST-2, MRPC, STS-B, RTE, WNLI).
GLUE_TRAIN = {
    "cola": 8551,
    "sst2": 67349,
    "mrpc": 3668,
    "stsb": 5749,
    "qqp": 363846,
    "mnli": 392702,
    "qnli": 104743,
    "rte": 2490,
    "wnli": 635,
}
# SQuAD v1.1 train: 87,599 questions (Rajpurkar et al. 2016; TFDS / HF `squad`). A run trains on
# windows of `max_length` tokens sharing `doc_stride` (tasks/squad.py), a few more than questions.
# APPROXIMATION: windows per question at 384 / 128 = 10,782 / 10,570 = 1.020, measured on the dev set
# (../shared/data/squad/dev-v1.1.reconstructed.json) with the GPT-2 BPE; the train file is not held
# offline, so its own ratio (and DeBERTa-v3's tokenizer) is not measured. Off by ~1-2 % at most.
SQUAD_QUESTIONS = 87599
SQUAD_WINDOWS_PER_QUESTION = {(384, 128): 10782 / 10570}
# E2E train: 42,061 (MR, reference) pairs (Novikova et al. 2017); microsoft/LoRA's train.txt has one
# line per pair, the same count (tasks/e2e.py trains on one pair per line).
E2E_TRAIN = 42061
# DART v1.1.1 train: 62,659 annotations over 30,526 triple sets (Nan et al. 2021; TFDS `dart`
# train 62,659); tasks/dart.py and microsoft/LoRA's format_converting_dart.py make one pair each.
DART_TRAIN = 62659
# Vision train splits: CIFAR-100 50,000 (Krizhevsky 2009), Food-101 75,750 (Bossard et al. 2014).
VISION_TRAIN = {"cifar100": 50000, "food101": 75750}
VISION_CLASSES = {
    ("cifar100", "fine_label"): 100,
    ("cifar100", "coarse_label"): 20,
    ("food101", "label"): 101,
}

SPLIT = re.compile(r"^(\w+)(?:\[(\d*):(\d*)\])?$")


class UnknownSize(LookupError):
    """No known size for this task / split (e.g. a validation split used for training)."""


def _base(task: dict) -> int:
    name = task.get("name")
    if name == "synthetic_fnn":
        return int(task["n_train"])  # generated: the config is the size
    split = SPLIT.match(str(task.get("train_split", "train")))
    if split is None or split.group(1) != "train":
        raise UnknownSize(f"task {name}: train_split {task.get('train_split')!r} has no known size")
    if name == "glue":
        return GLUE_TRAIN[task["subset"]]
    if name == "squad":
        key = (int(task.get("max_length", 384)), int(task.get("doc_stride", 128)))
        ratio = SQUAD_WINDOWS_PER_QUESTION.get(key)
        if ratio is None:
            raise UnknownSize(f"squad windows at max_length/doc_stride {key} not measured (tasks/sizes.py)")
        return SQUAD_QUESTIONS  # windows are added after the slice / max_train_samples (questions)
    if name == "e2e":
        return E2E_TRAIN
    if name == "dart":
        return DART_TRAIN
    if name == "vision":
        return VISION_TRAIN[task["dataset"]]
    raise UnknownSize(f"task {name!r} has no known train-set size (tasks/sizes.py)")


def train_examples(task: dict) -> int:
    """Examples one epoch of this (resolved) task config trains on: the split's size, its
    `[a:b]` slice, then `max_train_samples` (SQuAD: questions, then windows per question)."""
    n = _base(task)
    if task.get("name") != "synthetic_fnn":
        lo, hi = SPLIT.match(str(task.get("train_split", "train"))).group(2, 3)
        n = len(range(n)[slice(int(lo) if lo else None, int(hi) if hi else None)])
    cap = task.get("max_train_samples")
    if cap is not None:
        n = min(n, int(cap))
    if task.get("name") == "squad":
        key = (int(task.get("max_length", 384)), int(task.get("doc_stride", 128)))
        n = round(n * SQUAD_WINDOWS_PER_QUESTION[key])
    return n


def planned_steps(n: int, batch_size: int, grad_accum: int, epochs: int, max_steps: int | None) -> dict:
    """runners/train.py's formula: ⌈n / batch⌉ batches, ⌈batches / grad_accum⌉ optimizer steps per
    epoch, total = max_steps or epochs · steps_per_epoch; epochs actually run = ⌈total / per epoch⌉."""
    steps_per_epoch = math.ceil(math.ceil(n / batch_size) / grad_accum)
    total = max_steps or epochs * steps_per_epoch
    return {
        "total_steps": total,
        "steps_per_epoch": steps_per_epoch,
        "epochs": math.ceil(total / steps_per_epoch),
    }
