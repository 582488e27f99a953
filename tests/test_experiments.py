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
    "peft_variants_glue": ["peft_variants_glue"],
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


# --- make check-experiments (issue 25): real step counts, check_plan, setup on a stand-in model ----


def _compose_in(fn):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return fn(lambda overrides: compose("config", overrides=overrides))


def test_planned_steps_follow_the_runner_formula_and_official_sizes():
    from tasks.sizes import UnknownSize, planned_steps, train_examples

    # runners/train.py: ceil(n / batch) batches, ceil(/ grad_accum) steps per epoch, max_steps wins
    assert planned_steps(635, 32, 1, 5, None) == {"total_steps": 100, "steps_per_epoch": 20, "epochs": 5}
    assert planned_steps(635, 32, 3, 5, None)["steps_per_epoch"] == 7
    assert planned_steps(635, 32, 1, 5, 30) == {"total_steps": 30, "steps_per_epoch": 20, "epochs": 2}
    assert train_examples({"name": "glue", "subset": "sst2", "train_split": "train"}) == 67349
    assert (
        train_examples(
            {"name": "glue", "subset": "rte", "train_split": "train[:100]", "max_train_samples": 64}
        )
        == 64
    )
    assert train_examples({"name": "vision", "dataset": "food101", "train_split": "train"}) == 75750
    assert train_examples({"name": "synthetic_fnn", "n_train": 4096}) == 4096
    with pytest.raises(UnknownSize):  # a validation slice used for training has no known size
        train_examples({"name": "glue", "subset": "qnli", "train_split": "validation[:1000]"})


def test_table1_sweep_is_297_runs_in_99_structures_of_three_seeds():
    from runners.check_experiments import structures
    from runners.sweep import expand

    groups = _compose_in(lambda c: structures(expand(["experiment=rm_table1_glue"])))
    assert len(groups) == 99 and all(sorted(s) == ["1", "2", "3"] for s in groups.values())


def test_adalora_wnli_cell_of_table1_sets_up_with_its_real_plan():
    """Finding 1: 635 examples / 32 x 5 epochs = 100 steps; tinit 50 + tfinal 50 left no budgeting
    phase and setup raised. Now the schedule fits the run (25 / 25 / 10) and the record says so."""
    from runners.check_experiments import StandIns, check_config, stand_in_setup

    def go(c):
        job = ["experiment=rm_table1_glue", "task=glue/wnli", "arm=adalora_16to8"]
        cfg = c([*job, "seed=1"])
        out = check_config(cfg)
        assert out.error is None and out.plan.total_steps == 100 and out.plan.train_examples == 635
        assert any("25/25/10" in f for f in out.findings)
        return stand_in_setup(cfg, job, out, StandIns(c))  # raised ConfigError before the fix

    counts = _compose_in(go).extra_counts()
    assert (counts["tinit"], counts["tfinal"], counts["deltaT"], counts["total_step"]) == (25, 25, 10, 100)
    assert counts["schedule_given"] == {"tinit": 50, "tfinal": 50, "deltaT": 10}


def test_check_experiments_catches_the_old_fixed_schedule(monkeypatch):
    """The check would have caught finding 1: WNLI's AdaLoRA with tinit 50 / tfinal 50 fixed fails,
    through check_plan and, without check_plan, through setup on the stand-in model."""
    from adapters import adalora
    from runners.check_experiments import run_checks

    old = ["task=glue/wnli", "arm=adalora_8to4", "method.schedule=fixed"]
    report = run_checks(["rm_table1_glue"], old)
    assert report.experiments == {"rm_table1_glue": 3} and report.configs == 1
    assert len(report.failures) == 1 and "100 steps" in report.failures[0]
    assert "tinit < total_steps - tfinal" in report.failures[0] and "\n" not in report.failures[0]
    monkeypatch.delattr(adalora, "check_plan")
    report = run_checks(["rm_table1_glue"], old)
    assert len(report.failures) == 1 and "setup on the stand-in model" in report.failures[0]
    assert not run_checks(["rm_table1_glue"], old, build=False).failures  # the build is what caught it
    monkeypatch.undo()
    fit = run_checks(["rm_table1_glue"], old[:2])  # the default schedule: runs, with a finding
    assert not fit.failures and len(fit.findings) == 1 and "using 25/25/10" in fit.findings[0]


def test_stand_in_width_decides_size_limits_as_the_real_model():
    """A rank the real ViT classifier (768 -> 100 classes) cannot hold fails on the stand-in; one
    it can hold (r = 100 on Food-101's 101 classes) passes, though the tiny ViT is 32 wide."""
    from runners.check_experiments import run_checks

    bad = run_checks(["rm_vit_classifier"], ["task=cifar100", "arm=lora_r80", "method.rank=101"])
    assert len(bad.failures) == 1 and "exceeds min(d_in, d_out) = 100" in bad.failures[0]
    assert not run_checks(["rm_vit_classifier"], ["task=food101", "arm=lora_r80", "method.rank=100"]).failures
