"""What the runner sees of a task: data, a forward that returns loss and predictions, metrics.

A task module defines `Config` (a dataclass, validated in `__post_init__`) and a `Task` subclass;
it is registered by name in `tasks/__init__.py`. The runner calls, in order:

    task = Task(cfg)                    # validates config and input files: fails fast, cheaply
    task.head                           # what the model's output layer must be (or None)
    task.texts()                        # raw training text (only if the tokenizer is trained here)
    data = task.build(model, tokenizer) # datasets, collate
    data = task.on_method(model, method, data)         # after the method is applied (feature caches)
    task.info()                                        # -> record["task_info"] (e.g. cache used or not)
    loss, preds, labels = task.forward(model, batch)   # per batch, train and eval
    task.evaluate(model, loader, ctx)                  # per eval split: {"loss", metrics...}

Before any of that (without building the task), `data_record(TaskClass, cfg)` names where the data
comes from (`data_source(cfg)`) and the sha256 of every file it reads (`data_files(cfg)`): the
record's `data`. A successful record over other file contents is not taken as done (runners/train.py).

Generation or span-extraction tasks override `evaluate` (and write predictions to `ctx.out_dir`);
classification / regression tasks only define `forward` and `metrics`. `forward` may return
`preds=None` (no training metrics); the first dimension of `labels` counts the batch's examples.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core import progress  # tqdm, silent off a TTY (decoding loops: use it too)


class DataError(ValueError):
    """Missing or malformed input data; the message is one line and names the fix."""


@dataclass
class TaskData:
    train: list
    evals: dict[str, list]  # split name -> examples; the first selects the best epoch
    collate: Callable | None = None
    eval_collate: Callable | None = None  # None: `collate`
    # keys of `collate`'s (batch, length) tensors and their pad values: the runner may right-pad
    # them further to a multiple of train.pad_to_multiple_of (fewer shapes for compiled code)
    pad_values: dict[str, int] | None = None


@dataclass
class EvalContext:
    """What `Task.evaluate` gets besides the model and the loader."""

    to_device: Callable  # batch -> batch on the run's device
    autocast: Callable  # context-manager factory (bf16 autocast on CUDA)
    out_dir: Path  # this evaluation's folder for predictions / hypotheses (create it to write there)
    epoch: int
    split: str


class Task:
    name: str = ""
    main_metric: str = ""
    higher_is_better: bool = True
    version: int = 1  # bump on any change that moves numbers

    def __init__(self, cfg):
        self.cfg = cfg

    @classmethod
    def label(cls, cfg) -> str:
        """How records and tables name this task (e.g. glue/cola)."""
        return cfg.name

    @classmethod
    def data_source(cls, cfg) -> str | None:
        """Where this config's data comes from, e.g. `files: <dir> (GLUE TSVs)` or `hub: glue/cola`;
        None: the task does not say (the record's `data.source` is then null)."""
        return None

    @classmethod
    def data_files(cls, cfg) -> dict[str, Path]:
        """The files this config reads, by a name that does not depend on where they lie (e.g.
        `CoLA/train.tsv`); cheap, without reading them. Files that do not exist are left out of the
        fingerprint (the task itself reports them when it loads)."""
        return {}

    @property
    def head(self) -> dict | None:
        return None

    def texts(self) -> Iterable[str]:
        return []

    def build(self, model: nn.Module, tokenizer) -> TaskData:
        raise NotImplementedError

    def notes(self) -> dict:
        """Facts for the record besides numbers (strings allowed), e.g. metrics that could not be
        computed and why; read once after training, stored as the record's `task_notes` if non-empty."""
        return {}

    def on_method(self, model: nn.Module, method, data: TaskData) -> TaskData:
        """Called once the method is applied (e.g. to cache features of a frozen backbone)."""
        return data

    def info(self) -> dict:
        """Facts about how the task ran that the config alone does not say (e.g. whether a feature
        cache was used); JSON-serialisable, stored as the record's `task_info`."""
        return {}

    def forward(
        self, model: nn.Module, batch: dict
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        raise NotImplementedError

    def metrics(self, preds: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, ctx: EvalContext) -> dict[str, float]:
        """Mean loss over examples and `metrics` over all predictions of one split (one host sync)."""
        model.eval()
        total, n, preds, labels = 0.0, 0, [], []
        for batch in progress(loader, desc=f"eval {ctx.split}", unit="batch"):
            batch = ctx.to_device(batch)
            with ctx.autocast():
                loss, p, y = self.forward(model, batch)
            total = total + loss.detach().float() * len(y)
            n += len(y)
            preds.append(p.float())
            labels.append(y.float() if y.is_floating_point() else y)
        preds, labels = torch.cat(preds).cpu(), torch.cat(labels).cpu()
        return {"loss": float(total) / max(n, 1), **self.metrics(preds, labels)}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_record(task_cls: type[Task], cfg) -> dict:
    """{"source", "files": {name: sha256}, "fingerprint"}: what the record says about its data.

    The fingerprint is the sha256 of the sorted (name, sha256) list, None when no file is read
    (Hub datasets, generated data): then there is nothing to compare between two runs.
    """
    files = {name: sha256_file(p) for name, p in sorted(task_cls.data_files(cfg).items()) if p.is_file()}
    fingerprint = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest() if files else None
    return {"source": task_cls.data_source(cfg), "files": files, "fingerprint": fingerprint}


# Shared by the file readers (SQuAD, E2E, DART): a bad byte or an empty split names its file.
def read_text(path: Path) -> str:
    """A data file's text: strict UTF-8 (a leading BOM dropped). A byte that is not UTF-8 names the
    file, its line and byte offset and the fix."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: byte 0x{raw[e.start]:02x} at offset {e.start} is not UTF-8 ({e.reason}); "
            f"re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None
    return text.removeprefix("\ufeff")


def not_empty(rows: list, part: slice, where: str, split: str, what: str) -> list:
    """`rows[part]`, refused when empty: the message names the file and whether it or the slice is."""
    if not rows:
        raise DataError(
            f"{where} holds no {what}; is the file complete? (restore it or point task.files at another)"
        )
    if not rows[part]:
        raise DataError(f"{where}: split {split!r} selects none of its {len(rows)} {what}; widen the slice")
    return rows[part]
