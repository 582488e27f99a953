"""R-LoRA's orthogonality regularizer (RM-LoRA paper, Eq. 10), usable on any (A, B) low-rank method.

    paper:     Reg = Σ_modules ‖A Aᵀ − I_R‖²_F + ‖Bᵀ B − I_R‖²_F
    reference: Reg = (1 / 2M) Σ_modules (‖A Aᵀ − I_R‖_F + ‖Bᵀ B − I_R‖_F)   (M modules)

The reference form is what the authors' code does (AdaLoRA's regularizer: non-squared norms,
averaged over the 2M matrices; REFERENCE.md). The task loss gets `reg_weight · Reg`.
"""

from __future__ import annotations

import torch
from torch import nn

FORMS = ("paper", "reference")


def _gram_gap(m: torch.Tensor) -> torch.Tensor:
    """G − I for the R×R Gram matrix G of `m` (rows of A, or columns of B via m = Bᵀ)."""
    m = m.float()
    gram = m @ m.T
    return gram - torch.eye(gram.shape[0], device=m.device, dtype=gram.dtype)


def orthogonality_penalty(modules: list[nn.Module], form: str = "paper") -> torch.Tensor:
    """Reg(A, B) over `modules` (each with `lora_A` (R, d_in) and `lora_B` (d_out, R))."""
    gaps = [g for m in modules for g in (_gram_gap(m.lora_A), _gram_gap(m.lora_B.T))]
    if form == "paper":
        return sum((g**2).sum() for g in gaps)
    if form == "reference":
        return sum(torch.linalg.matrix_norm(g) for g in gaps) / len(gaps)
    raise ValueError(f"unknown reg_form {form!r}; valid: {', '.join(FORMS)}")


class OrthogonalityRegularizer:
    """Loss term `weight · Reg(A, B)` over the given modules."""

    def __init__(self, modules: list[nn.Module], weight: float, form: str = "paper"):
        self.modules, self.weight, self.form = modules, weight, form

    def __call__(self) -> torch.Tensor:
        return self.weight * orthogonality_penalty(self.modules, self.form)
