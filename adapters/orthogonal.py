"""R-LoRA's orthogonality regularizer (RM-LoRA paper, Eq. 10), usable on any (A, B) low-rank method.

    paper:     Reg = Σ_modules ‖A Aᵀ − I_R‖²_F + ‖Bᵀ B − I_R‖²_F
    reference: Reg = (1 / 2M) Σ_modules (‖A Aᵀ − I_R‖_F + ‖Bᵀ B − I_R‖_F)   (M modules)

The reference form is what the authors' code does (AdaLoRA's regularizer: non-squared norms,
averaged over the 2M matrices; REFERENCE.md). The task loss gets `reg_weight · Reg`.

Fast path (default): both terms are Gram gaps G − I of an R×d "row matrix" (A itself, or Bᵀ, since
Bᵀ B = (Bᵀ)(Bᵀ)ᵀ). The row matrices of all modules are grouped by shape, stacked to (n, R, d) and
their Grams computed by one batched product per group (`torch.bmm`), so a DeBERTa-v3-base with 72
adapted linears takes two batched products instead of 144 small matmuls (and as many subtractions,
norms and sums). `orthogonality_penalty_loop` is the plain per-module loop, kept as the reference
(`method.fast=false`); the two agree to float tolerance (summation order differs), values and
gradients (tests/test_fastpath.py). The loss term runs in float32 with autocast off: under the
runner's bf16 autocast the Gram products would otherwise be computed in bf16 (a gap G − I of
‖·‖ ≈ 1e-2 then carries bf16's 8-bit mantissa error).
"""

from __future__ import annotations

import torch
from torch import nn

FORMS = ("paper", "reference")


def _check_form(form: str) -> None:
    if form not in FORMS:
        raise ValueError(f"unknown reg_form {form!r}; valid: {', '.join(FORMS)}")


def _gram_gap(m: torch.Tensor) -> torch.Tensor:
    """G − I for the R×R Gram matrix G of `m` (rows of A, or columns of B via m = Bᵀ)."""
    m = m.float()
    gram = m @ m.T
    return gram - torch.eye(gram.shape[0], device=m.device, dtype=gram.dtype)


def orthogonality_penalty_loop(modules: list[nn.Module], form: str = "paper") -> torch.Tensor:
    """Reg(A, B), one module at a time (the reference implementation of `orthogonality_penalty`)."""
    _check_form(form)
    gaps = [g for m in modules for g in (_gram_gap(m.lora_A), _gram_gap(m.lora_B.T))]
    if form == "paper":
        return sum((g**2).sum() for g in gaps)
    return sum(torch.linalg.matrix_norm(g) for g in gaps) / len(gaps)


def row_matrix_groups(modules: list[nn.Module]) -> list[list[torch.Tensor]]:
    """The R×d row matrices (A, Bᵀ) of all modules, grouped by shape, device and dtype."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for m in modules:
        for rows in (m.lora_A, m.lora_B.mT):
            groups.setdefault((rows.shape, rows.device, rows.dtype), []).append(rows)
    return list(groups.values())


def orthogonality_penalty(modules: list[nn.Module], form: str = "paper", fast: bool = True) -> torch.Tensor:
    """Reg(A, B) over `modules` (each with `lora_A` (R, d_in) and `lora_B` (d_out, R)).

    `fast`: one batched Gram product per group of equally shaped factors (module docstring);
    False: the per-module loop `orthogonality_penalty_loop`.
    """
    if not fast:
        return orthogonality_penalty_loop(modules, form)
    _check_form(form)
    total, count = None, 0
    for group in row_matrix_groups(modules):
        stacked = torch.stack(group).float()  # (n, R, d)
        # a fresh eye per call: one tiny kernel eager, folded into the subtraction when compiled (a
        # cached tensor would be global state, which torch.compile's CUDA graphs refuse)
        gap = torch.bmm(stacked, stacked.mT) - torch.eye(stacked.shape[1], device=stacked.device)
        if form == "paper":
            term = gap.pow(2).sum()
        else:
            term = torch.linalg.matrix_norm(gap).sum()  # Frobenius norm per matrix, (n,) -> sum
        total = term if total is None else total + term
        count += len(group)
    if total is None:
        return torch.zeros(())
    return total if form == "paper" else total / count


class OrthogonalityRegularizer:
    """Loss term `weight · Reg(A, B)` over the given modules (`fast`: batched, see the module docstring)."""

    def __init__(self, modules: list[nn.Module], weight: float, form: str = "paper", fast: bool = True):
        _check_form(form)
        self.modules, self.weight, self.form, self.fast = modules, weight, form, fast

    def __call__(self) -> torch.Tensor:
        # in float32 also under the runner's bf16 autocast (which would run the Gram products in bf16)
        device = self.modules[0].lora_A.device.type if self.modules else "cpu"
        with torch.autocast(device, enabled=False):
            return self.weight * orthogonality_penalty(self.modules, self.form, self.fast)
