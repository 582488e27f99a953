"""GM-LoRA's gradient masking (RM-LoRA paper, Algorithm 1), usable on any (A, B) low-rank method.

Every optimizer step and for every module independently, draw r̂ distinct directions R_t ⊂ {0..R−1}
from the run's seeded generator; keep the gradient of rows i ∈ R_t of A (R×d_in) and of columns
j ∈ R_t of B (d_out×R), zero the rest, then step. (Algorithm 1's "M_A[i, j] = 1 for j = 1..R" is a
typo: whole rows of A, whole columns of B.) Only low-rank factors are masked, never the task head
(the reference code zeroes the head's gradient too; we do not: REFERENCE.md).

Modes:
- `grad` (default; the paper's wording and the reference code): masked gradients are zero, but
  AdamW's momentum and weight decay may still move masked rows/columns.
- `strict`: masked rows/columns do not move at all in that step: parameters and every optimizer
  state tensor shaped like the parameter (AdamW's exp_avg, exp_avg_sq) are restored after the
  step. Per-tensor scalars (AdamW's step count) still advance.

`shared=True`: B's kept columns are A's kept rows (reference "v1"); `False`: drawn independently ("v2").
"""

from __future__ import annotations

import torch
from torch import nn

from adapters.base import StepHook

MODES = ("grad", "strict")


def _state(optimizer: torch.optim.Optimizer) -> dict:
    return getattr(optimizer, "optimizer", optimizer).state  # unwrap accelerate's optimizer


class DirectionMask(StepHook):
    """Keeps r̂ random rank directions per module per optimizer step (see the module docstring)."""

    def __init__(
        self,
        modules: dict[str, nn.Module],
        directions: int,
        generator: torch.Generator,
        shared: bool = True,
        mode: str = "grad",
    ):
        if mode not in MODES:
            raise ValueError(f"unknown mask_mode {mode!r}; valid: {', '.join(MODES)}")
        self.modules, self.directions, self.generator = modules, directions, generator
        self.shared, self.mode = shared, mode
        self.kept: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # last step's kept A rows / B cols
        self._saved: list[tuple[torch.Tensor, torch.Tensor, list[tuple[str, torch.Tensor | None]], int]] = []

    def _draw(self, rank: int) -> torch.Tensor:
        return torch.randperm(rank, generator=self.generator)[: self.directions]

    def before_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        self._saved.clear()
        state = _state(optimizer)
        for name, m in self.modules.items():
            rows = self._draw(m.rank)
            cols = rows if self.shared else self._draw(m.rank)
            self.kept[name] = (rows, cols)
            for param, keep, dim in ((m.lora_A, rows, 0), (m.lora_B, cols, 1)):
                drop = torch.ones(m.rank, dtype=torch.bool)
                drop[keep] = False
                drop = drop.to(param.device)
                if param.grad is not None:
                    param.grad.index_fill_(dim, drop.nonzero().squeeze(1), 0.0)
                if self.mode == "strict":
                    self._save(param, drop, dim, state)

    def _save(self, param: torch.Tensor, drop: torch.Tensor, dim: int, state: dict) -> None:
        idx = drop.nonzero().squeeze(1)
        tensors = [("param", param.detach().index_select(dim, idx).clone())]
        for key, value in state.get(param, {}).items():
            if torch.is_tensor(value) and value.shape == param.shape:
                tensors.append((key, value.index_select(dim, idx).clone()))
        self._saved.append((param, idx, tensors, dim))

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    @torch.no_grad()
    def after_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        if self.mode != "strict":
            return
        state = _state(optimizer)
        for param, idx, tensors, dim in self._saved:
            saved = dict(tensors)
            param.index_copy_(dim, idx, saved.pop("param"))
            for key, value in state.get(param, {}).items():
                if torch.is_tensor(value) and value.shape == param.shape:
                    # state created by this very step started at zero: restore that
                    old = saved.get(key, torch.zeros_like(value.index_select(dim, idx)))
                    value.index_copy_(dim, idx, old)
        self._saved.clear()
