"""LoRA (Hu et al., 2022) and its RM-LoRA variants (R-LoRA, GM-LoRA, RM-LoRA).

    y = W x + (α/R) · B A x,  A random, B = 0, W frozen; target modules from the model config.

Targets are whole modules (regexes) or blocks of a fused projection (adapters/placement.py: GPT-2's
q and v inside `c_attn`, each with its own A, B).

R-LoRA adds the orthogonality regularizer (`reg_weight` > 0; adapters/orthogonal.py), GM-LoRA the
gradient mask (`mask_directions` or `mask_fraction`; adapters/masking.py), RM-LoRA both. They are one
implementation with different defaults (conf/method/{lora,r_lora,gm_lora,rm_lora}.yaml), so
`method=lora method.reg_weight=0.1 method.mask_fraction=0.5` trains exactly like `method=rm_lora`.

The regularizer's default form is `reference`, the authors' code's (the form λ = 0.1 was tuned for);
the R-/RM-LoRA configs take λ from `reg_weights` by form, so `method.reg_form=paper` also changes λ.
`mask_head` + `mask_start=2` reproduce the authors' GM step (no mask at the first step, then the
head's gradient zeroed with the factors'); off by default. The record's `params.regularizer` and
`params.gradient_mask` say which ran.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adapters.base import Method, freeze_all_but, match_modules
from adapters.lowrank import LowRankLinear
from adapters.masking import MODES, DirectionMask
from adapters.orthogonal import FORMS, OrthogonalityRegularizer
from adapters.placement import LowRankBranch, place
from core import ConfigError


@dataclass
class Config:
    name: str = "lora"
    lr_group: str = "lowrank"
    rank: int = 8  # R: capacity and # params grow linearly with it
    alpha: float = 16.0  # scaling α/R
    dropout: float = 0.0  # dropout on the adapter's input
    init: str = "kaiming"  # kaiming (PEFT) | gaussian (N(0, init_std²), RM-LoRA code)
    init_std: float = 0.02
    reg_weight: float = 0.0  # λ of the orthogonality regularizer; 0: off
    # reference (the authors' code: mean of non-squared norms; λ = 0.1 belongs to it) | paper (Eq. 10:
    # squared, summed; ≈ 540× the gradient at DeBERTa-v3-base shapes, R=8: conf/method/lora.yaml)
    reg_form: str = "reference"
    # λ per form, which the R-/RM-LoRA configs pick: `reg_weight: ${.reg_weights.${.reg_form}}`, so
    # switching the form switches the coefficient (conf/method/lora.yaml argues the values)
    reg_weights: dict | None = None
    mask_directions: int | None = None  # r̂ kept directions per step; null: from mask_fraction
    mask_fraction: float | None = None  # r̂ = max(1, round(fraction·R)); both null: no masking
    mask_shared: bool = True  # B's kept columns = A's kept rows (v1) | independent (v2)
    mask_mode: str = "grad"  # grad | strict (masked rows/cols provably unchanged)
    mask_start: int = 1  # first optimizer step (1-based) the mask acts on; the authors' code: 2
    mask_head: bool = False  # true: the head's gradient is zeroed too on masked steps (authors' code)
    fast: bool = True  # batched regularizer, device-side mask, fused q/v matmul (false: the reference loops)

    def __post_init__(self):
        if self.rank < 1:
            raise ConfigError(f"method.rank must be >= 1, got {self.rank}")
        if self.reg_weight < 0:
            raise ConfigError(f"method.reg_weight must be >= 0, got {self.reg_weight}")
        if self.reg_form not in FORMS:
            raise ConfigError(f"unknown method.reg_form {self.reg_form!r}; valid: {', '.join(FORMS)}")
        if self.mask_mode not in MODES:
            raise ConfigError(f"unknown method.mask_mode {self.mask_mode!r}; valid: {', '.join(MODES)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"method.dropout must be in [0, 1), got {self.dropout}")
        if self.mask_fraction is not None and not 0.0 < self.mask_fraction <= 1.0:
            raise ConfigError(f"method.mask_fraction must be in (0, 1], got {self.mask_fraction}")
        for form, weight in (self.reg_weights or {}).items():
            if form not in FORMS or not isinstance(weight, (int, float)) or weight < 0:
                raise ConfigError(
                    f"method.reg_weights.{form}={weight!r}: keys must be {' or '.join(FORMS)}, values >= 0"
                )
        r_hat = self.directions
        if r_hat is not None and not 1 <= r_hat <= self.rank:
            raise ConfigError(
                f"method.mask_directions must be in [1, R={self.rank}], got {r_hat}; "
                f"set it in that range or null to disable masking"
            )
        check_mask_switches(self)

    @property
    def directions(self) -> int | None:
        """r̂, or None when masking is off."""
        return mask_directions(self)


def mask_directions(cfg) -> int | None:
    """r̂ of any config with rank / mask_directions / mask_fraction (LoRA, LoDA, SoRA); None: no mask."""
    if cfg.mask_directions is not None:
        return cfg.mask_directions
    if cfg.mask_fraction is not None:
        return max(1, round(cfg.mask_fraction * cfg.rank))
    return None


def check_mask_switches(cfg) -> None:
    """`mask_start` / `mask_head` (any config with the mask keys; SoRA's has neither: defaults)."""
    start, head = getattr(cfg, "mask_start", 1), getattr(cfg, "mask_head", False)
    if start < 1:
        raise ConfigError(f"method.mask_start is a 1-based optimizer step, got {start}; use 1 (every step)")
    if mask_directions(cfg) is None and (head or start != 1):
        raise ConfigError(
            "method.mask_head / mask_start act on the GM mask, which is off; "
            "set method.mask_fraction (e.g. 0.5) or method.mask_directions, or drop them"
        )
    if head and start == 1:
        raise ConfigError(
            "method.mask_head=true with method.mask_start=1 never trains the head; the authors' code "
            "masks from its second step: add method.mask_start=2"
        )
    if head and cfg.mask_mode != "grad":
        raise ConfigError(
            "method.mask_head reproduces the authors' gradient mask (AdamW momentum still moves the "
            "head); use it with method.mask_mode=grad"
        )


def add_reg_and_mask(method: Method, cfg, generator: torch.Generator, mask_first: bool = False) -> None:
    """R-LoRA's regularizer and GM-LoRA's mask on `method.lowrank`, as `cfg` asks (any (A, B) method),
    each described in the record (`extra_counts`: which form and λ, which mask, whether the head is masked).

    `mask_first`: the mask acts before the method's own hooks (SoRA: before the gate step).
    """
    modules = method.lowrank
    described = {}
    if cfg.reg_weight > 0:
        reg = OrthogonalityRegularizer(list(modules.values()), cfg.reg_weight, cfg.reg_form, cfg.fast)
        method.loss_terms.append(reg)
        described["regularizer"] = reg.describe()
    r_hat = mask_directions(cfg)
    if r_hat is not None:
        check_mask_switches(cfg)
        head = []
        if getattr(cfg, "mask_head", False):
            names = set(method.head)
            head = [p for n, p in method.model.named_parameters() if n in names]
            if not head:
                raise ConfigError(
                    "method.mask_head=true but this model trains no head (model.head_modules is empty); "
                    "drop method.mask_head"
                )
        start = getattr(cfg, "mask_start", 1)
        mask = DirectionMask(modules, r_hat, generator, cfg.mask_shared, cfg.mask_mode, cfg.fast, head, start)
        method.hooks.insert(0 if mask_first else len(method.hooks), mask)
        described["gradient_mask"] = mask.describe()
    if described:
        before = method.extra_counts  # the method's own counts (LoDA's, SoRA's) stay
        method.extra_counts = lambda: {**(before() if before else {}), **described}


def validate(cfg: Config, model_cfg: dict) -> None:
    if not model_cfg.get("target_modules"):
        raise ConfigError(
            f"method {cfg.name} adapts model.target_modules, which is empty; give at least one regex"
        )


def apply(
    model: nn.Module, cfg: Config, targets: list[str], heads: list[str], generator: torch.Generator
) -> Method:
    """Wraps every target (whole modules or fused blocks: adapters/placement.py), freezes the rest
    but `heads`, attaches reg / mask."""
    head_names = freeze_all_but(model, match_modules(model, heads, "head"))

    def make_whole(name, module):
        return LowRankLinear(module, cfg.rank, cfg.alpha, cfg.dropout, cfg.init, cfg.init_std, name=name)

    def make_branch(name, d_in, d_out, like):
        return LowRankBranch(
            d_in, d_out, cfg.rank, cfg.alpha, like, cfg.dropout, cfg.init, cfg.init_std, name
        )

    lowrank = place(model, targets, make_whole, make_branch, fuse=cfg.fast)
    method = Method(
        name=cfg.name,
        model=model,
        lowrank=lowrank,
        head=head_names,
        inference_params=sum(m.lora_A.numel() + m.lora_B.numel() for m in lowrank.values()),
        params_convention="trainable/inference include the task head (model.head_modules); "
        "method_* exclude it; inference = factors A, B kept unmerged",
    )
    add_reg_and_mask(method, cfg, generator)
    from adapters import export  # late: export imports peft

    method.exporter = lambda folder: export.peft_lora(method, folder, cfg.dropout)
    return method
