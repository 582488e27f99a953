"""Where low-rank updates sit: whole modules, or blocks of a fused projection (GPT-2's `c_attn`).

An entry of `model.target_modules` is either a regex (the whole module gets one low-rank update, as
PEFT does) or a mapping that splits a fused projection into equal output blocks and adapts some:

    - module: '.*\\.attn\\.c_attn'    # GPT-2: Conv1D d -> 3d, output h = [q | k | v]
      blocks: [q, k, v]
      adapt: [q, v]                   # LoRA/LoDA's GPT-2 setting: k frozen, q and v own (A, B) each

A split module becomes a `FusedLowRank`:

    h = base(x);   h_b += Δ_b(x)  for every adapted block b,   Δ_b(x) = (α/r)·B_b A_b x  (LoRA)

with A_b ∈ R^{r×d_in}, B_b ∈ R^{d_b×r} (d_b = d_out / #blocks). Each branch is a sub-module named
after its block (`...c_attn.q`, `...c_attn.v`) exposing `lora_A`, `lora_B`, `scaling`, `rank`,
`delta_weight()`, so regularizers, masks and diagnostics see two (A, B) pairs per layer. Any
branch with that interface plugs in (LoDA's non-linear branch does: adapters/loda.py).

Stock PEFT cannot express this (one LoRA on `c_attn` shares A across q, k, v), but the trained
q/v pair *is* exactly one PEFT LoRA of rank 2r on the fused module (`FusedLowRank.peft_equivalent`):

    A = [A_q; A_v] (2r×d_in),   B = [[B_q, 0], [0, 0], [0, B_v]] (3d×2r),
    B A = [B_q A_q; 0; B_v A_v]  ⇒  ΔW_fused = s·B A with the same s (PEFT: lora_alpha = s·2r).

The forward uses that form when every branch is a plain LoRA branch (`FusedLowRank._fused_delta`:
two matmuls per fused module, no split and no concatenation of the d_out-wide output; measured on
GPT-2 medium in docs/PERFORMANCE.md); `fuse = False` (set from `method.fast=false`) keeps the
per-branch loop. LoDA's branches (Δ = s·B (z + f1(z)), z = A x) take the fused form too, with f1
applied to each branch's columns of z between the two matmuls; LoDA+ (f2 over d_out) takes the loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from adapters.base import match_modules
from adapters.lowrank import Conv1D, in_out_features, inject, make_factors
from core import ConfigError


@dataclass(frozen=True)
class Split:
    """One split target: modules matching `module`, output cut into `blocks`, `adapt` adapted."""

    module: str
    blocks: tuple[str, ...]
    adapt: tuple[str, ...]

    @classmethod
    def parse(cls, entry: Mapping) -> Split:
        entry = dict(entry)
        unknown = sorted(set(entry) - {"module", "blocks", "adapt"})
        if unknown or "module" not in entry:
            raise ConfigError(
                f"split target {entry} needs keys module, blocks, adapt (got unknown {unknown}); "
                f"fix model.target_modules"
            )
        blocks = tuple(entry.get("blocks") or ())
        adapt = tuple(entry.get("adapt") or ())
        bad = [b for b in adapt if b not in blocks]
        if not blocks or not adapt or bad or len(set(adapt)) != len(adapt) or len(set(blocks)) != len(blocks):
            raise ConfigError(
                f"split target {entry['module']!r}: adapt {list(adapt)} must be distinct names "
                f"among blocks {list(blocks)}; fix model.target_modules"
            )
        if "base" in blocks:
            raise ConfigError("split target: a block may not be called 'base'; rename it")
        return cls(str(entry["module"]), blocks, adapt)


def parse_targets(targets) -> tuple[list[str], list[Split]]:
    """Regex strings (whole modules) and `Split`s from `model.target_modules` entries."""
    whole, splits = [], []
    for t in targets:
        if isinstance(t, str):
            whole.append(t)
        elif isinstance(t, Mapping) or hasattr(t, "items"):
            splits.append(Split.parse(t))
        else:
            raise ConfigError(
                f"target {t!r} is neither a regex nor a split mapping; fix model.target_modules"
            )
    return whole, splits


class LowRankBranch(nn.Module):
    """Δ(x) = (α/r)·B A x for one output block; the base output is added by the owner."""

    linear = True  # Δ is x ↦ ΔW x: it folds into the base weight and into a PEFT LoRA
    fusable = True  # Δ = s·B inner(A x): FusedLowRank may run the branches as one matmul pair
    inner = None  # the map between A and B (None: identity)

    def __init__(
        self,
        d_in: int,
        d_out: int,
        rank: int,
        alpha: float,
        like: torch.Tensor,
        dropout: float = 0.0,
        init: str = "kaiming",
        init_std: float = 0.02,
        name: str = "",
    ):
        super().__init__()
        self.lora_A, self.lora_B = make_factors(rank, d_in, d_out, like, init, init_std, name)
        self.rank, self.scaling = rank, alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # same ops in the same order as LowRankLinear: a whole-module LoRA and a branch agree bitwise
        return self.scaling * F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        """ΔW_b = (α/r)·B A, shape (d_b, d_in) in nn.Linear convention."""
        return self.scaling * self.lora_B @ self.lora_A


@dataclass
class PeftLora:
    """One PEFT-style LoRA on the fused module: ΔW = scaling·lora_B @ lora_A (nn.Linear convention).

    For PEFT's `LoraConfig`: r = rank, lora_alpha = alpha (= scaling·rank, so PEFT's alpha/r equals
    `scaling`), fan_in_fan_out = True for GPT-2's Conv1D.
    """

    lora_A: torch.Tensor  # (Σ r_b, d_in)
    lora_B: torch.Tensor  # (d_out, Σ r_b), block-structured: zero rows for unadapted blocks
    scaling: float
    rank: int
    alpha: float
    fan_in_fan_out: bool


class FusedLowRank(nn.Module):
    """Frozen fused `base` (d_in → n·d_b) plus one branch per adapted output block (module docstring)."""

    def __init__(
        self, base: nn.Module, blocks: tuple[str, ...], branches: dict[str, nn.Module], fuse: bool = True
    ):
        super().__init__()
        d_in, d_out = in_out_features(base)
        if d_out % len(blocks):
            raise ConfigError(
                f"cannot split {d_out} outputs into {len(blocks)} equal blocks {list(blocks)}; fix model.target_modules"
            )
        self.base, self.blocks, self.block_size = base, tuple(blocks), d_out // len(blocks)
        for p in base.parameters():
            p.requires_grad_(False)
        self.adapted = tuple(b for b in blocks if b in branches)
        self.fuse = fuse  # False: the per-branch split / add / cat loop (the reference; method.fast=false)
        for name in self.adapted:
            self.add_module(name, branches[name])
        self.fusable = _fusable([branches[b] for b in self.adapted])
        self.has_inner = any(getattr(branches[b], "inner", None) is not None for b in self.adapted)

    def branch(self, block: str) -> nn.Module:
        return self.get_submodule(block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fuse and self.fusable:
            return self.base(x) + self._fused_delta(x)
        parts = list(self.base(x).split(self.block_size, dim=-1))  # (..., d_b) each
        for i, block in enumerate(self.blocks):
            if block in self.adapted:
                parts[i] = parts[i] + self.branch(block)(x)
        return torch.cat(parts, dim=-1)

    def _fused_delta(self, x: torch.Tensor) -> torch.Tensor:
        """s · B_fused inner(A_cat x): two matmuls for all blocks, as one rank-Σr LoRA (`peft_equivalent`).

        A_cat = [A_q; A_v] (Σr × d_in); B_fused (d_out × Σr) holds each B_b in its block's rows and
        its own columns, zeros elsewhere, rebuilt from the live factors each call (autograd sees the
        factors; the zeros cost one small copy). One dropout draw on x is shared by the branches,
        as loralib's MergedLinear does (the LoRA reference code for GPT-2's c_attn). A branch's
        `inner` (LoDA's z + f1(z)) acts on its own r columns of z = A_cat x, between the matmuls.
        """
        branches = {b: self.branch(b) for b in self.adapted}
        first = branches[self.adapted[0]]
        a = torch.cat([br.lora_A for br in branches.values()]) if len(branches) > 1 else first.lora_A
        z = F.linear(first.dropout(x), a)  # (..., Σr)
        if self.has_inner:  # LoDA
            inner = functools.partial(_inners, list(branches.values()))
            # compiled: recomputed in the backward from z (cheap: Σr columns), so that the graph saves z
            # instead of every intermediate of f1 (norm statistics, σ inputs): under CUDA graphs each saved
            # tensor is host work at every replay (tiny GPT-2 LoDA block: 66 saved -> 46, LoRA 38)
            z = checkpoint(inner, z, use_reentrant=False) if torch.compiler.is_compiling() else inner(z)
        total, col, rows = a.shape[0], 0, []
        for block in self.blocks:
            if block in branches:
                b = branches[block].lora_B
                rows.append(F.pad(b, (col, total - col - b.shape[1])))
                col += b.shape[1]
            else:
                rows.append(a.new_zeros(self.block_size, total))
        return first.scaling * F.linear(z, torch.cat(rows))

    def _require_linear(self, what: str) -> None:
        nonlinear = [b for b in self.adapted if not getattr(self.branch(b), "linear", False)]
        if nonlinear:
            raise ConfigError(
                f"{what}: branches {nonlinear} are non-linear (Δh is not x ↦ ΔW x), so they have no "
                f"single-matrix form; export them in the method's own format instead"
            )

    def delta_weight(self) -> torch.Tensor:
        """The fused ΔW (d_out, d_in), zero on unadapted blocks (linear branches only)."""
        self._require_linear("delta_weight")
        d_in, _ = in_out_features(self.base)
        rows = [
            self.branch(b).delta_weight()
            if b in self.adapted
            else torch.zeros(
                self.block_size, d_in, device=self.base.weight.device, dtype=self.base.weight.dtype
            )
            for b in self.blocks
        ]
        return torch.cat(rows, dim=0)

    @torch.no_grad()
    def peft_equivalent(self) -> PeftLora:
        """The exactly equivalent single LoRA on the fused module (module docstring).

        Rank Σ r_b; scaling = the first branch's; a branch with another scaling s_b has its B block
        multiplied by s_b / s (so ΔW is unchanged).
        """
        self._require_linear("peft_equivalent")
        first = self.branch(self.adapted[0])
        scaling = first.scaling
        ranks = [self.branch(b).rank for b in self.adapted]
        total = sum(ranks)
        w = self.base.weight
        lora_A = torch.cat([self.branch(b).lora_A for b in self.adapted], dim=0).detach().clone()
        lora_B = torch.zeros(len(self.blocks) * self.block_size, total, device=w.device, dtype=w.dtype)
        col = 0
        for b, r in zip(self.adapted, ranks):
            i = self.blocks.index(b)
            branch = self.branch(b)
            factor = (
                branch.lora_B if branch.scaling == scaling else branch.lora_B * (branch.scaling / scaling)
            )
            lora_B[i * self.block_size : (i + 1) * self.block_size, col : col + r] = factor
            col += r
        fan_in_fan_out = bool(Conv1D) and isinstance(self.base, Conv1D)
        return PeftLora(lora_A, lora_B, scaling, total, scaling * total, fan_in_fan_out)

    @torch.no_grad()
    def merge(self) -> nn.Module:
        """Folds ΔW into the base weight and returns the base module (put it back in the model)."""
        delta = self.delta_weight().to(self.base.weight.dtype)
        if bool(Conv1D) and isinstance(self.base, Conv1D):
            self.base.weight += delta.T  # Conv1D weight is (d_in, d_out): h = x W + b
        else:
            self.base.weight += delta
        return self.base


def _inners(branches: list[nn.Module], z: torch.Tensor) -> torch.Tensor:
    """Each branch's `inner` on its own r columns of z = A_cat x (identity where it has none)."""
    parts = z.split([br.rank for br in branches], dim=-1)
    return torch.cat([p if br.inner is None else br.inner(p) for p, br in zip(parts, branches)], -1)


def _fusable(branches: list[nn.Module]) -> bool:
    """Every branch of the form Δ = s·B inner(A x) (`fusable`: LoRA, LoDA) with one scaling and one
    dropout rate."""
    if not all(getattr(br, "fusable", False) for br in branches):
        return False
    rate = lambda d: d.p if isinstance(d, nn.Dropout) else 0.0  # noqa: E731
    return len({(br.scaling, rate(br.dropout)) for br in branches}) == 1


BranchFactory = Callable[[str, int, int, torch.Tensor], nn.Module]


def place(
    model: nn.Module,
    targets,
    make_whole: Callable[[str, nn.Module], nn.Module],
    make_branch: BranchFactory,
    fuse: bool = True,
) -> dict[str, nn.Module]:
    """Wraps every target in `model`; returns the low-rank modules by qualified name.

    Regex targets: `make_whole(name, module)` replaces the module and is the low-rank entry.
    Split targets: a `FusedLowRank` replaces the module; `make_branch(name, d_in, d_b, weight)`
    builds each adapted block's branch, and each branch (`<module>.<block>`) is an entry. `fuse`:
    whether fusable blocks run as one matmul pair (`FusedLowRank._fused_delta`) or the branch loop.
    """
    whole, splits = parse_targets(targets)
    whole_found = match_modules(model, whole, "target")
    lowrank: dict[str, nn.Module] = {}
    split_found: dict[str, tuple[nn.Module, Split]] = {}
    for split in splits:
        for name, module in match_modules(model, [split.module], "target").items():
            if name in whole_found or name in split_found:
                raise ConfigError(f"module {name!r} is matched by two model.target_modules entries; keep one")
            split_found[name] = (module, split)
    lowrank.update(inject(model, whole_found, make_whole))

    def make_fused(name, module):
        split = split_found[name][1]
        d_in, d_out = in_out_features(module)
        d_b = d_out // len(split.blocks)
        branches = {b: make_branch(f"{name}.{b}", d_in, d_b, module.weight) for b in split.adapt}
        return FusedLowRank(module, split.blocks, branches, fuse)

    for name, fused in inject(model, {n: m for n, (m, _) in split_found.items()}, make_fused).items():
        lowrank.update({f"{name}.{b}": fused.branch(b) for b in fused.adapted})
    return lowrank


def merge_all(model: nn.Module) -> int:
    """Replaces every `FusedLowRank` (linear branches) by its merged base; returns how many."""
    fused = {n: m for n, m in model.named_modules() if isinstance(m, FusedLowRank)}
    inject(model, fused, lambda name, m: m.merge())
    return len(fused)
