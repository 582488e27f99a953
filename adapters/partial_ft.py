"""Partial fine-tuning: chosen weights train fully, everything else (but the task head) is frozen.

The LoDA paper's FT^{Wq,Wv} (q and v projections) and FT^Top2 (last two blocks) are this method with
different name patterns (conf/method/ft_qv.yaml, ft_top2.yaml). The patterns are model-specific and
live in the model YAML under `partial_ft.<set>`; the method YAML selects a set by interpolation.

A pattern is either
- a regex over *parameter* names (full match), e.g. `'.*\\.attention\\.self\\.query_proj\\.weight'`:
  that tensor trains whole; or
- a slice spec `{param: REGEX, dim: D, parts: P, keep: [i, ...]}`: the tensor is cut along `dim`
  into `parts` equal blocks and only blocks `keep` train. GPT-2 fuses q, k, v in one Conv1D
  `c_attn` (weight d × 3d, columns [q | k | v]), so FT^{Wq,Wv} is `dim: 1, parts: 3, keep: [0, 2]`.

Slices are a **split**, not a gradient mask: the tensor is replaced by one trainable Parameter per
block (`<name>__part<i>`; only kept blocks have requires_grad), concatenated back before every
forward. So the frozen blocks cannot move under weight decay or momentum, the runner's optimizer,
clipping and counters see exactly the trained entries, and # T is the plain parameter count
(GPT-2 medium: 2 · 1024² · 24 = 50,331,648 = "48.00M" in units of 2^20). `merge_splits(model)`
puts the original tensors back (for saving a plain checkpoint).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from adapters.base import Method, freeze_all_but, match_modules
from core import ConfigError

SLICE_KEYS = {"param", "dim", "parts", "keep"}


@dataclass
class Config:
    name: str = "ft_qv"
    lr_group: str = "ft"
    patterns: list = field(default_factory=list)  # regexes over parameter names, or slice specs
    pattern_set: str = ""  # which `model.partial_ft` set the patterns came from (for messages)

    def __post_init__(self):
        check_patterns(self.patterns, self.pattern_set)


def check_patterns(patterns, pattern_set: str = "") -> None:
    where = f"model.partial_ft.{pattern_set}" if pattern_set else "method.patterns"
    if not patterns:
        raise ConfigError(
            f"partial fine-tuning has no patterns; add {where} to the model YAML "
            f"(regexes over parameter names) or set method.patterns"
        )
    for p in patterns:
        spec = p if isinstance(p, dict) else {"param": p}
        if not isinstance(spec.get("param"), str) or set(spec) - SLICE_KEYS:
            raise ConfigError(
                f"bad partial-FT pattern {p!r} in {where}; use a regex string or "
                f"{{param: REGEX, dim: D, parts: P, keep: [i, ...]}}"
            )
        try:
            re.compile(spec["param"])
        except re.error as e:
            raise ConfigError(f"partial-FT pattern {spec['param']!r} in {where} is not a regex ({e})") from e
        if isinstance(p, dict):
            parts, keep = p.get("parts"), p.get("keep")
            if not isinstance(parts, int) or parts < 2 or not keep or not all(0 <= k < parts for k in keep):
                raise ConfigError(
                    f"slice pattern {p!r} in {where} needs parts >= 2 and keep indices in [0, parts)"
                )


def validate(method_cfg, model_cfg: dict) -> None:
    """Called before any model is built: the selected pattern set must exist and be well formed."""
    patterns = method_cfg.get("patterns") if isinstance(method_cfg, dict) else method_cfg.patterns
    pattern_set = (
        method_cfg.get("pattern_set", "") if isinstance(method_cfg, dict) else method_cfg.pattern_set
    )
    if not patterns and pattern_set and pattern_set not in (model_cfg.get("partial_ft") or {}):
        raise ConfigError(
            f"model {model_cfg.get('name')!r} defines no partial_ft.{pattern_set}; add "
            f"partial_ft: {{{pattern_set}: [regexes over parameter names]}} to its YAML"
        )
    check_patterns(patterns, pattern_set)


class _Split:
    """Forward pre-hook that rebuilds `module.<attr>` from trainable and frozen blocks."""

    def __init__(self, attr: str, dim: int, parts: int):
        self.attr, self.dim, self.parts = attr, dim, parts

    def blocks(self, module: nn.Module) -> list[torch.Tensor]:
        return [getattr(module, f"{self.attr}__part{i}") for i in range(self.parts)]

    def __call__(self, module: nn.Module, args) -> None:
        setattr(module, self.attr, torch.cat(self.blocks(module), dim=self.dim))


def _split(model: nn.Module, name: str, dim: int, parts: int, keep: list[int]) -> list[str]:
    """Replaces parameter `name` by per-block Parameters (trainable if kept, else frozen)."""
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    tensor = getattr(module, attr)
    if tensor.shape[dim] % parts:
        raise ConfigError(f"{name} has size {tensor.shape[dim]} along dim {dim}, not divisible by {parts}")
    blocks = tensor.detach().chunk(parts, dim=dim)
    del module._parameters[attr]
    trained = []
    for i, block in enumerate(blocks):
        part = f"{attr}__part{i}"
        module.register_parameter(part, nn.Parameter(block.clone(), requires_grad=i in keep))
        if i in keep:
            trained.append(f"{module_name}.{part}")
    hook = _Split(attr, dim, parts)
    module._partial_ft_split = getattr(module, "_partial_ft_split", []) + [
        (hook, module.register_forward_pre_hook(hook))
    ]
    hook(module, ())
    return trained


def merge_splits(model: nn.Module) -> None:
    """Undoes every split: the original tensors are Parameters again (values as trained)."""
    for module in model.modules():
        for hook, handle in getattr(module, "_partial_ft_split", []):
            full = torch.cat([b.detach() for b in hook.blocks(module)], dim=hook.dim)
            handle.remove()
            for i in range(hook.parts):
                part = f"{hook.attr}__part{i}"
                module._parameters.pop(part, None)
            if hook.attr in module.__dict__:
                del module.__dict__[hook.attr]
            module.register_parameter(hook.attr, nn.Parameter(full))
        if hasattr(module, "_partial_ft_split"):
            del module._partial_ft_split


def apply(
    model: nn.Module, cfg: Config, targets: list[str], heads: list[str], generator: torch.Generator
) -> Method:
    """Trains the parameters (or parameter blocks) selected by `cfg.patterns` and the task head."""
    head_modules = match_modules(model, heads, "head")
    head_names = freeze_all_but(model, head_modules)
    names = [n for n, _ in model.named_parameters()]
    chosen: dict[str, dict | None] = {}
    for p in cfg.patterns:
        spec = p if isinstance(p, dict) else {"param": p}
        regex = re.compile(spec["param"])
        hits = [n for n in names if regex.fullmatch(n) and n not in head_names]
        if not hits:
            where = f"model.partial_ft.{cfg.pattern_set}" if cfg.pattern_set else "method.patterns"
            raise ConfigError(
                f"partial-FT pattern {spec['param']!r} matches no parameter; fix {where} "
                f"(regexes over parameter names such as {', '.join(names[:4])}, ...)"
            )
        for n in hits:
            chosen[n] = p if isinstance(p, dict) else None
    trained = []
    params = dict(model.named_parameters())
    for n, spec in chosen.items():
        if spec is None:
            params[n].requires_grad_(True)
            trained.append(n)
        else:
            trained += _split(model, n, spec.get("dim", 0), spec["parts"], list(spec["keep"]))
    kept = sum(p.numel() for n, p in model.named_parameters() if n in set(trained))
    return Method(
        name=cfg.name,
        model=model,
        head=head_names,
        inference_params=kept,
        params_convention="trainable/inference include the task head; method_* = the fine-tuned "
        "weights only (slices of fused tensors count only their kept blocks); the rest of the model "
        "is frozen and shared with the base model",
    )
