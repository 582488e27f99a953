"""GM-LoRA's gradient masking (RM-LoRA paper, Algorithm 1), usable on any (A, B) low-rank method.

Every optimizer step and for every module independently, draw r̂ distinct directions R_t ⊂ {0..R−1}
from the run's seeded generator; keep the gradient of rows i ∈ R_t of A (R×d_in) and of columns
j ∈ R_t of B (d_out×R), zero the rest, then step. (Algorithm 1's "M_A[i, j] = 1 for j = 1..R" is a
typo: whole rows of A, whole columns of B.) By default only low-rank factors are masked, never the
task head, and from the first step on (Algorithm 1).

The authors' code (github.com/yz-mao/RM-LoRA, RM-LoRA/adalora_trainer.py, `_inner_training_loop`,
after clipping, before `optimizer.step()`) differs in two ways, both available as switches:
- `start=2` (`method.mask_start`): it masks only `if self.state.global_step > 0`, so its first
  optimizer step updates every direction (and the head) in full.
- `head` (`method.mask_head`): from then on every trainable parameter with a gradient gets
  `param.grad *= mask` with a mask of zeros unless its name holds lora_A / lora_B; in their run_glue.py
  the trainable non-LoRA parameters are exactly the pooler and the classifier (the model's head). So
  the head gets one real gradient (step 1), then only AdamW's decaying momentum moves it (HF Trainer's
  AdamW: m ← β1·m, v ← β2·v with a zero gradient, weight decay 0 in their scripts).

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

Fast path (default, `method.fast=true`): factors are bucketed by (A or B, shape) within a rank group;
each bucket owns a full-size 0/1 mask (n, *shape), rewritten in place every step from the draws (a
scatter, an index_select and one broadcast copy), whose per-factor views are built once; then one
`torch._foreach_mul_(grads, views)` per bucket masks the gradients (equal shapes: CUDA's fused
multi-tensor kernel). No `.nonzero()`, no host↔device copy, no host sync; the only per-module Python
left is gathering the `.grad` tensors (no kernels). Memory: one mask the size of the factors. `strict` restores the masked entries with the same foreach ops
(t·keep + saved·(1 − keep), exact for finite values). Plain path (`method.fast=false`): the same
draws applied module by module with `index_fill_` / `index_copy_` (the reference implementation; the
two give the same training run, tests/test_fastpath.py). Masking by multiplication turns a NaN/inf
gradient entry into NaN where `index_fill_` writes 0; such a step is non-finite anyway (the runner
stops it as diverged).
"""

from __future__ import annotations

import torch
from torch import nn

from adapters.base import StepHook
from core import ConfigError

MODES = ("grad", "strict")


def _state(optimizer: torch.optim.Optimizer) -> dict:
    return getattr(optimizer, "optimizer", optimizer).state  # unwrap accelerate's optimizer


def draw_directions(generator: torch.Generator, count: int, rank: int, keep: int) -> torch.Tensor:
    """(count, keep) distinct indices in [0, rank) per row, uniformly random, on the generator's device."""
    noise = torch.rand(count, rank, generator=generator, device=generator.device)
    return noise.argsort(dim=1)[:, :keep]


class _Bucket:
    """One factor side (A or B) of equally shaped factors in a rank group, with a full-size 0/1 mask.

    `keep` (n, *shape) is rewritten in place each step from the group's (M, R) one-hot draws by one
    index_select + one broadcast copy; its per-factor views (built once) are contiguous and equally
    shaped, so `torch._foreach_mul_(grads, views)` takes the fused multi-tensor kernel on CUDA.
    """

    def __init__(self, attr: str, index: list[int], params: list[torch.Tensor], strict: bool):
        self.attr, self.members, self.params = attr, index, params  # params: the members' factors
        like = params[0]
        self.index = torch.tensor(index, device=like.device)
        self.keep = torch.zeros(len(index), *like.shape, device=like.device, dtype=like.dtype)
        self.keep_views = list(self.keep.unbind(0))
        self.drop = torch.ones_like(self.keep) if strict else None
        self.drop_views = list(self.drop.unbind(0)) if strict else None

    def fill(self, one_hot: torch.Tensor) -> None:
        rows = one_hot.index_select(0, self.index)  # (n, R)
        src = rows[:, :, None] if self.attr == "lora_A" else rows[:, None, :]  # A: rows, B: columns
        self.keep.copy_(src.expand_as(self.keep))
        if self.drop is not None:
            self.drop.fill_(1.0).sub_(self.keep)


class _Group:
    """Modules sharing a rank R: their last draws and (fast path) their mask buckets."""

    def __init__(self, names: list[str], modules: list[nn.Module], rank: int):
        self.names, self.modules, self.rank = names, modules, rank
        self.rows: torch.Tensor | None = None  # (M, r̂) last step's kept A rows
        self.cols: torch.Tensor | None = None  # (M, r̂) last step's kept B columns
        self.buckets: list[_Bucket] = []
        self._key = None

    def prepare(self, strict: bool) -> None:
        """Builds the buckets on the first step. The factors stay the same Parameter objects for a whole
        run (moving the model keeps them), so later steps reuse them: no per-module Python per step (a
        rebuilt key of every factor's shape, device and dtype was a third of the hook's host time)."""
        key = (strict, self.modules[0].lora_A.device)
        if key == self._key:
            return
        by_shape: dict[tuple, list[int]] = {}
        for attr in ("lora_A", "lora_B"):
            for i, m in enumerate(self.modules):
                p = getattr(m, attr)
                by_shape.setdefault((attr, p.shape, p.device, p.dtype), []).append(i)
        self.buckets = [
            _Bucket(attr, idx, [getattr(self.modules[i], attr) for i in idx], strict)
            for (attr, _, _, _), idx in by_shape.items()
        ]
        self._key = key

    def fill(self) -> None:
        """Every bucket's mask from this step's draws (device ops only)."""
        like = self.buckets[0].keep
        one_hot = {}
        for attr, idx in (("lora_A", self.rows), ("lora_B", self.cols)):
            if attr == "lora_B" and self.cols is self.rows:
                one_hot[attr] = one_hot["lora_A"]
                continue
            hot = torch.zeros(len(self.modules), self.rank, device=like.device, dtype=like.dtype)
            one_hot[attr] = hot.scatter_(1, idx, 1.0)
        for bucket in self.buckets:
            bucket.fill(one_hot[bucket.attr])


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
        head: list[torch.Tensor] = (),
        start: int = 1,
    ):
        """`head`: parameters whose whole gradient is zeroed on masked steps (the authors' code); `start`:
        the first (1-based) optimizer step that is masked (the authors' code: 2)."""
        if mode not in MODES:
            raise ValueError(f"unknown mask_mode {mode!r}; valid: {', '.join(MODES)}")
        if head and mode != "grad":
            raise ValueError("a masked head is the authors' gradient mask: mode must be 'grad'")
        self.modules, self.directions, self.generator = modules, directions, generator
        self.shared, self.mode, self.fast = shared, mode, fast
        self.head, self.start = list(head), start
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

    def describe(self) -> dict:
        """What the record says about this mask."""
        ranks = sorted({g.rank for g in self.groups})
        return {
            "directions": self.directions,
            "rank": ranks[0] if len(ranks) == 1 else ranks,
            "shared": self.shared,
            "mode": self.mode,
            "start_step": self.start,
            "head": "masked (authors' code)" if self.head else "not masked",
        }

    def before_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        if not self.groups or step < self.start:  # before `start`: no draw, nothing masked
            return
        self._draw()
        if self.fast:
            self._mask_fast(optimizer)
        else:
            self._mask_loop(optimizer)
        self._mask_head()

    @torch.no_grad()
    def _mask_head(self) -> None:
        """The head's gradient times zero, as the authors' `param.grad *= mask` (a NaN stays NaN)."""
        grads = [p.grad for p in self.head if p.grad is not None]
        if not grads:
            return
        if self.fast:
            torch._foreach_mul_(grads, 0.0)
        else:
            for g in grads:
                g.mul_(0.0)

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

    # --- fast path: foreach ops over full-size masks, one bucket per factor shape -----------------

    @torch.no_grad()
    def _mask_fast(self, optimizer: torch.optim.Optimizer) -> None:
        self._saved.clear()
        strict = self.mode == "strict"
        state = _state(optimizer) if strict else None
        for g in self.groups:
            g.prepare(strict)
            g.fill()
            for bucket in g.buckets:
                params = bucket.params
                pairs = [(p.grad, v) for p, v in zip(params, bucket.keep_views) if p.grad is not None]
                if pairs:
                    grads, masks = zip(*pairs)
                    torch._foreach_mul_(list(grads), list(masks))
                if strict:
                    self._save_fast(params, bucket, state)

    def _save_fast(self, params: list[torch.Tensor], bucket: _Bucket, state: dict) -> None:
        """The masked part of each factor and of its parameter-shaped optimizer state."""
        saved_p = torch._foreach_mul([p.detach() for p in params], bucket.drop_views)
        saved_s = [
            {k: v * d for k, v in state.get(p, {}).items() if torch.is_tensor(v) and v.shape == p.shape}
            for p, d in zip(params, bucket.drop_views)
        ]
        self._saved.append((params, bucket.keep_views, saved_p, saved_s))

    def _restore_fast(self, optimizer: torch.optim.Optimizer) -> None:
        """t ← t·keep + saved·(1 − keep) for each factor and state tensor (exact for finite values)."""
        state = _state(optimizer)
        for params, keep, saved_p, saved_s in self._saved:
            data = [p.detach() for p in params]
            torch._foreach_mul_(data, keep)
            torch._foreach_add_(data, saved_p)
            tensors, masks, olds = [], [], []
            for p, k, old in zip(params, keep, saved_s):
                for key, value in state.get(p, {}).items():
                    if torch.is_tensor(value) and value.shape == p.shape:
                        tensors.append(value)
                        masks.append(k)
                        olds.append(old.get(key))  # None: created by this very step, it started at zero
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
