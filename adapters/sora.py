"""SoRA: sparse low-rank adaptation (Ding et al., 2023, arXiv:2311.11696). A gate g on the rank.

    y = W x + (α/r) · B (g ⊙ (A x)),   A Kaiming-uniform, B = 0, g ~ N(0, 1) ∈ R^r

The factors are a `LowRankLinear` (composition: `SoraLinear.lora`), the gate sits between A and B.
Gates are not stepped by the runner's AdamW: they are `Method.own_params`, stepped by `GateStep`,
their own Adam (lr `gate_lr`, no weight decay) followed by soft-thresholding at ξ itself (official
code, `SparseAdamW`: not lr·ξ):

    g ← sign(g) · max(|g| − ξ, 0)

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

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adapters.base import ConfigError, Method, StepHook, freeze_all_but, match_modules
from adapters.lora import add_reg_and_mask, mask_directions
from adapters.lowrank import LowRankLinear, in_out_features, inject
from adapters.masking import MODES
from adapters.orthogonal import FORMS

XI_SCHEDULES = ("fixed", "linear")


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
    gate_lr: float = 1e-3  # lr of the gates' own Adam
    gate_betas: tuple[float, float] = (0.9, 0.999)
    gate_eps: float = 1e-8
    l1_weight: float = 0.0  # η of the optional L1 loss term on the gates
    xi_schedule: str = "fixed"  # fixed | linear (scheduled ξ)
    xi_max: float | None = None  # linear schedule: final ξ
    xi_stages: int = 5  # linear schedule: number of equal stages
    reg_weight: float = 0.0  # R-LoRA's regularizer on A, B (0: off)
    reg_form: str = "paper"
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


class GateStep(StepHook):
    """The gates' own Adam step, then soft-thresholding at ξ; removes zero ranks in `finish`."""

    def __init__(self, method: Method, cfg: Config):
        self.method, self.cfg = method, cfg
        self.gates = [m.sora_gate for m in method.lowrank.values()]
        self.optimizer = torch.optim.Adam(
            self.gates, lr=cfg.gate_lr, betas=tuple(cfg.gate_betas), eps=cfg.gate_eps, weight_decay=0.0
        )
        self.total_steps = 1
        self.removed = False

    def setup(self, plan) -> None:
        self.total_steps = max(int(plan.total_steps), 1)

    def xi(self, step: int) -> float:
        """ξ at 1-based `step`: fixed, or raised linearly over `xi_stages` equal stages."""
        cfg = self.cfg
        if cfg.xi_schedule == "fixed" or cfg.xi_stages == 1:
            return cfg.sparse_lambda
        stage = min((step - 1) * cfg.xi_stages // self.total_steps, cfg.xi_stages - 1)
        return cfg.sparse_lambda + (cfg.xi_max - cfg.sparse_lambda) * stage / (cfg.xi_stages - 1)

    def after_step(self, optimizer, step: int = 0) -> None:
        self.optimizer.step()
        xi = self.xi(step)
        with torch.no_grad():
            for g in self.gates:
                g.copy_(torch.sign(g) * torch.clamp(g.abs() - xi, min=0.0))

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
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


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
        return {
            "rank_per_module": now,
            "initial_rank_per_module": state["ranks"],
            "gate_sparsity": 1 - sum(now.values()) / total,
            "gates_removed": hook.removed,
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

    method.exporter = lambda folder: export.peft_lora(method, folder)
    return method
