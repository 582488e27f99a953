"""Bottleneck adapters, the LoDA table's Adapter^H (Houlsby et al., 2019) and Adapter^L (Lin et al., 2020).

    adapter(h) = h + W_up σ(W_down n(h) + b_down) + b_up,   W_down ∈ R^{m×d}, W_up ∈ R^{d×m}

n = identity (Houlsby) or a LayerNorm with trainable scale and shift (Lin et al.); σ = ReLU by
default. W_up = 0, b_up = 0 at init, so every adapter is the identity at step 0 (a test checks it).

Placement (`method.modules`: regexes of the modules whose *output* goes through an adapter):
  * adapter_h: after the attention output projection and after the MLP output projection of every
    block, before each residual add (GPT-2: `attn.c_proj`, `mlp.c_proj`), i.e. two per block;
  * adapter_l: one per block after the MLP's residual add (GPT-2: the block `transformer.h.<i>`),
    with its LayerNorm ("after the MLP module and after a LayerNorm", Hu et al. 2022).
The adapter is a child module `adapter` of the hooked module, applied by a forward hook, so the
hooked module keeps its type and attributes.

Trainable (Hu et al. 2022, Sec. 5.1): L_adpt·(2dm + m + d) + 2·L_LN·d. GPT-2 medium (d = 1024,
24 blocks): adapter_l m = 6 → 368,784 (0.37M), m = 224 → 11,089,152 (11.09M); adapter_h m = 112 →
11,064,576 (11.06M): no integer m gives the quoted 11.09M with 48 adapters (m = 112.26 would),
with or without trainable block LayerNorms, so 112 is the nearest (tests/test_loda.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from adapters.base import Method, compile_pattern, freeze_all_but, match_modules
from core import ConfigError

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


@dataclass
class Config:
    name: str = "adapter_h"
    lr_group: str = "lowrank"
    bottleneck: int = 112  # m: params grow as 2dm per adapter
    modules: list = field(default_factory=lambda: [r".*\.attn\.c_proj", r".*\.mlp\.c_proj"])
    norm: bool = False  # Lin et al.: a trainable LayerNorm before the down-projection
    activation: str = "relu"
    dropout: float = 0.0  # on the bottleneck activations

    def __post_init__(self):
        if isinstance(self.bottleneck, bool) or not isinstance(self.bottleneck, int) or self.bottleneck < 1:
            raise ConfigError(f"method.bottleneck must be an integer >= 1, got {self.bottleneck!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown method.activation {self.activation!r}; valid: {', '.join(ACTIVATIONS)}"
            )
        if not self.modules:
            raise ConfigError(
                "method.modules is empty; give regexes of the modules to follow with an adapter"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"method.dropout must be in [0, 1), got {self.dropout}")


class Bottleneck(nn.Module):
    """h + W_up σ(W_down n(h)): see the module docstring."""

    def __init__(self, d: int, m: int, norm: bool, activation: str, dropout: float, like: torch.Tensor):
        super().__init__()
        kw = {"device": like.device, "dtype": like.dtype}
        self.norm = nn.LayerNorm(d, **kw) if norm else nn.Identity()
        self.down = nn.Linear(d, m, **kw)
        self.act = ACTIVATIONS[activation]()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.up = nn.Linear(m, d, **kw)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.drop(self.act(self.down(self.norm(h)))))


def _through_adapter(module: nn.Module, args, output):
    if isinstance(output, tuple):  # modules returning (hidden, extras...)
        return (module.adapter(output[0]), *output[1:])
    return module.adapter(output)


def _width(module: nn.Module) -> tuple[int, torch.Tensor]:
    """Output width and a weight (device/dtype) of a hooked module."""
    weights = [p for p in module.parameters()]
    if hasattr(module, "nf"):  # GPT-2 Conv1D
        return module.nf, module.weight
    if isinstance(module, nn.Linear):
        return module.out_features, module.weight
    config = getattr(module, "config", None)
    for owner in (module, config):
        for key in ("hidden_size", "n_embd", "embed_dim"):
            if owner is not None and isinstance(getattr(owner, key, None), int):
                return getattr(owner, key), weights[0]
    ln = [m for m in module.modules() if isinstance(m, nn.LayerNorm)]  # a transformer block
    if ln:
        return ln[-1].normalized_shape[0], weights[0]
    raise ConfigError(
        f"cannot tell the output width of {type(module).__name__}; point method.modules elsewhere"
    )


def apply(
    model: nn.Module, cfg: Config, targets: list, heads: list[str], generator: torch.Generator
) -> Method:
    """Adds an adapter after every module matching `cfg.modules` (model.target_modules is not used)."""
    head_names = freeze_all_but(model, match_modules(model, heads, "head"))
    found = {}
    for pattern in cfg.modules:  # the patterns live in the method YAML (GPT-2's by default)
        regex = compile_pattern(pattern, "adapter")
        hits = {n: m for n, m in model.named_modules() if n and regex.fullmatch(n)}
        if not hits:
            raise ConfigError(
                f"method.modules pattern {pattern!r} matches no module of {type(model).__name__} "
                f"(the defaults are GPT-2's); set method.modules to this model's module names"
            )
        found.update(hits)
    adapters = {}
    for name, module in found.items():
        d, like = _width(module)
        module.add_module(
            "adapter", Bottleneck(d, cfg.bottleneck, cfg.norm, cfg.activation, cfg.dropout, like)
        )
        module.register_forward_hook(_through_adapter)
        adapters[name] = module.adapter
    n = sum(p.numel() for a in adapters.values() for p in a.parameters())
    return Method(
        name=cfg.name,
        model=model,
        head=head_names,
        inference_params=n,
        params_convention="trainable/inference include the task head (model.head_modules); "
        "method_* exclude it; adapters (and their LayerNorms) are kept at inference",
        extra_counts=lambda: {"adapters": len(adapters), "bottleneck": cfg.bottleneck},
    )
