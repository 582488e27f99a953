"""GLUE (Wang et al., 2019): nine sentence(-pair) tasks, classification or regression (STS-B).

Data: `datasets.load_dataset("glue", subset)` by default; with `task.data_dir` the original GLUE
TSV files (as written by `download_glue_data.py`) are read instead: `train.tsv`, `dev.tsv`
(MNLI: `dev_matched.tsv`, `dev_mismatched.tsv`). Splits use the Hub's names (train, validation,
validation_matched, validation_mismatched) and accept slices: `validation[:256]`.
Labels follow the Hub's `glue` encoding. Metrics: tasks/metrics/glue.py.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from core import ConfigError
from tasks.base import DataError, Task, TaskData
from tasks.batching import encoder_pads, pad_collate
from tasks.metrics.glue import MAIN_METRIC, TASKS, glue_metrics

csv.field_size_limit(sys.maxsize)

NLI3 = {"entailment": 0, "neutral": 1, "contradiction": 2}
NLI2 = {"entailment": 0, "not_entailment": 1}


@dataclass(frozen=True)
class Spec:
    """Where a task's fields live: Hub column names, TSV columns (header names, or indices for
    header-less CoLA) and the TSV label encoding (None: the label is already the Hub's int / float)."""

    hub: tuple[str, ...]  # text columns on the Hub
    tsv: tuple[str | int, ...]  # text columns in the TSV
    tsv_label: str | int
    label_map: dict | None = None
    num_labels: int = 2
    header: bool = True
    dev_files: dict = field(default_factory=lambda: {"validation": "dev.tsv"})


SPECS = {
    "cola": Spec(("sentence",), (3,), 1, header=False),
    "sst2": Spec(("sentence",), ("sentence",), "label"),
    "mrpc": Spec(("sentence1", "sentence2"), ("#1 String", "#2 String"), "Quality"),
    "stsb": Spec(("sentence1", "sentence2"), ("sentence1", "sentence2"), "score", num_labels=1),
    "qqp": Spec(("question1", "question2"), ("question1", "question2"), "is_duplicate"),
    "mnli": Spec(
        ("premise", "hypothesis"),
        ("sentence1", "sentence2"),
        "gold_label",
        NLI3,
        3,
        dev_files={"validation_matched": "dev_matched.tsv", "validation_mismatched": "dev_mismatched.tsv"},
    ),
    "qnli": Spec(("question", "sentence"), ("question", "sentence"), "label", NLI2),
    "rte": Spec(("sentence1", "sentence2"), ("sentence1", "sentence2"), "label", NLI2),
    "wnli": Spec(("sentence1", "sentence2"), ("sentence1", "sentence2"), "label"),
}
TSV_DIRS = {
    "cola": "CoLA",
    "sst2": "SST-2",
    "mrpc": "MRPC",
    "stsb": "STS-B",
    "qqp": "QQP",
    "mnli": "MNLI",
    "qnli": "QNLI",
    "rte": "RTE",
    "wnli": "WNLI",
}
SPLIT = re.compile(r"^(\w+)(?:\[(\d*):(\d*)\])?$")


@dataclass
class Config:
    name: str = "glue"
    subset: str = "cola"
    data_dir: str | None = None
    train_split: str = "train"
    eval_splits: list[str] = field(default_factory=lambda: ["validation"])
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_length: int = 128

    def __post_init__(self):
        if self.subset not in SPECS:
            raise ConfigError(f"unknown GLUE subset {self.subset!r}; valid: {', '.join(TASKS)}")
        for key in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"task.{key} must be an integer >= 1 or null (all rows), got {value!r}")
        if self.max_length < 8:
            raise ConfigError(f"task.max_length must be >= 8 tokens, got {self.max_length}")
        if not self.eval_splits:
            raise ConfigError("task.eval_splits is empty; give at least one split, e.g. [validation]")
        for split in [self.train_split, *self.eval_splits]:
            if not SPLIT.match(split):
                raise ConfigError(
                    f"bad split {split!r}; use a name with an optional slice, e.g. validation[:256]"
                )


def parse_split(split: str) -> tuple[str, slice]:
    name, lo, hi = SPLIT.match(split).groups()
    return name, slice(int(lo) if lo else None, int(hi) if hi else None)


def tsv_path(data_dir: str, subset: str, split: str) -> Path:
    spec = SPECS[subset]
    files = {"train": "train.tsv", "test": "test.tsv", **spec.dev_files}
    if split not in files:
        raise ConfigError(f"GLUE {subset} has no split {split!r}; valid: {', '.join(files)}")
    return Path(data_dir) / TSV_DIRS[subset] / files[split]


def read_tsv(path: Path, subset: str) -> list[dict]:
    """Rows of an original GLUE TSV as {"text": (a[, b]), "label": int | float}."""
    spec = SPECS[subset]
    raw_bytes = path.read_bytes()
    try:
        text = raw_bytes.decode("utf-8-sig")  # MRPC files start with a BOM
    except UnicodeDecodeError as e:
        line = raw_bytes[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text ({e.reason}); re-save the file as UTF-8") from e
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise DataError(f"{path}:{line}: NUL byte: a binary file, not a GLUE TSV")
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE))
    if len(rows) <= int(spec.header):
        raise DataError(f"{path}: no data rows; is the file complete?")
    if spec.header:
        header, rows = rows[0], rows[1:]
        missing = [c for c in (*spec.tsv, spec.tsv_label) if c not in header]
        if missing:
            raise DataError(
                f"{path}: no column {missing[0]!r}; is this the {subset} {path.name} of the original GLUE release?"
            )
        cols = [header.index(c) for c in spec.tsv]
        label_col = header.index(spec.tsv_label)
    else:
        cols, label_col = list(spec.tsv), spec.tsv_label
    out = []
    for i, row in enumerate(rows, start=2 if spec.header else 1):
        if len(row) <= max(*cols, label_col):
            raise DataError(
                f"{path}:{i}: expected at least {max(*cols, label_col) + 1} tab-separated fields, got {len(row)}"
            )
        label = parse_label(row[label_col], spec, f"{path}:{i}")
        out.append({"text": tuple(row[c] for c in cols), "label": label})
    return out


def parse_label(raw: str, spec: Spec, where: str) -> int | float:
    """A TSV label in the Hub's encoding; a bad one names the file and line."""
    if spec.label_map:
        if raw not in spec.label_map:
            raise DataError(f"{where}: label {raw!r} is not one of {', '.join(spec.label_map)}")
        return spec.label_map[raw]
    try:
        value = float(raw) if spec.num_labels == 1 else int(raw)
    except ValueError:
        kind = "a number" if spec.num_labels == 1 else "an integer"
        raise DataError(f"{where}: label {raw!r} is not {kind}") from None
    if spec.num_labels > 1 and not 0 <= value < spec.num_labels:
        raise DataError(f"{where}: label {value} is outside 0..{spec.num_labels - 1}")
    return value


def load_split(cfg: Config, split: str) -> list[dict]:
    name, part = parse_split(split)
    if cfg.data_dir:
        path = tsv_path(cfg.data_dir, cfg.subset, name)
        if not path.is_file():
            raise DataError(
                f"missing GLUE file {path}; set task.data_dir to the folder holding {TSV_DIRS[cfg.subset]}/ "
                f"or task.data_dir=null to use datasets.load_dataset"
            )
        return read_tsv(path, cfg.subset)[part]
    import datasets  # the Hub path; heavy import, only when used

    try:
        ds = datasets.load_dataset("glue", cfg.subset, split=split)
    except Exception as e:  # offline machines land here
        raise DataError(
            f"could not load glue/{cfg.subset} {split} from the Hub ({type(e).__name__}); "
            f"set task.data_dir to a folder of GLUE TSVs"
        ) from e
    spec = SPECS[cfg.subset]
    return [{"text": tuple(r[c] for c in spec.hub), "label": r["label"]} for r in ds]


class Glue(Task):
    name, higher_is_better = "glue", True

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.spec = SPECS[cfg.subset]
        self.main_metric = MAIN_METRIC[cfg.subset]
        # load now: a missing file fails before any model is built
        self.raw = {"train": self._take(cfg.train_split, cfg.max_train_samples)}
        for split in cfg.eval_splits:
            self.raw[split] = self._take(split, cfg.max_eval_samples)
        self._check_metric_inputs()  # issue 26 #5: the metric must be defined before training starts

    def _check_metric_inputs(self) -> None:
        """STS-B's Pearson / Spearman need >= 2 examples with >= 2 distinct scores (scipy raises on one
        example and returns NaN on constant scores): refused here, before training. CoLA's MCC with one
        class is defined by sklearn as 0 whatever the predictions: not refused (tiny smoke slices hold
        one class), but said in the record's task_notes (`notes`)."""
        self.metric_notes = {}
        for split, rows in self.raw.items():
            labels = {r["label"] for r in rows}
            if split == "train" or len(labels) >= 2:
                continue
            if self.cfg.subset == "cola":
                self.metric_notes[f"mcc {split}"] = (
                    "one class in the labels: MCC undefined, sklearn reports 0"
                )
            if self.cfg.subset != "stsb":
                continue
            where = (
                tsv_path(self.cfg.data_dir, self.cfg.subset, parse_split(split)[0])
                if self.cfg.data_dir
                else f"glue/stsb {split}"
            )
            raise DataError(
                f"{where}: eval split {split!r} holds {len(rows)} example(s) with {len(labels)} distinct "
                f"score(s); Pearson / Spearman need >= 2 different scores: widen the slice or raise "
                f"task.max_eval_samples"
            )

    def notes(self) -> dict:
        return dict(self.metric_notes)

    @classmethod
    def label(cls, cfg) -> str:
        return f"glue/{cfg.subset}"

    @classmethod
    def data_source(cls, cfg) -> str:
        return f"files: {cfg.data_dir} (GLUE TSVs)" if cfg.data_dir else f"hub: glue/{cfg.subset}"

    @classmethod
    def data_files(cls, cfg) -> dict[str, Path]:
        if not cfg.data_dir:
            return {}
        paths = [
            tsv_path(cfg.data_dir, cfg.subset, parse_split(s)[0]) for s in [cfg.train_split, *cfg.eval_splits]
        ]
        return {f"{p.parent.name}/{p.name}": p for p in paths}

    def _take(self, split: str, n: int | None) -> list[dict]:
        rows = load_split(self.cfg, split)
        if not rows:
            raise DataError(f"GLUE {self.cfg.subset} split {split!r} has no rows; check the slice")
        return rows if n is None else rows[:n]

    @property
    def head(self) -> dict:
        regression = self.spec.num_labels == 1
        return {
            "type": "sequence_classification",
            "num_labels": self.spec.num_labels,
            "problem_type": "regression" if regression else "single_label_classification",
        }

    def texts(self):
        return (t for row in self.raw["train"] for t in row["text"])

    def build(self, model: nn.Module, tokenizer) -> TaskData:
        def encode(rows):
            columns = list(zip(*(r["text"] for r in rows)))
            enc = tokenizer(*columns, truncation=True, max_length=self.cfg.max_length)
            return [{**{k: v[i] for k, v in enc.items()}, "labels": r["label"]} for i, r in enumerate(rows)]

        evals = {split: encode(rows) for split, rows in self.raw.items() if split != "train"}
        # what transformers' DataCollatorWithPadding gives, 6x faster (its per-batch tokenizer.pad cost
        # 3.6 ms of a step's host time for 32 rows; tests/test_glue.py checks the two agree)
        pads = encoder_pads(tokenizer)
        collate = pad_collate(pads, side=getattr(tokenizer, "padding_side", "right"))
        return TaskData(encode(self.raw["train"]), evals, collate, pad_values=pads)

    def forward(self, model, batch):
        out = model(**batch)
        logits = out.logits.detach()
        preds = logits.squeeze(-1) if self.spec.num_labels == 1 else logits.argmax(-1)
        return out.loss, preds, batch["labels"]

    def metrics(self, preds, labels):
        return glue_metrics(self.cfg.subset, preds.numpy(), labels.numpy())


TASK = Glue
