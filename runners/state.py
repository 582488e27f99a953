"""Where a run is (`Progress`), its epoch's sums so far (`EpochSums`), and how it stopped early.

`Progress` is what a checkpoint saves as `progress` and a resume restores (runners/checkpoint.py);
its fields are the keys of that dict, so checkpoints written before these classes load, and the
other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch


class RunStopped(Exception):
    """The run ended early for a reason recorded in its status (diverged, interrupted, frozen)."""

    def __init__(self, status: str, message: str, **details):
        super().__init__(message)
        self.status, self.details = status, details


@dataclass
class Progress:
    epoch: int = 1  # the epoch being trained (the next one at an epoch's end)
    batch: int = 0  # batches of this epoch already trained on: a resume skips them
    step: int = 0  # optimizer steps taken
    history: list[dict] = field(default_factory=list)  # one entry per finished epoch
    best: dict | None = None  # {"epoch", "score", "eval"} of the best evaluated epoch
    train_time: float = 0.0  # seconds in training steps (evaluation and checkpoints excluded)
    seen: int = 0  # training examples over finished epochs
    order_state: torch.Tensor | None = None  # the data order's generator state at this epoch's start
    last_finite_loss: float | None = None  # the latest checked total loss, for a `diverged` message
    eval_s: list[float] = field(default_factory=list)  # each evaluation's wall seconds
    epoch_s: list[float] = field(default_factory=list)  # each epoch's training + evaluation seconds

    def as_dict(self) -> dict:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, saved: dict) -> Progress:
        """A checkpoint's `progress`; KeyError for a key this code does not know (it came from other
        code: the caller sets the checkpoint aside)."""
        unknown = sorted(set(saved) - {f.name for f in fields(cls)})
        if unknown:
            raise KeyError(f"unknown progress keys {unknown}")
        return cls(**saved)


@dataclass
class EpochSums:
    """This epoch's training sums so far, on the run's device: loss and regularizer summed over
    examples (0-d float32), the example count, and the outputs the task's train metrics read."""

    loss: torch.Tensor
    reg: torch.Tensor
    n: int = 0
    preds: list[torch.Tensor] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)

    @classmethod
    def zeros(cls, device: torch.device) -> EpochSums:
        return cls(torch.zeros((), device=device), torch.zeros((), device=device))

    def add(self, loss: torch.Tensor, reg: torch.Tensor | None, p: torch.Tensor | None, y: torch.Tensor):
        """One batch: `loss` and `reg` are its means, `p` and `y` its outputs and labels."""
        self.loss += loss.detach().float() * len(y)
        if reg is not None:
            self.reg += reg.detach().float() * len(y)
        self.n += len(y)
        if p is not None:  # copies of outputs: CUDA graphs reuse their output buffers on the next step
            self.preds.append(p.detach().to(torch.float32, copy=True))
            self.labels.append(y.detach())

    def as_dict(self) -> dict:
        return dict(vars(self))  # the checkpoint's `acc_state`: loss, reg, n, preds, labels
