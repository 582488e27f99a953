"""What the runner sees of a task: data, a forward that returns loss and predictions, metrics.

A task module defines `Config` (a dataclass, validated in `__post_init__`) and a `Task` subclass;
it is registered by name in `tasks/__init__.py`. The runner calls, in order:

    task = Task(cfg)                    # validates config and input files: fails fast, cheaply
    task.head                           # what the model's output layer must be (or None)
    task.texts()                        # raw training text (only if the tokenizer is trained here)
    data = task.build(model, tokenizer) # datasets, collate
    loss, preds, labels = task.forward(model, batch)   # per batch, train and eval
    task.evaluate(model, loader, to_device)            # per eval split: {"loss", metrics...}

Generation or span-extraction tasks override `evaluate`; classification / regression tasks only
define `forward` and `metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn


class DataError(ValueError):
    """Missing or malformed input data; the message is one line and names the fix."""


@dataclass
class TaskData:
    train: list
    evals: dict[str, list]  # split name -> examples; the first selects the best epoch
    collate: Callable | None = None


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

    @property
    def head(self) -> dict | None:
        return None

    def texts(self) -> Iterable[str]:
        return []

    def build(self, model: nn.Module, tokenizer) -> TaskData:
        raise NotImplementedError

    def forward(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def metrics(self, preds: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, to_device: Callable, autocast) -> dict[str, float]:
        """Mean loss over examples and `metrics` over all predictions of one split."""
        model.eval()
        total, n, preds, labels = 0.0, 0, [], []
        for batch in loader:
            batch = to_device(batch)
            with autocast():
                loss, p, y = self.forward(model, batch)
            total += float(loss) * len(y)
            n += len(y)
            preds.append(p.float().cpu())
            labels.append(y.float().cpu() if y.is_floating_point() else y.cpu())
        return {"loss": total / max(n, 1), **self.metrics(torch.cat(preds), torch.cat(labels))}
