"""What the runner sees of a method: which tensors train, plus optional hooks.

A method's `apply(model, cfg, targets)` freezes what it must, wraps what it adapts and returns a
`Method`. The runner only ever calls the hooks below, so a new method (or a new training-time
technique such as a regularizer or a gradient mask) plugs in without the runner naming it:

    loss = task_loss + method.extra_loss()        # regularizers (None: nothing to add)
    backward; clip
    method.before_step(optimizer)                 # e.g. gradient masks (after clipping)
    optimizer.step()
    method.after_step(optimizer)                  # e.g. strict masks, proximal steps, rank budgets
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn


class ConfigError(ValueError):
    """A bad configuration value; the message is one line and names the fix."""


class StepHook:
    """Something that acts around the optimizer step (both calls optional)."""

    def before_step(self, optimizer: torch.optim.Optimizer) -> None: ...

    def after_step(self, optimizer: torch.optim.Optimizer) -> None: ...


@dataclass
class Method:
    """A method applied to a model.

    Attributes:
        name: method name as in `conf/method/<name>.yaml`.
        model: the adapted model (modified in place).
        lowrank: adapted modules by qualified name; each exposes `lora_A` (R, d_in), `lora_B`
            (d_out, R) and `delta_weight()`. Empty for methods without low-rank factors.
        head: names of non-method parameters that train too (task head: pooler, classifier).
        loss_terms: callables returning a scalar added to the task loss.
        hooks: objects acting before / after each optimizer step.
        inference_params: parameters the method adds (or keeps) at inference, head excluded.
    """

    name: str
    model: nn.Module
    lowrank: dict[str, nn.Module] = field(default_factory=dict)
    head: list[str] = field(default_factory=list)
    loss_terms: list[Callable[[], torch.Tensor]] = field(default_factory=list)
    hooks: list[StepHook] = field(default_factory=list)
    inference_params: int = 0
    params_convention: str = ""

    def extra_loss(self) -> torch.Tensor | None:
        if not self.loss_terms:
            return None
        return sum(term() for term in self.loss_terms)

    def before_step(self, optimizer: torch.optim.Optimizer) -> None:
        for hook in self.hooks:
            hook.before_step(optimizer)

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        for hook in self.hooks:
            hook.after_step(optimizer)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def param_counts(self) -> dict[str, int | str]:
        """# trainable / # inference parameters; both include the task head (see `params_convention`)."""
        head = sum(p.numel() for n, p in self.model.named_parameters() if n in set(self.head))
        trainable = sum(p.numel() for p in self.trainable_parameters())
        total = sum(p.numel() for p in self.model.parameters())
        return {
            "trainable": trainable,
            "inference": self.inference_params + head,
            "total": total,
            "head": head,
            "method_trainable": trainable - head,
            "method_inference": self.inference_params,
            "convention": self.params_convention,
        }

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor that training changed (adapter factors, head; all weights for full FT)."""
        names = {n for n, p in self.model.named_parameters() if p.requires_grad}
        return {n: t.detach().cpu().contiguous() for n, t in self.model.state_dict().items() if n in names}


def match_modules(model: nn.Module, patterns: Iterable[str], what: str = "target") -> dict[str, nn.Module]:
    """Modules whose qualified name fully matches one of the regex `patterns` (each must match)."""
    patterns = list(patterns)
    if not patterns:
        return {}
    found: dict[str, nn.Module] = {}
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ConfigError(
                f"{what} {dict(pattern) if hasattr(pattern, 'items') else pattern!r} is not a regex: only "
                f"methods built on adapters/placement.py adapt blocks of a fused module; use a model "
                f"placement of plain regexes (e.g. model.placement=attn)"
            )
        regex = re.compile(pattern)
        hits = {n: m for n, m in model.named_modules() if n and regex.fullmatch(n)}
        if not hits:
            examples = ", ".join(n for n, m in list(model.named_modules())[1:8])
            raise ConfigError(
                f"{what} pattern {pattern!r} matches no module; fix model.{what}_modules "
                f"(regexes over qualified names such as: {examples}, ...)"
            )
        found.update(hits)
    return found


def freeze_all_but(model: nn.Module, trainable_prefixes: Iterable[str]) -> list[str]:
    """Freezes every parameter except those under one of `trainable_prefixes`; returns the kept names."""
    prefixes = tuple(trainable_prefixes)
    kept = []
    for name, p in model.named_parameters():
        train = any(name == pre or name.startswith(pre + ".") for pre in prefixes)
        p.requires_grad_(train)
        if train:
            kept.append(name)
    return kept
