"""LoDA and LoDA+ (Liu et al., 2023, "LoDA: Low-Dimensional Adaptation of Large Language Models"),
and R-LoDA(+) / S-LoDA(+): the same on a frozen low-rank / sparsified base weight.

Column convention (nn.Linear: y = W x), z = A x ∈ R^r, A ∈ R^{r×d_in}, B ∈ R^{d_out×r}, s = α/r:

    LoRA:   Δh = s·B z
    LoDA:   Δh = s·B (z + f1(z))            paper (row form, h = xW): Δh = (xA + f1(xA)) B
    LoDA+:  Δh = s·(B z + f2(B f1(z)))      paper: Δh = xAB + f2(f1(xA) B)

f1 is two r×r linear layers without bias (W1, W2), LeakyReLU σ (negative slope 0.8) and a
LayerNorm without trainable parameters, applied in the order `f1_order`. The paper does not fix the
order; the default is pre-norm, `[norm, linear, act, linear]`: f1(z) = W2 σ(W1 LN(z)). Why:
  * it ends with a linear layer, so f1 = 0 exactly when W2 = 0 (LoRA is the special case; a test
    checks bitwise equality) and the residual branch has a learned output scale;
  * LN first makes f1 see z = A x at a fixed scale while A trains (z's norm drifts), the same
    pre-norm residual shape as GPT-2's own blocks (h + MLP(LN(h)));
  * LN later (e.g. after σ) would confine f1's output to W2·{mean-zero vectors}, rank r − 1; here
    W2 σ(W1 u) can reach all r directions.
Any order of `linear`, `act`, `norm` tokens is accepted (`method.f1_order`). W1, W2 start with
PyTorch's Linear init (Kaiming-uniform, a = √5), or `f1_init=zero_last` (W2 = 0: LoDA starts as
LoRA in function and in A/B gradients; W2 still trains). Δh = 0 at step 0 either way, since B = 0.
The scaling s multiplies the whole Δh. f2 (LoDA+) is a list of `act` / `norm` over d_out (the
LayerNorm has no parameters); default `[act]`, the LeakyReLU the paper's Figure 1e names.

Trainable: 2·(r·d_in + r·d_out)/2 + 2r² per adapted matrix: 2(rd + r²)L for square blocks
(GPT-2 medium, r = 4, q and v in 24 layers: 394,752; LoRA: 393,216).

R-/S-LoDA (`base_approx`): every W_proj (default: the modules the placement adapts, i.e. GPT-2's
fused c_attn = [Wq, Wk, Wv]) is replaced once, before training, by
  * `svd`: its rank-R truncated SVD Σ_{i≤R} σ_i u_i v_iᵀ (R = `base_rank`), computed in float64 and
    stored in the model's dtype; energy kept = Σ_{i≤R} σ_i² / Σ σ_i². The stored matrix has rank
    exactly R at torch.linalg.matrix_rank's default tolerance (σ_max · max(m, n) · eps(dtype));
  * `sparse`: W ⊙ M keeping exactly k = round(keep · numel) largest-|w| entries (`base_keep`);
    energy kept = Σ_kept w² / Σ w².
Stored dense (the frozen product / masked matrix). The record gives, per module, the energy and the
inference multiply-accumulates per token of the approximated layer: dense d_in·d_out (GPT-2: 3d²),
factored R·(d_in + d_out) (GPT-2: 4Rd, paper A.4), sparse nnz.

The R-LoRA regularizer and the GM mask combine (`method=loda method.reg_weight=0.1`): they act on
A and B (A's rows, B's columns), never on f1.

Merge: not a plain fold. f1 (and f2) are non-linear, so Δh is not x ↦ ΔW x; only the linear term
s·BA could move into W, the f1 path must stay. `delta_weight()` (diagnostics: rank, orthogonality)
is that linear term s·B A. Export is this harness's own format (`export` / `load`, below).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from adapters import lora
from adapters.base import Method, freeze_all_but, match_modules
from adapters.lowrank import in_out_features, make_factors
from adapters.placement import FusedLowRank, parse_targets, place
from core import ConfigError, atomic_write

F1_TOKENS = ("linear", "act", "norm")
F2_TOKENS = ("act", "norm")
APPROX = ("none", "svd", "sparse")
FORMAT = "lowrank-bench/loda"


@dataclass
class Config(lora.Config):
    name: str = "loda"
    rank: int = 4  # r: LoDA paper's GPT-2 medium setting
    alpha: float = 32.0  # s = alpha / r = 8 (Hu et al.'s GPT-2 setting)
    plus: bool = False  # LoDA+ (f2 after B) instead of LoDA (residual f1 between A and B)
    f1_order: list = field(default_factory=lambda: ["norm", "linear", "act", "linear"])
    f1_slope: float = 0.8  # LeakyReLU negative slope (paper: 0.8)
    f1_init: str = "default"  # default (PyTorch Linear init) | zero_last (last linear = 0: starts as LoRA)
    f2: list = field(default_factory=lambda: ["act"])  # LoDA+ only: act and/or norm over d_out
    base_approx: str = "none"  # none | svd (R-LoDA) | sparse (S-LoDA)
    base_rank: int | None = None  # R of the truncated SVD (svd)
    base_keep: float | None = None  # fraction of entries kept (sparse)
    approx_modules: list | None = None  # regexes of the W_proj to approximate; null: the adapted modules

    def __post_init__(self):
        super().__post_init__()
        self.f1_order, self.f2 = list(self.f1_order), list(self.f2)
        bad = [t for t in self.f1_order if t not in F1_TOKENS]
        if bad or "linear" not in self.f1_order:
            raise ConfigError(
                f"method.f1_order {self.f1_order} must list {', '.join(F1_TOKENS)} with at least one linear"
            )
        if [t for t in self.f2 if t not in F2_TOKENS]:
            raise ConfigError(f"method.f2 {self.f2} may only list {', '.join(F2_TOKENS)}")
        if self.f1_init not in ("default", "zero_last"):
            raise ConfigError(f"unknown method.f1_init {self.f1_init!r}; valid: default, zero_last")
        if self.base_approx not in APPROX:
            raise ConfigError(f"unknown method.base_approx {self.base_approx!r}; valid: {', '.join(APPROX)}")
        need = {"svd": "base_rank", "sparse": "base_keep"}.get(self.base_approx)
        for key in ("base_rank", "base_keep"):
            if key != need and getattr(self, key) is not None:
                raise ConfigError(
                    f"method.{key} is set but method.base_approx={self.base_approx}; "
                    f"use method={'r_loda' if key == 'base_rank' else 's_loda'} or set it to null"
                )
        if need and getattr(self, need) is None:
            raise ConfigError(f"method.base_approx={self.base_approx} needs method.{need}")
        if self.base_rank is not None and (isinstance(self.base_rank, bool) or self.base_rank < 1):
            raise ConfigError(f"method.base_rank must be an integer >= 1, got {self.base_rank}")
        if self.base_keep is not None and not 0.0 < self.base_keep <= 1.0:
            raise ConfigError(f"method.base_keep must be in (0, 1], got {self.base_keep}")


def validate(cfg: Config, model_cfg: dict) -> None:
    lora.validate(cfg, model_cfg)


def _ops(tokens: list[str], width: int, slope: float, like: torch.Tensor) -> nn.Sequential:
    layers = []
    for t in tokens:
        if t == "linear":
            layers.append(nn.Linear(width, width, bias=False, device=like.device, dtype=like.dtype))
        elif t == "act":
            layers.append(nn.LeakyReLU(slope))
        else:
            layers.append(nn.LayerNorm(width, elementwise_affine=False))
    return nn.Sequential(*layers)


class LoDABranch(nn.Module):
    """One LoDA(+) update Δ(x) for one output block (module docstring); the owner adds base(x)."""

    linear = False  # f1 / f2 are non-linear: no single-matrix form, no fold, no PEFT LoRA

    def __init__(self, d_in: int, d_out: int, cfg: Config, like: torch.Tensor, name: str = ""):
        super().__init__()
        self.lora_A, self.lora_B = make_factors(cfg.rank, d_in, d_out, like, cfg.init, cfg.init_std, name)
        self.rank, self.scaling, self.plus = cfg.rank, cfg.alpha / cfg.rank, cfg.plus
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.loda_f1 = _ops(cfg.f1_order, cfg.rank, cfg.f1_slope, like)
        if cfg.f1_init == "zero_last":
            last = [m for m in self.loda_f1 if isinstance(m, nn.Linear)][-1]
            nn.init.zeros_(last.weight)
        self.loda_f2 = _ops(cfg.f2, d_out, cfg.f1_slope, like) if cfg.plus else None
        # LoDA is s·B inner(A x): FusedLowRank may run a layer's branches as one matmul pair;
        # LoDA+'s f2 acts on each block's d_out outputs, so it keeps the per-branch loop
        self.fusable = not cfg.plus
        self.small_matmul = cfg.fast

    def f1(self, z: torch.Tensor) -> torch.Tensor:
        """f1(z). `fast`: each r×r linear as a broadcast product summed over r, which inductor fuses with
        the norm and σ into one kernel; as a matmul (`method.fast=false`) it is a GEMM with r = 4
        columns per token, which on the H200 took 30 µs per call (4 per GPT-2 layer, forward only)."""
        if not self.small_matmul:
            return self.loda_f1(z)
        for op in self.loda_f1:
            z = (z.unsqueeze(-1) * op.weight.t()).sum(-2) if isinstance(op, nn.Linear) else op(z)
        return z

    def inner(self, z: torch.Tensor) -> torch.Tensor:
        """LoDA's map between A and B: z + f1(z)."""
        return z + self.f1(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.linear(self.dropout(x), self.lora_A)  # (..., r)
        if not self.plus:  # s·B (z + f1(z)): the same ops as LoRA when f1(z) = 0
            return self.scaling * F.linear(self.inner(z), self.lora_B)
        return self.scaling * (F.linear(z, self.lora_B) + self.loda_f2(F.linear(self.f1(z), self.lora_B)))

    def delta_weight(self) -> torch.Tensor:
        """The linear term s·B A (d_out, d_in) only; f1 / f2 add a non-linear part on top."""
        return self.scaling * self.lora_B @ self.lora_A


# --- R-/S-LoDA: the frozen base weight replaced ----------------------------------------------


@torch.no_grad()
def approximate(weight: torch.Tensor, kind: str, rank: int | None = None, keep: float | None = None):
    """(approximated weight in `weight`'s dtype, stats) for `svd` (rank R) or `sparse` (keep fraction).

    Shapes are whatever the module stores (Conv1D: d_in × d_out); rank, energy and MACs do not care.
    """
    w = weight.detach().double()
    m, n = w.shape
    total = float((w**2).sum())
    if kind == "svd":
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        approx = (u[:, :rank] * s[:rank]) @ vh[:rank]
        energy = float((s[:rank] ** 2).sum() / (s**2).sum())
        stats = {"rank": rank, "full_rank": min(m, n), "macs_approx": rank * (m + n)}
    elif kind == "sparse":
        k = round(keep * w.numel())
        idx = w.abs().flatten().topk(k).indices
        mask = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
        mask[idx] = True
        approx = w * mask.view_as(w)
        energy = float((approx**2).sum()) / total
        stats = {"keep": keep, "nnz": k, "numel": w.numel(), "macs_approx": k}
    else:
        raise ConfigError(f"unknown method.base_approx {kind!r}; valid: svd, sparse")
    stats.update(energy=energy, macs_dense=m * n, shape=[m, n])
    return approx.to(weight.dtype), stats


def _approximate_bases(model: nn.Module, cfg: Config, targets) -> dict[str, dict]:
    whole, splits = parse_targets(targets)
    patterns = cfg.approx_modules or whole + [s.module for s in splits]
    stats = {}
    for name, module in match_modules(model, patterns, "approx").items():
        d_in, d_out = in_out_features(module)
        if cfg.base_approx == "svd" and cfg.base_rank > min(d_in, d_out):
            raise ConfigError(
                f"method.base_rank={cfg.base_rank} exceeds min(d_in, d_out) = {min(d_in, d_out)} of {name}; "
                f"set method.base_rank <= {min(d_in, d_out)} (the paper uses 300-500 on GPT-2 medium)"
            )
        approx, stats[name] = approximate(module.weight, cfg.base_approx, cfg.base_rank, cfg.base_keep)
        with torch.no_grad():
            module.weight.copy_(approx)
    return stats


def _summary(cfg: Config, stats: dict[str, dict]) -> dict:
    n = max(len(stats), 1)
    return {
        "kind": cfg.base_approx,
        "rank": cfg.base_rank,
        "keep": cfg.base_keep,
        "stored": "dense (frozen product / masked matrix)",
        "energy_rule": "svd: sum_{i<=R} s_i^2 / sum s_i^2; sparse: sum_kept w^2 / sum w^2",
        "macs_rule": "per token: dense d_in*d_out; svd factored R*(d_in+d_out); sparse nnz",
        "mean_energy": sum(v["energy"] for v in stats.values()) / n,
        "macs_dense": sum(v["macs_dense"] for v in stats.values()),
        "macs_approx": sum(v["macs_approx"] for v in stats.values()),
        "modules": stats,
    }


# --- apply, export, load ---------------------------------------------------------------------


def apply(
    model: nn.Module, cfg: Config, targets: list, heads: list[str], generator: torch.Generator
) -> Method:
    """Approximates the base weights (R-/S-LoDA), wraps every target with LoDA branches."""
    head_names = freeze_all_but(model, match_modules(model, heads, "head"))
    stats = _approximate_bases(model, cfg, targets) if cfg.base_approx != "none" else {}

    def make_branch(name, d_in, d_out, like):
        return LoDABranch(d_in, d_out, cfg, like, name)

    def make_whole(name, module):  # a whole module is one block: the same wrapper as a fused split
        d_in, d_out = in_out_features(module)
        branch = make_branch(name, d_in, d_out, module.weight)
        return FusedLowRank(module, ("adapter",), {"adapter": branch}, fuse=cfg.fast)

    lowrank = place(model, targets, make_whole, make_branch, fuse=cfg.fast)
    lowrank = {  # whole modules: the branch is the low-rank entry (it has lora_A / lora_B)
        (f"{n}.adapter" if isinstance(m, FusedLowRank) else n): (
            m.adapter if isinstance(m, FusedLowRank) else m
        )
        for n, m in lowrank.items()
    }
    branch_params = sum(p.numel() for m in lowrank.values() for p in m.parameters())
    method = Method(
        name=cfg.name,
        model=model,
        lowrank=lowrank,
        head=head_names,
        inference_params=branch_params,
        params_convention="trainable/inference include the task head (model.head_modules); "
        "method_* exclude it; inference = A, B and f1 kept (LoDA does not fold into W)",
        extra_counts=(lambda: {"base_approx": _summary(cfg, stats)}) if stats else None,
    )
    lora.add_reg_and_mask(method, cfg, generator)  # on A's rows and B's columns, never on f1
    saved = {"targets": list(targets), "heads": list(heads), "base_approx": stats}
    method.exporter = lambda folder: export(method, cfg, saved, Path(folder) / "loda")
    return method


def export(method: Method, cfg: Config, saved: dict, folder: Path) -> None:
    """Writes `adapter.safetensors` (A, B, f1, head) and `loda_config.json` into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    state = method.trained_state_dict()
    atomic_write(
        folder / "adapter.safetensors", lambda tmp: save_file(state, tmp, metadata={"format": FORMAT})
    )
    meta = {"format": FORMAT, "version": 1, "method": asdict(cfg), **saved}
    text = json.dumps(meta, indent=1, sort_keys=True, default=str)
    atomic_write(folder / "loda_config.json", lambda tmp: Path(tmp).write_text(text))


def load(model: nn.Module, folder: str | Path, energy_tol: float = 1e-9) -> Method:
    """Rebuilds an exported LoDA-family adapter on a fresh copy of the base model.

    The base approximation is recomputed from `model`'s weights (deterministic) and checked against
    the exported energies, so loading onto different base weights fails instead of running silently.
    """
    folder = Path(folder)
    meta = json.loads((folder / "loda_config.json").read_text())
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{folder} is not a {FORMAT} export (format {meta.get('format')!r})")
    cfg = Config(**meta["method"])
    method = apply(model, cfg, meta["targets"], meta["heads"], torch.Generator().manual_seed(0))
    now = method.extra_counts()["base_approx"]["modules"] if method.extra_counts else {}
    for name, old in meta["base_approx"].items():
        if abs(now[name]["energy"] - old["energy"]) > energy_tol:
            raise ConfigError(
                f"{name}: base energy {now[name]['energy']:.12f} != exported {old['energy']:.12f}; "
                f"load onto the base model the adapter was trained on"
            )
    state = load_file(folder / "adapter.safetensors")
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(state) != expected:
        raise ConfigError(
            f"{folder}: exported tensors do not match the rebuilt adapter "
            f"(missing {sorted(expected - set(state))[:3]}, extra {sorted(set(state) - expected)[:3]})"
        )
    model.load_state_dict(state, strict=False)
    return method
