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

Draws. Modules are grouped by rank R; per step and group of M modules one device-side draw
`argsort(rand(M, R))[:, :r̂]` gives every module r̂ distinct, uniformly random directions (a random
permutation's first r̂ entries). The generator lives on the parameters' device, seeded once from the
run's generator, and both generators' states are checkpointed (resume is exact).

Fast path (default, `method.fast=true`): the draws become a 0/1 keep matrix (M, R) written in place
into a buffer whose per-module row/column views are built once; the gradients are then masked by two
`torch._foreach_mul_` calls (A's grads × keep[:, None], B's grads × keep[None, :]). No `.nonzero()`,
no host↔device copy, no host sync. `strict` restores the masked entries with the same foreach ops
(t·keep + saved·(1 − keep), exact for finite values). Plain path (`method.fast=false`): the same
draws applied module by module with `index_fill_` / `index_copy_` (the reference implementation; the
two give the same training run, tests/test_fastpath.py). Masking by multiplication turns a NaN/inf
gradient entry into NaN where `index_fill_` writes 0; such a step is non-finite anyway (the runner
stops it as diverged).
"""

from __future__ import annotations

import torch
from torch import nn

from adapters.base import ConfigError, StepHook

MODES = ("grad", "strict")


def _state(optimizer: torch.optim.Optimizer) -> dict:
    return getattr(optimizer, "optimizer", optimizer).state  # unwrap accelerate's optimizer


def draw_directions(generator: torch.Generator, count: int, rank: int, keep: int) -> torch.Tensor:
    """(count, keep) distinct indices in [0, rank) per row, uniformly random, on the generator's device."""
    noise = torch.rand(count, rank, generator=generator, device=generator.device)
    return noise.argsort(dim=1)[:, :keep]


class _Group:
    """Modules sharing a rank R: their factors, and (fast path) keep buffers with per-module views."""

    def __init__(self, names: list[str], modules: list[nn.Module], rank: int):
        self.names, self.modules, self.rank = names, modules, rank
        self.rows: torch.Tensor | None = None  # (M, r̂) last step's kept A rows
        self.cols: torch.Tensor | None = None  # (M, r̂) last step's kept B columns
        self.keep: tuple[torch.Tensor, torch.Tensor] | None = None  # 0/1 (M, R) for A rows, B cols

    def buffers(self, like: torch.Tensor, shared: bool) -> None:
        if self.keep is not None and self.keep[0].device == like.device and self.keep[0].dtype == like.dtype:
            return
        M, R = len(self.modules), self.rank
        keep_a = torch.zeros(M, R, device=like.device, dtype=like.dtype)
        keep_b = keep_a if shared else torch.zeros_like(keep_a)
        drop_a = torch.ones_like(keep_a)
        drop_b = drop_a if shared else torch.ones_like(keep_a)
        self.keep, self.drop = (keep_a, keep_b), (drop_a, drop_b)
        # views built once: A (R, d_in) × keep[i][:, None]; B (d_out, R) × keep[i][None, :]
        self.views_a = [keep_a[i].unsqueeze(1) for i in range(M)]
        self.views_b = [keep_b[i].unsqueeze(0) for i in range(M)]
        self.drop_a = [self.drop[0][i].unsqueeze(1) for i in range(M)]
        self.drop_b = [self.drop[1][i].unsqueeze(0) for i in range(M)]

    def fill(self, shared: bool) -> None:
        """keep ← one-hot rows of the drawn indices; drop ← 1 − keep (all in place, on the device)."""
        keep_a, keep_b = self.keep
        keep_a.zero_().scatter_(1, self.rows, 1.0)
        if not shared:
            keep_b.zero_().scatter_(1, self.cols, 1.0)
        self.drop[0].fill_(1.0).sub_(keep_a)
        if not shared:
            self.drop[1].fill_(1.0).sub_(keep_b)


class DirectionMask(StepHook):
    """Keeps r̂ random rank directions per module per optimizer step (see the module docstring)."""

    def __init__(
        self,
        modules: dict[str, nn.Module],
        directions: int,
        generator: torch.Generator,
        shared: bool = True,
        mode: str = "grad",
        fast: bool = True,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown mask_mode {mode!r}; valid: {', '.join(MODES)}")
        self.modules, self.directions, self.generator = modules, directions, generator
        self.shared, self.mode, self.fast = shared, mode, fast
        by_rank: dict[int, list[str]] = {}
        for name, m in modules.items():
            by_rank.setdefault(int(m.rank), []).append(name)
        self.groups = [_Group(names, [modules[n] for n in names], r) for r, names in by_rank.items()]
        self._device_gen: torch.Generator | None = None
        self._pending: dict | None = None  # a device generator state loaded before the first draw
        self._saved: list = []

    # --- draws -----------------------------------------------------------------------------------

    def _device(self) -> torch.device:
        return next(iter(self.modules.values())).lora_A.device

    def _gen(self) -> torch.Generator:
        device = self._device()
        if self._device_gen is None:
            gen = torch.Generator(device=device)
            if self._pending is not None:
                if self._pending["device_type"] != device.type:
                    raise ConfigError(
                        f"checkpoint's mask generator is on {self._pending['device_type']}, the run is on "
                        f"{device.type}; resume on the same device type (or start the run afresh)"
                    )
                gen.set_state(self._pending["state"])
            else:  # seeded once from the run's generator: the same seed gives the same draws
                gen.manual_seed(int(torch.randint(0, 2**62, (1,), generator=self.generator)))
            self._device_gen, self._pending = gen, None
        return self._device_gen

    def _draw(self) -> None:
        gen = self._gen()
        for g in self.groups:
            if self.shared:
                g.rows = draw_directions(gen, len(g.modules), g.rank, self.directions)
                g.cols = g.rows
            else:
                both = draw_directions(gen, 2 * len(g.modules), g.rank, self.directions)
                g.rows, g.cols = both[0::2], both[1::2]

    @property
    def kept(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Last step's kept A rows / B columns per module name (built on access)."""
        return {
            name: (g.rows[i], g.cols[i])
            for g in self.groups
            if g.rows is not None
            for i, name in enumerate(g.names)
        }

    # --- hooks -----------------------------------------------------------------------------------

    def before_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        if not self.groups:
            return
        self._draw()
        if self.fast:
            self._mask_fast(optimizer)
        else:
            self._mask_loop(optimizer)

    @torch.no_grad()
    def after_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        if self.mode != "strict":
            return
        if self.fast:
            self._restore_fast(optimizer)
        else:
            self._restore_loop(optimizer)
        self._saved.clear()

    def state_dict(self) -> dict:
        gen = self._device_gen
        device = None
        if gen is not None:
            device = {"device_type": gen.device.type, "state": gen.get_state()}
        elif self._pending is not None:
            device = self._pending
        return {"generator": self.generator.get_state(), "device_generator": device}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self._device_gen, self._pending = None, state.get("device_generator")

    # --- fast path: foreach ops over per-module views of one keep buffer per rank group ----------

    @torch.no_grad()
    def _mask_fast(self, optimizer: torch.optim.Optimizer) -> None:
        self._saved.clear()
        state = _state(optimizer) if self.mode == "strict" else None
        for g in self.groups:
            g.buffers(g.modules[0].lora_A, self.shared)
            g.fill(self.shared)
            for attr, views in (("lora_A", g.views_a), ("lora_B", g.views_b)):
                pairs = [
                    (p.grad, v) for m, v in zip(g.modules, views) if (p := getattr(m, attr)).grad is not None
                ]
                if pairs:
                    grads, masks = zip(*pairs)
                    torch._foreach_mul_(list(grads), list(masks))
            if state is not None:
                self._save_fast(g, state)

    def _save_fast(self, g: _Group, state: dict) -> None:
        """Full copies of each factor and its parameter-shaped optimizer state (restored in after_step)."""
        for attr, keep, drop in (("lora_A", g.views_a, g.drop_a), ("lora_B", g.views_b, g.drop_b)):
            params = [getattr(m, attr) for m in g.modules]
            saved_p = torch._foreach_mul([p.detach() for p in params], drop)  # masked part only
            saved_s = [
                {k: v * d for k, v in state.get(p, {}).items() if torch.is_tensor(v) and v.shape == p.shape}
                for p, d in zip(params, drop)
            ]
            self._saved.append((params, keep, saved_p, saved_s))

    def _restore_fast(self, optimizer: torch.optim.Optimizer) -> None:
        state = _state(optimizer)
        for params, keep, saved_p, saved_s in self._saved:
            data = [p.detach() for p in params]
            torch._foreach_mul_(data, keep)  # t·keep + saved·(1 − keep)
            torch._foreach_add_(data, saved_p)
            tensors, masks, olds = [], [], []
            for p, k, old in zip(params, keep, saved_s):
                for key, value in state.get(p, {}).items():
                    if torch.is_tensor(value) and value.shape == p.shape:
                        tensors.append(value)
                        masks.append(k)
                        # state created by this very step started at zero: restore that
                        olds.append(old.get(key))
            if tensors:
                torch._foreach_mul_(tensors, masks)
                present = [(t, o) for t, o in zip(tensors, olds) if o is not None]
                if present:
                    torch._foreach_add_(*map(list, zip(*present)))

    # --- plain path: module by module (the reference) --------------------------------------------

    def _mask_loop(self, optimizer: torch.optim.Optimizer) -> None:
        self._saved.clear()
        state = _state(optimizer)
        for g in self.groups:
            for i, m in enumerate(g.modules):
                for param, keep, dim in ((m.lora_A, g.rows[i], 0), (m.lora_B, g.cols[i], 1)):
                    drop = torch.ones(m.rank, dtype=torch.bool, device=param.device)
                    drop[keep.to(param.device)] = False
                    if param.grad is not None:
                        param.grad.index_fill_(dim, drop.nonzero().squeeze(1), 0.0)
                    if self.mode == "strict":
                        self._save_loop(param, drop, dim, state)

    def _save_loop(self, param: torch.Tensor, drop: torch.Tensor, dim: int, state: dict) -> None:
        idx = drop.nonzero().squeeze(1)
        tensors = [("param", param.detach().index_select(dim, idx).clone())]
        for key, value in state.get(param, {}).items():
            if torch.is_tensor(value) and value.shape == param.shape:
                tensors.append((key, value.index_select(dim, idx).clone()))
        self._saved.append((param, idx, tensors, dim))

    def _restore_loop(self, optimizer: torch.optim.Optimizer) -> None:
        state = _state(optimizer)
        for param, idx, tensors, dim in self._saved:
            saved = dict(tensors)
            param.index_copy_(dim, idx, saved.pop("param"))
            for key, value in state.get(param, {}).items():
                if torch.is_tensor(value) and value.shape == param.shape:
                    # state created by this very step started at zero: restore that
                    old = saved.get(key, torch.zeros_like(value.index_select(dim, idx)))
                    value.index_copy_(dim, idx, old)
