"""R-LoRA's orthogonality regularizer (RM-LoRA paper, Eq. 10), usable on any (A, B) low-rank method.

    paper:     Reg = Σ_modules ‖A Aᵀ − I_R‖²_F + ‖Bᵀ B − I_R‖²_F
    reference: Reg = (1 / 2M) Σ_modules (‖A Aᵀ − I_R‖_F + ‖Bᵀ B − I_R‖_F)   (M modules)

The reference form is what the authors' code does (AdaLoRA's regularizer: non-squared norms,
averaged over the 2M matrices; REFERENCE.md). The task loss gets `reg_weight · Reg`.
Checked against github.com/yz-mao/RM-LoRA, RM-LoRA/adalora_trainer.py (`compute_loss` calls
`compute_svd_orth_regu` for their `lora_type` v1/v2): for every parameter named lora_A (Gram p pᵀ)
or lora_B (pᵀ p) it sums `torch.norm(G − I, p="fro")` and divides by the number of such
parameters, i.e. A and B averaged together over 2M; `loss = loss + reg_orth_coef · Reg` before
backward (so before clipping), `--reg_orth_coef 0.1` in RM-LoRA/run_glue.sh. The same here.

Fast path (default): both terms are Gram gaps G − I of an R×d "row matrix" (A itself, or Bᵀ, since
Bᵀ B = (Bᵀ)(Bᵀ)ᵀ). The row matrices of all modules are grouped by shape, stacked to (n, R, d) and
their Grams computed by one batched product per group (`torch.bmm`), so a DeBERTa-v3-base with 72
adapted linears takes two batched products instead of 144 small matmuls (and as many subtractions,
norms and sums). `orthogonality_penalty_loop` is the plain per-module loop, kept as the reference
(`method.fast=false`); the two agree to float tolerance (summation order differs), values and
gradients (tests/test_fastpath.py). The loss term runs in float32 with autocast off: under the
runner's bf16 autocast the Gram products would otherwise be computed in bf16 (a gap G − I of
‖·‖ ≈ 1e-2 then carries bf16's 8-bit mantissa error).

Analytic gradient (the runner's path when `fast`): the term never enters autograd. After the task
loss's backward, `OrthogonalityRegularizer.add_grad` adds the closed-form gradient to the factors'
`.grad`, one batched product per group of equally shaped factors (G − I is symmetric):

    paper:      ∂‖A Aᵀ − I‖²_F / ∂A = 4 (A Aᵀ − I) A        ∂‖Bᵀ B − I‖²_F / ∂B = 4 B (Bᵀ B − I)
    reference:  ∂‖A Aᵀ − I‖_F  / ∂A = 2 (A Aᵀ − I) A / ‖A Aᵀ − I‖_F     (0 where the norm is 0,
                as autograd's norm backward gives), and the same for B.

B's gradient is computed in B's own (d_out, R) layout, so the final `torch._foreach_add_` pairs
equally strided tensors (CUDA's fused multi-tensor kernel). What this saves under the compiled
runner: the term's own forward and backward graphs, and one gradient accumulation per factor (an
add kernel each: 144 on DeBERTa-v3-base) that autograd runs to merge its gradient with the task
loss's. `__call__` (the value through autograd) stays for everything else: tests, `fast=false`.
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


def orthogonality_penalty_loop(modules: list[nn.Module], form: str = "reference") -> torch.Tensor:
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


def orthogonality_penalty(
    modules: list[nn.Module], form: str = "reference", fast: bool = True
) -> torch.Tensor:
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


def factor_groups(modules: list[nn.Module]) -> list[tuple[bool, list[nn.Parameter]]]:
    """The factors of all modules grouped by (side, shape, device, dtype): (is A, [factors])."""
    groups: dict[tuple, list[nn.Parameter]] = {}
    for m in modules:
        for attr in ("lora_A", "lora_B"):
            p = getattr(m, attr)
            groups.setdefault((attr == "lora_A", p.shape, p.device, p.dtype), []).append(p)
    return [(key[0], params) for key, params in groups.items()]


@torch.no_grad()
def add_penalty_grad(
    groups: list[tuple[bool, list[nn.Parameter]]], form: str, coef: float, eyes: dict | None = None
) -> torch.Tensor:
    """Adds `coef · ∇Reg` to every factor's `.grad` (created where None); returns Reg (float32, no graph).

    `groups` as `factor_groups` gives them; `eyes` caches the identity per (R, device)."""
    _check_form(form)
    eyes = {} if eyes is None else eyes
    count = sum(len(params) for _, params in groups)
    total = None
    for is_a, params in groups:
        f = torch.stack(params).float()  # A: (n, R, d_in); B: (n, d_out, R)
        gram = torch.bmm(f, f.mT) if is_a else torch.bmm(f.mT, f)  # (n, R, R)
        rank = gram.shape[1]
        eye = eyes.get((rank, f.device))
        if eye is None:
            eye = eyes[(rank, f.device)] = torch.eye(rank, device=f.device)
        gap = gram - eye
        if form == "paper":
            value = gap.pow(2).sum()
            gap.mul_(4 * coef)
        else:
            norms = torch.linalg.matrix_norm(gap)  # (n,)
            value = norms.sum() / count
            inverse = torch.where(norms > 0, norms.reciprocal(), torch.zeros_like(norms))
            gap.mul_(inverse.mul_(2 * coef / count)[:, None, None])
        grad = torch.bmm(gap, f) if is_a else torch.bmm(f, gap)  # in the factor's own layout
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        torch._foreach_add_([p.grad for p in params], list(grad.to(params[0].dtype).unbind(0)))
        total = value if total is None else total + value
    return total if total is not None else torch.zeros(())


class OrthogonalityRegularizer:
    """Loss term `weight · Reg(A, B)` over the given modules (`fast`: batched, and the runner adds its
    gradient analytically through `add_grad`; see the module docstring)."""

    def __init__(self, modules: list[nn.Module], weight: float, form: str = "reference", fast: bool = True):
        _check_form(form)
        self.modules, self.weight, self.form, self.fast = modules, weight, form, fast
        self._groups: list | None = None
        self._eyes: dict = {}

    def describe(self) -> dict:
        """What the record says about this term: the form, λ, and the formula in words."""
        count = 2 * len(self.modules)
        what = {
            "reference": f"mean over the {count} factors of the non-squared ‖AAᵀ−I‖_F, ‖BᵀB−I‖_F "
            "(RM-LoRA code, AdaLoRA's form)",
            "paper": f"sum over the {len(self.modules)} modules of ‖AAᵀ−I‖²_F + ‖BᵀB−I‖²_F (Eq. 10)",
        }[self.form]
        return {"form": self.form, "weight": self.weight, "term": what}

    @property
    def analytic(self) -> bool:
        """True: the runner calls `add_grad` instead of differentiating `__call__` (Method.add_loss_grads)."""
        return self.fast

    def add_grad(self, scale: float = 1.0) -> torch.Tensor:
        """Adds `scale · ∇(weight · Reg)` to the factors' `.grad`; returns `weight · Reg` (no graph)."""
        if self._groups is None:  # the factors stay the same Parameter objects for the whole run
            self._groups = factor_groups(self.modules)
        return self.weight * add_penalty_grad(self._groups, self.form, scale * self.weight, self._eyes)

    def __call__(self) -> torch.Tensor:
        # in float32 also under the runner's bf16 autocast (which would run the Gram products in bf16)
        device = self.modules[0].lora_A.device.type if self.modules else "cpu"
        with torch.autocast(device, enabled=False):
            return self.weight * orthogonality_penalty(self.modules, self.form, self.fast)
