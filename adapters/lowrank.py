"""The low-rank block shared by the LoRA family, and its diagnostics.

    y = W x + (α/R) · B A x,   A ∈ R^{R×d_in} random,  B ∈ R^{d_out×R} zero  ⇒  ΔW = (α/R)·B A = 0 at step 0.

W is frozen. Works around `nn.Linear` (weight d_out×d_in) and GPT-2's `Conv1D` (weight d_in×d_out).
Methods that need something between A and B (LoDA's bottleneck, SoRA's gate) compose this block
rather than subclass it. Parameters are named `lora_A` / `lora_B` so that freezing, counting,
regularizers and masks go by name.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from core import ConfigError

try:  # GPT-2's fused projections; transformers is a core dependency, but keep the import local
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover
    Conv1D = ()


def in_out_features(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if Conv1D and isinstance(module, Conv1D):
        return module.weight.shape[0], module.weight.shape[1]
    raise ConfigError(
        f"cannot adapt {type(module).__name__}; target patterns must select Linear or Conv1D layers"
    )


def make_factors(
    rank: int,
    d_in: int,
    d_out: int,
    like: torch.Tensor,
    init: str = "kaiming",
    init_std: float = 0.02,
    name: str = "",
) -> tuple[nn.Parameter, nn.Parameter]:
    """A (R, d_in) random and B (d_out, R) zero on `like`'s device and dtype, after checking R.

    Shared by every block with LoRA factors (`LowRankLinear`, the fused-placement branches, LoDA).
    """
    if rank < 1:
        raise ConfigError(f"rank must be >= 1, got {rank}; set method.rank to a positive integer")
    if rank > min(d_in, d_out):
        raise ConfigError(
            f"rank {rank} exceeds min(d_in, d_out) = {min(d_in, d_out)} of module {name!r}; "
            f"lower method.rank or narrow model.target_modules"
        )
    lora_A = nn.Parameter(torch.empty(rank, d_in, device=like.device, dtype=like.dtype))
    lora_B = nn.Parameter(torch.zeros(d_out, rank, device=like.device, dtype=like.dtype))
    if init == "kaiming":  # PEFT's default: Kaiming-uniform with a = √5
        nn.init.kaiming_uniform_(lora_A, a=math.sqrt(5))
    elif init == "gaussian":  # RM-LoRA reference code: A ~ N(0, 0.02²)
        nn.init.normal_(lora_A, std=init_std)
    else:
        raise ConfigError(f"unknown method.init {init!r}; valid: kaiming, gaussian")
    return lora_A, lora_B


class LowRankLinear(nn.Module):
    """Frozen `base` plus a scaled low-rank update; see the module docstring for the math."""

    def __init__(
        self,
        base: nn.Module,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        init: str = "kaiming",
        init_std: float = 0.02,
        name: str = "",
    ):
        super().__init__()
        d_in, d_out = in_out_features(base)
        lora_A, lora_B = make_factors(rank, d_in, d_out, base.weight, init, init_std, name)
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.rank, self.scaling = rank, alpha / rank
        self.lora_A, self.lora_B = lora_A, lora_B
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)  # (..., d_out)
        return self.base(x) + self.scaling * update

    def delta_weight(self) -> torch.Tensor:
        """ΔW = (α/R)·B A, shape (d_out, d_in) in nn.Linear convention."""
        return self.scaling * self.lora_B @ self.lora_A


def inject(model: nn.Module, targets: dict[str, nn.Module], make) -> dict[str, nn.Module]:
    """Replaces each module in `targets` (qualified name -> module) by `make(name, module)`."""
    wrapped = {}
    for name, module in targets.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        wrapped[name] = make(name, module)
        setattr(parent, child, wrapped[name])
    return wrapped


@torch.no_grad()
def spectrum(module: nn.Module) -> torch.Tensor:
    """Singular values of ΔW = s·B A from the R×R core (exact, float64, without forming ΔW).

    B = Q_B R_B and Aᵀ = Q_A R_A (thin QR) give ΔW = s·Q_B (R_B R_Aᵀ) Q_Aᵀ, so σ(ΔW) = |s|·σ(R_B R_Aᵀ).
    """
    a, b = module.lora_A.double(), module.lora_B.double()
    r_b = torch.linalg.qr(b).R
    r_a = torch.linalg.qr(a.T).R
    return abs(module.scaling) * torch.linalg.svdvals(r_b @ r_a.T)


def lowrank_diagnostics(modules: dict[str, nn.Module], rtol: float | None = None) -> dict:
    """Per module and mean: numerical rank of ΔW and ‖ΔWΔWᵀ − I‖²_F.

    rank = #{σ_i > rtol·σ_max}; rtol defaults to max(d_out, d_in)·eps(float32) (NumPy's
    `matrix_rank` rule at the precision the factors are trained in). The orthogonality loss uses
    ‖ΔWΔWᵀ − I_{d_out}‖²_F = Σσ⁴ − 2Σσ² + d_out = Σ_{i≤R}(σ_i² − 1)² + (d_out − R), exact in float64.
    Its floor `orth_floor` = max(d_out − R, 0) is what the d_out − R null directions of a rank-R ΔW
    contribute whatever training does (e.g. 68 of Table 5's 95 for R = 32 on CIFAR-100's 100 classes).
    """
    per_module = {}
    for name, m in modules.items():
        d_out, d_in = m.lora_B.shape[0], m.lora_A.shape[1]
        tol = rtol if rtol is not None else max(d_out, d_in) * torch.finfo(torch.float32).eps
        s = spectrum(m)
        rank = int((s > tol * s.max()).sum()) if s.max() > 0 else 0
        orth = float((s**4).sum() - 2 * (s**2).sum() + d_out)
        per_module[name] = {
            "rank": rank,
            "max_rank": m.rank,
            "orth_loss": orth,
            "orth_floor": max(d_out - m.rank, 0),
            "rank_rtol": tol,
            "sigma_max": float(s.max()),
        }
    n = max(len(per_module), 1)
    return {
        "delta_w": "ΔW = (alpha/R)·B A (scaling included)",
        "rank_rule": "sigma_i > rank_rtol * sigma_max",
        "mean_rank": sum(v["rank"] for v in per_module.values()) / n,
        "mean_orth_loss": sum(v["orth_loss"] for v in per_module.values()) / n,
        "mean_orth_floor": sum(v["orth_floor"] for v in per_module.values()) / n,
        "modules": per_module,
    }
