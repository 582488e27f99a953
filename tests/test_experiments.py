"""Every `conf/experiment/*.yaml` composes, for every task × arm of its sweep, into a config the runner
accepts — and each run lands in a row of the paper table it is for (scripts/paper_numbers.py).
"""

from __future__ import annotations

import itertools

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from adapters import METHODS
from models import BUILDERS
from runners.checks import check_run_config
from runners.config import CONF, TRAIN_KEYS, TrainConfig, lookup, options, typed
from scripts.make_tables import get
from scripts.paper_numbers import TABLES
from tasks import TASKS

# experiment -> table(s) its records fill (experiments without a paper table: none)
TABLE_OF = {
    "rm_table1_glue": ["rm_table1_glue"],
    "rm_table2_squad_deberta": ["rm_table2_squad_deberta"],
    "rm_table3_squad_gpt2": ["rm_table3_squad_gpt2"],
    "rm_vit_classifier": ["rm_table5_vit_cifar100", "rm_fig2_vit_food101"],
    "loda_table1_e2e": ["loda_table1_e2e"],
    "loda_table2_dart": ["loda_table2_dart"],
    "minilm_glue": ["minilm_glue"],
}
NO_SWEEP = {"glue_smoke", "loda_a1_energy", "loda_a1_energy_smoke"}  # single runs / no training


def _yaml(group: str, name: str) -> dict:
    return yaml.safe_load((CONF / group / f"{name}.yaml").read_text()) or {}


def _defaults(group: str, name: str) -> list:
    return _yaml(group, name).get("defaults") or []


def _override(group: str, name: str, target: str) -> str | None:
    """The `override /target: X` of a config, following `- parent` entries (experiments)."""
    found = None
    for entry in _defaults(group, name):
        if isinstance(entry, str) and entry != "_self_":
            found = _override(group, entry, target) or found
        elif isinstance(entry, dict):
            for k, v in entry.items():
                if k == f"override /{target}":
                    found = v
    return found


def _sweep(name: str) -> dict[str, list[str]]:
    """Sweeper params (child over parent), values split at commas."""
    params = {}
    for entry in _defaults("experiment", name):
        if isinstance(entry, str) and entry != "_self_":
            params.update(_sweep(entry))
    own = ((_yaml("experiment", name).get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    params.update({k: [v.strip() for v in str(val).split(",")] for k, val in own.items()})
    return params


def _combos(exp: str) -> list[dict]:
    sweep = {k: v for k, v in _sweep(exp).items() if k != "seed"}  # seeds change no structure
    keys = sorted(sweep)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(sweep[k] for k in keys))]


def _cover(combos: list[dict]) -> list[dict]:
    """A subset in which every value of every axis occurs (composing all 99 task x arm pairs of
    Table 1 costs ~20 s; the axes are independent config groups, so each value once is the check)."""
    seen, out = set(), []
    for c in combos:
        new = {(k, v) for k, v in c.items()} - seen
        if new:
            out.append(c)
            seen |= new
    return out


EXPERIMENTS = [e for e in options("experiment") if e not in NO_SWEEP]


def _cases():
    return [
        pytest.param(exp, _cover(combos), id=f"{exp}-{len(combos)}combos")
        for exp in EXPERIMENTS
        if (combos := _combos(exp))
    ]


def _check(cfg, exp: str) -> None:
    """What the runner checks before any work: names, typed sections, interpolations, known keys."""
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every ${...} resolves
    method_mod = lookup(METHODS, cfg.method.name, "method")
    method_cfg = typed(method_mod.Config, cfg.method, "method")
    check_run_config(resolved, typed(TrainConfig, resolved["train"], "train"), method_mod, method_cfg)
    task_mod = lookup(TASKS, cfg.task.name, "task")
    task_cfg = typed(task_mod.Config, cfg.task, "task", drop=TRAIN_KEYS)
    lookup(BUILDERS, cfg.model.builder, "model builder")
    for name in TABLE_OF.get(exp.removesuffix("_smoke"), []):
        table = TABLES[name]
        label = task_mod.TASK.label(task_cfg)
        if label not in {c.task for c in table.columns}:
            continue  # this task feeds the experiment's other table
        assert cfg.model.name in table.models.values(), (exp, cfg.model.name, table.name)
        rows = [r.label for r in table.rows if all(get(resolved, k) == v for k, v in r.match.items())]
        assert len(rows) == 1, (
            f"{exp}: arm {cfg.method.name} (rank {cfg.method.get('rank')}) fills rows {rows}"
        )
        return
    assert exp.removesuffix("_smoke") not in TABLE_OF, f"{exp}: task {cfg.task.name} is in none of its tables"


@pytest.mark.slow
@pytest.mark.parametrize(("exp", "combos"), _cases())
def test_experiment_composes_and_fills_its_table(exp, combos):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for combo in combos:
            overrides = [f"experiment={exp}", *(f"{k}={v}" for k, v in combo.items()), "seed=1"]
            _check(compose("config", overrides=overrides), exp)


def test_every_sweep_has_three_seeds_and_a_smoke_variant():
    for exp in EXPERIMENTS:
        if exp.endswith("_smoke"):
            assert exp.removesuffix("_smoke") in EXPERIMENTS, exp
            continue
        assert f"{exp}_smoke" in EXPERIMENTS or exp == "fnn_methods", f"{exp} has no smoke variant"
        assert len(_sweep(exp)["seed"]) == 3, exp
    assert set(TABLE_OF) <= set(EXPERIMENTS)
