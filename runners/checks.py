"""Checks with one-line errors naming the fix: of a composed run config before any data or model
(`check_run_config`), and of training as it runs: a non-finite loss or gradient norm stops it as
`diverged` (`check_finite`), a run whose method parameters never changed ends as `frozen`
(`fingerprints` at the start, `unchanged` at the end)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import SimpleNamespace

import torch

from adapters.base import compile_pattern
from adapters.placement import parse_targets
from core import ConfigError
from runners.config import MODEL_KEYS, TOP_KEYS, TrainConfig
from runners.fastpath import COMPILE_MODES, COMPILE_SCOPES
from runners.state import Progress, RunStopped

DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _valid(keys) -> str:
    return ", ".join(sorted(keys))


def check_run_config(resolved: dict, t: TrainConfig, method_mod, method_cfg) -> None:
    if "energy" in resolved:  # conf/experiment/loda_a1_energy*.yaml: settings of a script, no training
        raise ConfigError(
            "this experiment trains nothing: run `make smoke-loda_a1_energy` or "
            "`make exp-loda_a1_energy CHECKPOINT=/path/to/gpt2-medium` (scripts/energy_curves.py)"
        )
    unknown = sorted(set(resolved) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"unknown top-level key {unknown[0]!r}; valid: {_valid(TOP_KEYS)}")
    model = resolved["model"]
    unknown = sorted(set(model) - set(MODEL_KEYS))
    if unknown:
        raise ConfigError(f"unknown key model.{unknown[0]}; valid keys: {_valid(MODEL_KEYS)}")
    seed = resolved["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(resolved["device"], str) or not DEVICE.match(resolved["device"]):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {resolved['device']!r}")
    check_train(t)
    check_model_task(model, resolved["task"])
    for key in ("target_modules", "head_modules"):
        value = model.get(key) or []
        groups = value.values() if isinstance(value, dict) else [value]
        for patterns in groups:
            if not isinstance(patterns, list):
                raise ConfigError(f"model.{key} must be a list of regexes, got {patterns!r}")
            if key == "target_modules":  # regexes, or mappings that split a fused module's blocks
                whole, splits = parse_targets(patterns)
                patterns = whole + [split.module for split in splits]
            for pattern in patterns:
                compile_pattern(pattern, key.removesuffix("_modules"))
    validate = getattr(method_mod, "validate", None)
    if validate is not None:
        validate(method_cfg, model)


# the output layer each task needs (its Task.head["type"]), how to call a model that has it, and an
# offline model that does: a mismatch is refused here, before transformers fails to build the model
TASK_HEADS = {
    "glue": "sequence_classification",
    "squad": "question_answering",
    "e2e": "causal_lm",
    "dart": "causal_lm",
    "vision": "image_classification",
}
HEAD_MODELS = {
    "sequence_classification": ("a text model", "tiny_deberta"),
    "question_answering": ("a text model", "tiny_deberta"),
    "causal_lm": ("a generative text model", "tiny_gpt2"),
    "image_classification": ("an image model", "tiny_vit"),
}


def check_model_task(model: dict, task: dict) -> None:
    """Refuses a model whose kind (image or text) or heads do not fit the task's output layer.

    A model with `image_processor` is an image model; a model whose `head_modules` is a mapping by
    head type (conf/model/*.yaml) has exactly those heads (DeBERTa has no causal-LM head)."""
    need = TASK_HEADS.get(task.get("name"))
    if need is None or model.get("builder") != "hf":  # the FNN builder checks its own task
        return
    from tasks import TASKS

    label = TASKS[task["name"]].TASK.label(SimpleNamespace(**task))
    image = "image_processor" in model
    needs_image = need == "image_classification"
    what, example = HEAD_MODELS[need]
    if image != needs_image:
        kind = "an image model" if image else "a text model"
        raise ConfigError(f"model={model['name']} is {kind}; task {label} needs {what}, e.g. model={example}")
    heads = model.get("head_modules")
    if isinstance(heads, Mapping) and need not in heads:
        raise ConfigError(
            f"model={model['name']} has no {need} head (it has {', '.join(sorted(heads))}); task {label} "
            f"needs {what}, e.g. model={example}"
        )


def _int(value, name: str, low: int = 1, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        null = " or null" if optional else ""
        raise ConfigError(f"train.{name} must be an integer >= {low}{null}, got {value!r}")


def check_train(t: TrainConfig) -> None:
    _int(t.epochs, "epochs")
    _int(t.max_steps, "max_steps", optional=True)
    _int(t.batch_size, "batch_size")
    _int(t.grad_accum, "grad_accum")
    _int(t.eval_batch_size, "eval_batch_size")
    _int(t.num_workers, "num_workers", low=0)
    _int(t.warmup_steps, "warmup_steps", low=0, optional=True)
    _int(t.checkpoint_every, "checkpoint_every", optional=True)
    _int(t.check_every, "check_every", optional=True)
    for name in ("lr", "eps"):
        value = getattr(t, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"train.{name} must be a number > 0, got {value!r}")
    if not isinstance(t.weight_decay, int | float) or t.weight_decay < 0:
        raise ConfigError(f"train.weight_decay must be >= 0, got {t.weight_decay!r}")
    if not 0 <= t.warmup_ratio < 1:
        raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {t.warmup_ratio!r}")
    if t.max_grad_norm is not None and not t.max_grad_norm > 0:
        raise ConfigError(f"train.max_grad_norm must be > 0 or null (no clipping), got {t.max_grad_norm!r}")
    if len(t.betas) != 2 or not all(0 <= b < 1 for b in t.betas):
        raise ConfigError(f"train.betas must be two numbers in [0, 1), got {t.betas!r}")
    if t.bf16 not in ("auto", True, False):
        raise ConfigError(f"train.bf16 must be auto, true or false, got {t.bf16!r}")
    for key in ("compile", "fused_optimizer"):
        if getattr(t, key) not in ("auto", True, False):
            raise ConfigError(f"train.{key} must be auto, true or false, got {getattr(t, key)!r}")
    if t.compile_mode not in COMPILE_MODES:
        raise ConfigError(
            f"train.compile_mode must be one of {', '.join(COMPILE_MODES)}, got {t.compile_mode!r}"
        )
    if t.compile_scope not in COMPILE_SCOPES:
        raise ConfigError(
            f"train.compile_scope must be one of {', '.join(COMPILE_SCOPES)}, got {t.compile_scope!r}"
        )
    _int(t.compile_min_steps, "compile_min_steps", low=0)
    if t.compile_cache not in (True, False):  # issue 28 (H2): runners/compile_cache.py
        raise ConfigError(f"train.compile_cache must be true or false, got {t.compile_cache!r}")
    if t.pad_to_multiple_of not in ("auto", None):
        _int(t.pad_to_multiple_of, "pad_to_multiple_of")
    if t.eval_epochs is not None:
        if not t.eval_epochs or not all(isinstance(e, int) and e >= 1 for e in t.eval_epochs):
            raise ConfigError(
                f"train.eval_epochs must be null or a list of epochs >= 1, got {t.eval_epochs!r}"
            )


# --- while training ---------------------------------------------------------------------------------


def check_finite(pending: list[torch.Tensor], progress: Progress, lr: float) -> None:
    """Raises `diverged` if a loss or gradient norm in `pending` is not finite (one host sync)."""
    if not pending:
        return
    values = torch.stack(pending).cpu()
    if bool(torch.isfinite(values).all()):
        progress.last_finite_loss = float(values[-1])
        return
    last = progress.last_finite_loss
    raise RunStopped(
        "diverged",
        f"non-finite loss or gradient norm by step {progress.step} "
        f"({'no finite loss yet' if last is None else f'last finite total loss {last:.6g}'}); lower train.lr (now {lr}) or method.reg_weight, or set train.max_grad_norm",
        diverged_at_step=progress.step,
        last_finite_loss=last,
        history=progress.history,
    )


def fingerprints(method) -> dict[str, tuple[float, float]]:
    """(sum, sum of squares) in float64 of every method parameter (head excluded): changed or not."""
    head = set(method.head)
    return {
        n: _fingerprint(p)
        for n, p in method.model.named_parameters()
        if (p.requires_grad or any(p is q for q in method.own_params)) and n not in head
    }


def _fingerprint(p: torch.Tensor) -> tuple[float, float]:
    x = p.detach().double()
    return float(x.sum()), float((x * x).sum())


def unchanged(method, watched: dict) -> str | None:
    """None if some watched parameter changed, else a short description of what stayed put."""
    now = {n: _fingerprint(p) for n, p in method.model.named_parameters() if n in watched}
    if not now or any(now[n] != watched[n] for n in now):
        return None
    names = sorted(now)
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
