"""A run's resumable checkpoint: everything that decides the rest of the run, in one file.

The file holds the progress (runners/state.py), the partial epoch's sums, the trained parameters and
every buffer, optimizer, schedule and method state, the RNG streams (torch, CUDA, numpy, Python, the
data order) and the method parameters' fingerprints (the frozen check). It is written atomically
behind its sha256 (runners/record.py `save_checked`): a torn write is recognised on resume, set aside,
and the run starts over. A rerun of the same config resumes from it and ends with the same record as
an uninterrupted run.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from runners.record import CorruptFile, load_checked, save_checked
from runners.state import EpochSums, Progress, RunStopped
from runners.store import set_aside_file

if TYPE_CHECKING:
    from runners.parts import Parts


class Checkpoint:
    """The checkpoint at `path` of a run built as `parts`; `enabled`: train.checkpoint."""

    def __init__(self, path: Path, parts: Parts, enabled: bool):
        self.path, self.parts, self.enabled = path, parts, enabled

    def save(self, progress: Progress, sums: EpochSums | None) -> None:
        """At an epoch's end (`sums` None) or mid-epoch. Several processes: only at epoch ends (each
        process's partial-epoch sums stay its own), and only the main process writes."""
        p = self.parts
        if self.enabled and p.main and not (p.distributed and sums is not None):
            save(self.path, progress, sums, p)

    def resume(self, record: dict) -> tuple[Progress, EpochSums | None]:
        """The saved progress (and the partial epoch's sums, if it stopped mid-epoch) with the parts'
        state restored, or a fresh start when there is no checkpoint."""
        if not self.path.is_file():
            return Progress(), None
        try:
            progress, sums = load(self.path, self.parts)
        except (CorruptFile, KeyError, ValueError, RuntimeError) as e:
            # it passed its checksum (runners/store.py) but does not fit this model (a code change), or
            # broke since: rerunning would fail the same way, so it goes aside and the rerun starts over
            if isinstance(e, torch.OutOfMemoryError):
                raise
            why = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}" if str(e) else type(e).__name__
            kept = set_aside_file(self.path) if self.parts.main else self.path
            raise RunStopped(
                "failed",
                f"checkpoint {self.path} does not load ({why}); set aside as {kept}: rerun to start over",
            ) from e
        if self.parts.main:
            print(
                f"resuming {record['run_id']} from {self.path} (epoch {progress.epoch}, step {progress.step})"
            )
        record["resumed_from_step"] = progress.step
        return progress, sums


def save(path: Path, progress: Progress, sums: EpochSums | None, parts: Parts) -> None:
    model = parts.model
    state = {
        "progress": progress.as_dict(),
        "acc_state": None if sums is None else sums.as_dict(),
        "params": {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad},
        "buffers": {n: b.detach().cpu().clone() for n, b in model.named_buffers()},
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "method": parts.method.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy": np.random.get_state(),
            "python": random.getstate(),
            "order": parts.order.get_state(),
        },
        "watched": parts.watched,
    }
    save_checked(path, state)  # atomic, behind its sha256: a torn write is recognised on resume


def load(path: Path, parts: Parts) -> tuple[Progress, EpochSums | None]:
    """Restores the parts' state from `path`; CorruptFile if it does not match its checksum."""
    state = load_checked(path)
    model = parts.model
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for n, v in state["params"].items():
            params[n].copy_(v)
        for n, v in state["buffers"].items():
            buffers[n].copy_(v)
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    parts.method.load_state_dict(state["method"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    parts.order.set_state(rng["order"])
    parts.watched.clear()
    parts.watched.update(state["watched"])
    progress = Progress.from_dict(state["progress"])
    sums = None
    if progress.batch:  # stopped mid-epoch: its sums so far go on
        sums = EpochSums(**acc_state_to(state["acc_state"], next(model.parameters()).device))
    return progress, sums


def acc_state_to(acc_state: dict, device: torch.device) -> dict:
    """A partial epoch's sums and predictions, on the run's device. The checkpoint loads them on the
    CPU; the epoch's end concatenates the restored predictions with this device's new ones (a resumed
    CUDA run failed there with "Expected all tensors to be on the same device", H100, 2026-12-07)."""
    moved = {}
    for key, value in acc_state.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
        elif isinstance(value, list):
            value = [v.to(device) if isinstance(v, torch.Tensor) else v for v in value]
        moved[key] = value
    return moved
