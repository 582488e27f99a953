"""What the runner sees of a method: which tensors train, plus optional hooks.

A method's `apply(model, cfg, targets, heads, generator)` freezes what it must, wraps what it adapts
and returns a `Method`. The runner only ever calls the hooks below, so a new method (or a new
training-time technique such as a regularizer or a gradient mask) plugs in without the runner naming it:

    method.setup(plan)                            # the run's real plan (AdaLoRA's total_step)
    loss = task_loss + method.extra_loss()        # regularizers (None: nothing to add)
    backward; clip (the runner's optimizer params)
    method.before_step(optimizer, step)           # e.g. gradient masks (after clipping)
    optimizer.step()
    method.after_step(optimizer, step)            # e.g. strict masks, proximal steps, rank budgets
    model.zero_grad()                             # every gradient, `own_params` included
    ...
    method.finish()                               # once after training: prune, remove ranks
    method.state_dict() / load_state_dict()       # checkpoints: everything a hook needs to resume

A module may also define `validate(method_cfg, model_cfg: dict)`, called before any model is built,
and `check_plan(cfg: Config, plan: Plan) -> list[str]`, called with the run's real plan before any
model or data exists (`make check-experiments`, `plan=true`: runners/check_experiments.py): it raises
ConfigError if a run with this plan would fail (the same check its `setup` runs: share the code) and
returns one-line findings on long-horizon dynamics that do not stop the run (AdaLoRA's budget
schedule, SoRA's gate survival). Callers look it up with `getattr(module, "check_plan", None)`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from core import ConfigError  # its home before core.py: `adapters.base.ConfigError` is the same class


@dataclass(frozen=True)
class Plan:
    """The run's training plan, handed to every method before the first step."""

    total_steps: int  # optimizer steps this run takes
    steps_per_epoch: int
    epochs: int
    batch_size: int  # examples per optimizer step over all processes (batch · accumulation · processes)
    num_processes: int
    train_examples: int


class StepHook:
    """Something that acts around the optimizer step (every call optional).

    `step` is the 1-based index of the optimizer step being taken. `after_step` runs after
    `optimizer.step()` and before the gradients are zeroed.
    """

    def setup(self, plan: Plan) -> None: ...

    def before_step(self, optimizer: torch.optim.Optimizer, step: int) -> None: ...

    def after_step(self, optimizer: torch.optim.Optimizer, step: int) -> None: ...

    def finish(self) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class Method:
    """A method applied to a model.

    Attributes:
        name: method name as in `conf/method/<name>.yaml`.
        model: the adapted model (modified in place).
        lowrank: adapted modules by qualified name; each exposes `lora_A` (R, d_in), `lora_B`
            (d_out, R) and `delta_weight()`. Empty for methods without low-rank factors.
        head: names of non-method parameters that train too (task head: pooler, classifier).
        loss_terms: callables returning a scalar added to the task loss. A term whose `analytic`
            is true also has `add_grad(scale) -> value`, which adds `scale · ∇term` to its
            parameters' `.grad` itself and returns the value without a graph; the runner calls
            that after the task loss's backward (`autograd_loss` + `add_loss_grads`).
        hooks: objects acting before / after each optimizer step (`StepHook`).
        inference_params: parameters the method adds (or keeps) at inference, head excluded; a
            callable is evaluated when counted (after `finish`, e.g. once ranks are pruned).
        own_params: trainable parameters a hook steps with its own optimizer (e.g. SoRA's gates);
            the runner's optimizer and gradient clipping skip them.
        extra_counts: optional, more accounting for the record (ranks at inference, sparsity).
        exporter: optional, writes exports (e.g. a PEFT-format adapter) into the given folder.
    """

    name: str
    model: nn.Module
    lowrank: dict[str, nn.Module] = field(default_factory=dict)
    head: list[str] = field(default_factory=list)
    loss_terms: list[Callable[[], torch.Tensor]] = field(default_factory=list)
    hooks: list[StepHook] = field(default_factory=list)
    inference_params: int | Callable[[], int] = 0
    params_convention: str = ""
    own_params: list[nn.Parameter] = field(default_factory=list)
    extra_counts: Callable[[], dict] | None = None
    exporter: Callable[[Path], None] | None = None

    def extra_loss(self) -> torch.Tensor | None:
        """Every loss term's value, through autograd."""
        if not self.loss_terms:
            return None
        return sum(term() for term in self.loss_terms)

    @property
    def autograd_terms(self) -> list[Callable[[], torch.Tensor]]:
        """The loss terms that go through autograd (all but the `analytic` ones)."""
        return [term for term in self.loss_terms if not getattr(term, "analytic", False)]

    def autograd_loss(self) -> torch.Tensor | None:
        """The sum of `autograd_terms`: what the runner adds to the task loss before backward."""
        terms = self.autograd_terms
        return sum(term() for term in terms) if terms else None

    def add_loss_grads(self, scale: float = 1.0) -> torch.Tensor | None:
        """The `analytic` terms: adds `scale · ∇term` to `.grad` (call after backward, before clipping);
        returns their summed value (no graph), None when there are none."""
        values = [term.add_grad(scale) for term in self.loss_terms if getattr(term, "analytic", False)]
        return sum(values) if values else None

    def setup(self, plan: Plan) -> None:
        for hook in self.hooks:
            hook.setup(plan)

    def before_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        for hook in self.hooks:
            hook.before_step(optimizer, step)

    def after_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        for hook in self.hooks:
            hook.after_step(optimizer, step)

    def finish(self) -> None:
        for hook in self.hooks:
            hook.finish()

    def state_dict(self) -> list[dict]:
        return [hook.state_dict() for hook in self.hooks]

    def load_state_dict(self, states: list[dict]) -> None:
        for hook, state in zip(self.hooks, states, strict=True):
            hook.load_state_dict(state)

    def optimizer_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) pairs the runner's optimizer steps: trainable, not in `own_params`."""
        own = {id(p) for p in self.own_params}
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad and id(p) not in own]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def param_counts(self) -> dict[str, int | str]:
        """# trainable / # inference parameters; both include the task head (see `params_convention`)."""
        head = sum(p.numel() for n, p in self.model.named_parameters() if n in set(self.head))
        trainable = sum(p.numel() for p in self.trainable_parameters())
        total = sum(p.numel() for p in self.model.parameters())
        inference = self.inference_params() if callable(self.inference_params) else self.inference_params
        return {
            "trainable": trainable,
            "inference": inference + head,
            "total": total,
            "head": head,
            "method_trainable": trainable - head,
            "method_inference": inference,
            "convention": self.params_convention,
        }

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor that training changed (adapter factors, head; all weights for full FT)."""
        names = {n for n, p in self.model.named_parameters() if p.requires_grad}
        return {n: t.detach().cpu().contiguous() for n, t in self.model.state_dict().items() if n in names}


def compile_pattern(pattern: str, what: str = "target") -> re.Pattern:
    try:
        return re.compile(pattern)
    except (re.error, TypeError) as e:
        raise ConfigError(f"model.{what}_modules: invalid regex {pattern!r} ({e}); fix the pattern") from e


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
        regex = compile_pattern(pattern, what)
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
