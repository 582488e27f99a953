"""SoRA: sparse low-rank adaptation (Ding et al., 2023, arXiv:2311.11696). A gate g on the rank.

    y = W x + (α/r) · B (g ⊙ (A x)),   A Kaiming-uniform, B = 0, g ~ N(0, 1) ∈ R^r

The factors are a `LowRankLinear` (composition: `SoraLinear.lora`), the gate sits between A and B.
Gates are not stepped by the runner's AdamW: they are `Method.own_params`, stepped by `GateStep`
exactly as the official `SparseAdamW` (TsinghuaC3I/SoRA `src/sparse_optimizer.py`; the RM-LoRA
authors' fork `SoRA/src/sparse_optimizer.py` is the same):

1. an HF-`AdamW` step (bias-corrected step size lr_t·√(1−β2^k)/(1−β1^k), denominator √v + eps,
   eps 1e-6, no weight decay) with lr_t = `gate_lr` on the gates' own linear warm-up/decay schedule
   (`get_linear_schedule_with_warmup` over the run's steps and warm-up ratio, official run_glue.py);
2. `gate_rule: official` (default): three masks in this order with ξ itself (not lr·ξ):
   p[p > ξ] −= ξ;  p[p < −ξ] += ξ;  p[|p| < ξ] = 0.
   Net effect: |p| < 2ξ becomes 0, larger |p| shrink by ξ (ξ = 0.1: [0.12, 0.15, 0.19, −0.15] → 0).
   `gate_rule: soft_threshold` is the textbook proximal step g ← sign(g)·max(|g| − ξ, 0) instead.

When ξ exceeds the gate lr, every gate shrinks each step whatever its gradient, so long runs prune
every rank: `survival` gives the exact worst-case bound and `check_plan` says so before a run.
Known difference: the official Trainer clips the gates' gradients together with the model's
(`clip_grad_norm_(model.parameters())`); the runner clips only the parameters its AdamW steps.

`xi_schedule: linear` raises ξ from `sparse_lambda` to `xi_max` in `xi_stages` equal stages of the
run (the official scheduled mode); `fixed` (default, as the RM-LoRA authors ran it) keeps ξ.
`l1_weight` η adds η·Σ|g| / numel(g) to the loss (official option; the RM-LoRA authors: 0).

At the end of training (`finish`), ranks whose gate is exactly zero are removed: each module becomes
the plain `LowRankLinear` of the surviving rank k with A ← A[keep], B ← B[:, keep]·diag(g[keep])
(scaling α/r unchanged), so outputs are identical; k = 0 puts the frozen base layer back.
# I = Σ_modules nnz(g)·(d_in + d_out) (+ head); # T counts A, B and g at the initial rank r.
R-LoRA's regularizer and GM-LoRA's mask act on A and B as for LoRA (`reg_weight`, `mask_*`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adapters.base import Method, Plan, StepHook, freeze_all_but, match_modules
from adapters.lora import add_reg_and_mask, mask_directions
from adapters.lowrank import LowRankLinear, in_out_features, inject
from adapters.masking import MODES
from adapters.orthogonal import FORMS
from core import ConfigError

XI_SCHEDULES = ("fixed", "linear")
GATE_RULES = ("official", "soft_threshold")


@dataclass
class Config:
    name: str = "sora"
    lr_group: str = "lowrank"
    rank: int = 16  # r: initial (maximal) rank; the gate prunes below it
    alpha: float = 32.0  # scaling α/r (kept after removal)
    dropout: float = 0.0
    init: str = "kaiming"
    init_std: float = 0.02
    sparse_lambda: float = 0.005  # ξ: soft-threshold per gate step; larger = sparser
    xi_per_task: dict | None = None  # the YAML's per-task table that `sparse_lambda` is looked up in
    gate_lr: float = 1e-3  # peak lr of the gates' own AdamW (official: sparse_lr = the model lr)
    gate_betas: tuple[float, float] = (0.9, 0.999)
    gate_eps: float = 1e-6  # HF AdamW's default, which SparseAdamW inherits
    gate_warmup_ratio: float = 0.0  # the gates' own linear schedule (YAML: the run's train.warmup_*)
    gate_warmup_steps: int | None = None  # overrides gate_warmup_ratio when set
    gate_rule: str = "official"  # official (SparseAdamW's three masks) | soft_threshold (textbook)
    l1_weight: float = 0.0  # η of the optional L1 loss term on the gates
    xi_schedule: str = "fixed"  # fixed | linear (scheduled ξ)
    xi_max: float | None = None  # linear schedule: final ξ
    xi_stages: int = 5  # linear schedule: number of equal stages
    reg_weight: float = 0.0  # R-LoRA's regularizer on A, B (0: off)
    reg_form: str = "reference"  # the authors' form, the one their 0.1 belongs to (conf/method/lora.yaml)
    mask_directions: int | None = None  # GM-LoRA's mask on A, B (null: off)
    mask_fraction: float | None = None
    mask_shared: bool = True
    mask_mode: str = "grad"
    fast: bool = True  # batched regularizer + device-side mask (false: per-module reference loops)

    def __post_init__(self):
        if self.rank < 1:
            raise ConfigError(f"method.rank must be >= 1, got {self.rank}")
        if self.sparse_lambda < 0:
            raise ConfigError(
                f"method.sparse_lambda (ξ) must be >= 0, got {self.sparse_lambda}; "
                "use a per-task value from RM-LoRA Table 4 (e.g. 0.005) or 0 for no thresholding"
            )
        if self.gate_lr <= 0:
            raise ConfigError(f"method.gate_lr must be > 0, got {self.gate_lr}")
        if self.gate_rule not in GATE_RULES:
            raise ConfigError(f"unknown method.gate_rule {self.gate_rule!r}; valid: official, soft_threshold")
        if not 0 <= self.gate_warmup_ratio < 1 or (self.gate_warmup_steps or 0) < 0:
            raise ConfigError("method.gate_warmup_ratio must be in [0, 1) and gate_warmup_steps >= 0")
        if self.l1_weight < 0:
            raise ConfigError(f"method.l1_weight must be >= 0, got {self.l1_weight}")
        if self.xi_schedule not in XI_SCHEDULES:
            raise ConfigError(f"unknown method.xi_schedule {self.xi_schedule!r}; valid: fixed, linear")
        if self.xi_schedule == "linear" and (self.xi_max is None or self.xi_max < self.sparse_lambda):
            raise ConfigError("method.xi_schedule=linear needs method.xi_max >= method.sparse_lambda")
        if self.xi_stages < 1:
            raise ConfigError(f"method.xi_stages must be >= 1, got {self.xi_stages}")
        if self.reg_weight < 0 or self.reg_form not in FORMS or self.mask_mode not in MODES:
            raise ConfigError(
                "bad method.reg_weight (>= 0), reg_form (paper|reference) or mask_mode (grad|strict)"
            )
        if self.mask_fraction is not None and not 0.0 < self.mask_fraction <= 1.0:
            raise ConfigError(f"method.mask_fraction must be in (0, 1], got {self.mask_fraction}")
        r_hat = self.directions
        if r_hat is not None and not 1 <= r_hat <= self.rank:
            raise ConfigError(f"method.mask_directions must be in [1, r={self.rank}], got {r_hat}")

    @property
    def directions(self) -> int | None:
        return mask_directions(self)


class SoraLinear(nn.Module):
    """`LowRankLinear` factors with a gate between A and B: y = W x + s · B (g ⊙ A x)."""

    def __init__(self, lora: LowRankLinear, generator: torch.Generator | None = None):
        super().__init__()
        self.lora = lora
        g = torch.randn(lora.rank, generator=generator)
        self.sora_gate = nn.Parameter(g.to(device=lora.lora_A.device, dtype=lora.lora_A.dtype))

    # the names the regularizer, the mask and the diagnostics look for
    @property
    def lora_A(self) -> nn.Parameter:
        return self.lora.lora_A

    @property
    def lora_B(self) -> nn.Parameter:
        return self.lora.lora_B

    @property
    def scaling(self) -> float:
        return self.lora.scaling

    @property
    def rank(self) -> int:
        return self.lora.rank

    @property
    def base(self) -> nn.Module:
        return self.lora.base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.linear(self.lora.dropout(x), self.lora_A) * self.sora_gate  # (..., r)
        return self.lora.base(x) + self.scaling * F.linear(hidden, self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = s · B diag(g) A, (d_out, d_in)."""
        return self.scaling * (self.lora_B * self.sora_gate) @ self.lora_A

    @torch.no_grad()
    def remove_zero_ranks(self) -> nn.Module:
        """The equivalent plain module: `LowRankLinear` of rank nnz(g), or the base if nnz(g) = 0."""
        keep = (self.sora_gate != 0).nonzero().squeeze(1)
        lora = self.lora
        if keep.numel() == 0:
            return lora.base
        a = lora.lora_A[keep].clone()
        b = (lora.lora_B[:, keep] * self.sora_gate[keep]).clone()
        lora.lora_A, lora.lora_B = nn.Parameter(a), nn.Parameter(b)
        lora.rank = int(keep.numel())  # scaling stays α/r of the trained module
        return lora


def _nnz(gate: torch.Tensor) -> int:
    """Nonzero gates (on the meta device, used for counting shapes: all, as at initialisation)."""
    return gate.numel() if gate.is_meta else int((gate != 0).sum())


def warmup_steps(cfg: Config, total_steps: int) -> int:
    """Warm-up steps of the gates' schedule: as the runner's (runners/train.py) for the run's steps."""
    if cfg.gate_warmup_steps is not None:
        return int(cfg.gate_warmup_steps)
    return round(cfg.gate_warmup_ratio * total_steps)


def linear_factor(index: int, warmup: int, total: int) -> float:
    """HF `get_linear_schedule_with_warmup` at scheduler index `index` (0 for the first step)."""
    if index < warmup:
        return index / max(1, warmup)
    return max(0.0, (total - index) / max(1, total - warmup))


def xi_at(cfg: Config, step: int, total_steps: int) -> float:
    """ξ at 1-based `step`: fixed, or raised linearly over `xi_stages` equal stages of the run."""
    if cfg.xi_schedule == "fixed" or cfg.xi_stages == 1:
        return cfg.sparse_lambda
    stage = min((step - 1) * cfg.xi_stages // total_steps, cfg.xi_stages - 1)
    return cfg.sparse_lambda + (cfg.xi_max - cfg.sparse_lambda) * stage / (cfg.xi_stages - 1)


def official_threshold(p: torch.Tensor, xi: float) -> torch.Tensor:
    """SparseAdamW's three masks, in order, with ξ itself; `torch.where` so CUDA never syncs.

    Same as `p[p > ξ] -= ξ; p[p < -ξ] += ξ; p[|p| < ξ] = 0` (tests/test_sora.py checks both)."""
    p = torch.where(p > xi, p - xi, p)
    p = torch.where(p < -xi, p + xi, p)
    return torch.where(p.abs() < xi, torch.zeros_like(p), p)


def soft_threshold(p: torch.Tensor, xi: float) -> torch.Tensor:
    """The textbook proximal step of ξ·|g|: sign(g)·max(|g| − ξ, 0) (`gate_rule: soft_threshold`)."""
    return torch.sign(p) * torch.clamp(p.abs() - xi, min=0.0)


THRESHOLDS = {"official": official_threshold, "soft_threshold": soft_threshold}


class GateStep(StepHook):
    """The gates' own HF-AdamW step on their own linear schedule, then the gate rule at ξ.

    Per gate, as `SparseAdamW.step` (no weight decay: SoRA builds it with the default 0): a gate
    without a gradient is skipped, state (step k, m, v) is per gate. The elementwise work runs as
    `torch._foreach_*` over all gates and one concatenated threshold (a few kernels, not 8 per gate).
    """

    def __init__(self, method: Method, cfg: Config):
        self.method, self.cfg = method, cfg
        self.gates = [m.sora_gate for m in method.lowrank.values()]
        self.exp_avg = [torch.zeros_like(g, memory_format=torch.preserve_format) for g in self.gates]
        self.exp_avg_sq = [torch.zeros_like(g, memory_format=torch.preserve_format) for g in self.gates]
        self.count = [0] * len(self.gates)
        self.threshold = THRESHOLDS[cfg.gate_rule]
        self.total_steps = 1
        self.warmup = warmup_steps(cfg, 1)
        self.removed = False

    def setup(self, plan) -> None:
        self.total_steps = max(int(plan.total_steps), 1)
        self.warmup = warmup_steps(self.cfg, self.total_steps)

    def lr(self, step: int) -> float:
        """lr_t of 1-based `step`: the scheduler is stepped after the optimizer (HF Trainer), so the
        first step uses index 0 (lr 0 under warm-up). The official scheduler's total is
        int(epochs·n/batch), ≤ 1 step short of the run's ⌈n/batch⌉·epochs: its last step has lr 0."""
        return self.cfg.gate_lr * linear_factor(step - 1, self.warmup, self.total_steps)

    def xi(self, step: int) -> float:
        return xi_at(self.cfg, step, self.total_steps)

    @torch.no_grad()
    def after_step(self, optimizer, step: int = 0) -> None:
        idx = [i for i, g in enumerate(self.gates) if g.grad is not None]
        if not idx:
            return
        beta1, beta2 = self.cfg.gate_betas
        params = [self.gates[i] for i in idx]
        grads = [self.gates[i].grad for i in idx]
        m = [self.exp_avg[i] for i in idx]
        v = [self.exp_avg_sq[i] for i in idx]
        for i in idx:
            self.count[i] += 1
        lr = self.lr(step)
        sizes = [-lr * math.sqrt(1 - beta2 ** self.count[i]) / (1 - beta1 ** self.count[i]) for i in idx]
        torch._foreach_mul_(m, beta1)
        torch._foreach_add_(m, grads, alpha=1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_add_(denom, self.cfg.gate_eps)
        update = torch._foreach_div(m, denom)
        torch._foreach_mul_(update, sizes)
        torch._foreach_add_(params, update)
        xi = self.xi(step)
        if xi > 0:  # official: `if self.sparse_lambda > 0`
            flat = self.threshold(torch.cat([p.reshape(-1) for p in params]), xi)
            torch._foreach_copy_(
                params, [t.view_as(p) for t, p in zip(flat.split([p.numel() for p in params]), params)]
            )

    def finish(self) -> None:
        """Physically removes zero-gated ranks (outputs unchanged: B·diag(g) folded into B)."""
        if self.removed:
            return
        self.ranks = {n: _nnz(m.sora_gate) for n, m in self.method.lowrank.items()}
        plain = inject(self.method.model, dict(self.method.lowrank), lambda n, m: m.remove_zero_ranks())
        self.method.lowrank.clear()
        self.method.lowrank.update({n: m for n, m in plain.items() if isinstance(m, LowRankLinear)})
        self.removed = True

    def state_dict(self) -> dict:
        return {"count": list(self.count), "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def load_state_dict(self, state: dict) -> None:
        if "count" not in state:
            raise ConfigError(
                "this checkpoint's SoRA gate state predates the official gate step; rerun with force=true"
            )
        self.count = list(state["count"])
        for mine, theirs in ((self.exp_avg, state["exp_avg"]), (self.exp_avg_sq, state["exp_avg_sq"])):
            for t, u in zip(mine, theirs):
                t.copy_(u)


# ------------------------------------------------------------------ long-horizon gate dynamics
@dataclass(frozen=True)
class Survival:
    """What the gate rule does to one scalar gate over a run, whatever the loss (numbers are |g0|).

    worst_case: smallest |g0| that is still nonzero at the end when every Adam step moves the gate
        outward by its full lr_t (constant-sign gradient: |m̂/√v̂| = 1, Adam's step bound in that
        regime); every gate below it is zero at the end. None: no guarantee (lr_t reaches 2ξ_t,
        official rule, or ξ_t, soft threshold: a zeroed gate can regrow).
    zero_grad: the same with zero gradient (the Adam step is 0): the rule alone.
    kept_fraction: worst-case share of N(0, 1) gates that can be nonzero at the end, erfc(b/√2).
    """

    rule: str
    total_steps: int
    gate_lr: float
    xi_max: float
    worst_case: float | None
    zero_grad: float
    kept_fraction: float | None


def all_zero_by(rule: str, g0: float, lrs: np.ndarray, xis: np.ndarray) -> int | None:
    """First 1-based step by which every gate with |g| <= g0 at the start is zero, even pushed
    outward by lr_t every step (as `survival`, when no zero gate can regrow), or None."""
    cum = g0 + np.cumsum(lrs - xis)
    hit = np.flatnonzero(cum < xis if rule == "official" else cum <= 0)
    return int(hit[0]) + 1 if hit.size else None


def schedules(cfg: Config, total_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(lr_t, ξ_t) for steps 1..T, float64: the values `GateStep` uses."""
    warm = warmup_steps(cfg, total_steps)
    t = np.arange(total_steps, dtype=np.float64)  # scheduler index = step - 1
    factor = np.where(
        t < warm, t / max(1, warm), np.maximum(0.0, (total_steps - t) / max(1, total_steps - warm))
    )
    if cfg.xi_schedule == "fixed" or cfg.xi_stages == 1:
        xis = np.full(total_steps, float(cfg.sparse_lambda))
    else:
        xis = np.array([xi_at(cfg, s, total_steps) for s in range(1, total_steps + 1)])
    return cfg.gate_lr * factor, xis


def survival(cfg: Config, total_steps: int) -> Survival:
    """Exact bounds for one scalar gate under `cfg.gate_rule` over `total_steps` (vectorised, O(T)).

    Official rule on x = |g| with the gate pushed outward by lr_t each step: x ← x + lr_t − ξ_t if
    x + lr_t ≥ 2ξ_t, else 0. So a gate alive from the start survives T steps iff
    x0 + S_t ≥ ξ_t for every t, S_t = Σ_{s≤t} (lr_s − ξ_s): bound = max_t (ξ_t − S_t). Soft
    threshold: x ← max(x + lr_t − ξ_t, 0): bound = max_t (−S_t) (alive needs x > 0). A zero gate
    regrows at step t0 iff lr_t0 ≥ 2ξ_t0 (soft: lr_t0 > ξ_t0); if such a regrown gate can last to
    the end, no |g0| is guaranteed to be pruned (worst_case None). A gate landing exactly on ξ is a
    fixed point of the masks (|p| < ξ is false): a measure-zero edge, ignored.
    """
    lrs, xis = schedules(cfg, total_steps)
    cum = np.cumsum(lrs - xis)
    official = cfg.gate_rule == "official"
    floor = xis if official else np.zeros_like(xis)
    worst = float(np.max(floor - cum)) if total_steps else 0.0
    regrow = lrs >= 2 * xis if official else lrs > xis
    if regrow.any():
        # regrown at t0 with x = lr − ξ, then x_t = x + S_t − S_t0 must stay >= floor_t for t >= t0
        suffix_min = np.minimum.accumulate((cum - floor)[::-1])[::-1]
        lasts = (lrs - xis - cum + suffix_min) >= 0 if official else (lrs - xis - cum + suffix_min) > 0
        if (regrow & lasts).any():
            worst = None
    zero_cum = np.cumsum(xis)
    zero = float(np.max(floor + zero_cum)) if total_steps else 0.0
    kept = None if worst is None else math.erfc(max(worst, 0.0) / math.sqrt(2))
    return Survival(cfg.gate_rule, total_steps, cfg.gate_lr, float(xis.max(initial=0.0)), worst, zero, kept)


def _p(x: float) -> str:
    return f"P = {x:.1e}" if x > 0 else "P < 1e-300"


def check_plan(cfg: Config, plan: Plan) -> list[str]:
    """Before a run (no model): ConfigError if it would fail; one-line findings on the gates' fate.

    Pure arithmetic over the planned steps (`survival`), milliseconds for the longest GLUE runs.
    """
    total = int(plan.total_steps)
    if total < 1:
        raise ConfigError(f"SoRA needs at least one optimizer step, the plan has {total}; raise train.epochs")
    findings = []
    if cfg.xi_schedule == "linear" and cfg.xi_stages > total:
        findings.append(
            f"SoRA: xi_stages={cfg.xi_stages} > {total} steps: xi never reaches xi_max={cfg.xi_max}"
        )
    if cfg.sparse_lambda == 0 and (cfg.xi_max or 0) == 0:
        return findings
    s = survival(cfg, total)
    if s.worst_case is None:
        return findings
    lrs, xis = schedules(cfg, total)
    why = (
        f"xi={s.xi_max:g} exceeds the gate lr {cfg.gate_lr:g}"
        if s.xi_max > cfg.gate_lr
        else (f"xi={s.xi_max:g} with gate lr {cfg.gate_lr:g}")
    )
    by4 = all_zero_by(cfg.gate_rule, 4.0, lrs, xis)
    when = f"; gates with |g0| <= 4 are all zero by step {by4}" if by4 is not None else ""
    if s.kept_fraction < 1e-6:
        findings.append(
            f"SoRA ({cfg.gate_rule} rule): every rank is pruned in {total} steps: even pushed outward by the "
            f"full gate lr every step, a gate needs |g0| >= {s.worst_case:.3g} to survive (N(0,1) gates: {_p(s.kept_fraction)}), "
            f"{why}{when}"
        )
    elif s.kept_fraction < 0.5:
        findings.append(
            f"SoRA ({cfg.gate_rule} rule): at least {1 - s.kept_fraction:.0%} of N(0,1) gates are zero after "
            f"{total} steps even pushed outward by the full gate lr (|g0| < {s.worst_case:.3g}), {why}"
        )
    return findings


class GateL1:
    """η · Σ|g| / numel(g) over all gates (official SoRA's optional L1 term)."""

    def __init__(self, gates: list[nn.Parameter], weight: float):
        self.gates, self.weight = gates, weight

    def __call__(self) -> torch.Tensor:
        total = sum(g.numel() for g in self.gates)
        return self.weight * sum(g.abs().sum() for g in self.gates) / total


def apply(
    model: nn.Module, cfg: Config, targets: list[str], heads: list[str], generator: torch.Generator
) -> Method:
    """Wraps every target in a gated low-rank block; gates get their own optimizer (`GateStep`)."""
    head_names = freeze_all_but(model, match_modules(model, heads, "head"))
    found = match_modules(model, targets, "target")
    shapes = {n: in_out_features(m) for n, m in found.items()}  # (d_in, d_out), fixed by the base

    def make(name, module):
        lora = LowRankLinear(module, cfg.rank, cfg.alpha, cfg.dropout, cfg.init, cfg.init_std, name=name)
        return SoraLinear(lora, generator)

    lowrank = inject(model, found, make)
    method = Method(name=cfg.name, model=model, lowrank=lowrank, head=head_names)
    gates = [m.sora_gate for m in lowrank.values()]
    state = {"ranks": {n: m.rank for n, m in lowrank.items()}}
    hook = GateStep(method, cfg)

    def ranks() -> dict[str, int]:
        if hook.removed:
            return hook.ranks
        return {n: _nnz(m.sora_gate) for n, m in method.lowrank.items()}

    def inference() -> int:
        return sum(k * sum(shapes[n]) for n, k in ranks().items())

    def extra_counts() -> dict:
        now = ranks()
        total = sum(state["ranks"].values())
        kept = sum(now.values())
        return {
            "rank_per_module": now,
            "initial_rank_per_module": state["ranks"],
            "gate_rule": cfg.gate_rule,  # also method.gate_rule in the config
            "gate_sparsity": 1 - kept / total,  # fraction of gates (= ranks) that are exactly zero
            "ranks_kept": kept,
            "ranks_initial": total,
            "gates_removed": hook.removed,
            # every rank pruned: nothing for PEFT to load (the trained head is in weights.safetensors)
            "peft_export": "skipped: every rank pruned" if hook.removed and kept == 0 else None,
        }

    method.inference_params = inference
    method.extra_counts = extra_counts
    method.own_params = gates
    method.hooks.append(hook)
    method.params_convention = (
        "trainable = A, B and gates at the initial rank r + task head (# T at start); inference = "
        "Σ nnz(g)·(d_in + d_out) after zero-gated ranks are removed (gates folded into B) + head"
    )
    if cfg.l1_weight > 0:
        method.loss_terms.append(GateL1(gates, cfg.l1_weight))
    add_reg_and_mask(method, cfg, generator, mask_first=True)  # the mask acts before the gate step
    from adapters import export  # late: export imports peft

    def exporter(folder):
        if hook.removed and not method.lowrank:  # every rank pruned: a valid result, not a failure
            return None
        return export.peft_lora(method, folder)

    method.exporter = exporter
    return method
