"""`make check-experiments`: would every run of every full paper experiment start and train?

    python -m runners.check_experiments                    # every full experiment in conf/experiment/
    python -m runners.check_experiments rm_table1_glue     # some of them
    python -m runners.check_experiments --no-build ...     # config checks and check_plan only

For every FULL experiment (not `*_smoke`, not `loda_a1_energy`, which trains nothing) the sweep is
expanded as Hydra's basic sweeper does (runners/sweep.py `expand`). Seeds share structure: each task ×
arm is composed once, and the number of runs is checked (every structure has every seed). Per config:

1. what the runner checks before any work (runners/train.py `run`): the typed sections, the method's
   `validate`, `runners.checks.check_run_config`, the model builder's `check_task`;
2. the run's real plan, from the task's official train-set size (tasks/sizes.py) and train.py's
   formula (⌈n / batch⌉ batches, ⌈· / grad_accum⌉ steps per epoch, max_steps or epochs × that);
3. the method module's optional `check_plan(cfg, plan)` (adapters/base.py): raises if the run would
   fail, returns findings on long-horizon dynamics (AdaLoRA's schedule, SoRA's gate survival);
4. unless `--no-build`: the method built on a tiny stand-in of the run's model (tiny_deberta /
   tiny_gpt2 / tiny_vit, same experiment, arm and task) and `method.setup(plan)` with the real plan,
   so that a failure in setup shows even where no `check_plan` exists.

Exit 1 if any config would fail (each listed with its overrides and a one-line reason); findings are
printed, not failures. `plan=true` runs steps 1-3 through `check_config` (the same code).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from adapters import METHODS
from adapters.base import Plan
from core import ConfigError
from models import BUILDERS
from runners.checks import check_run_config
from runners.config import CONF, TRAIN_KEYS, TrainConfig, heads_for, lookup, options, typed
from runners.sweep import expand
from tasks import TASKS
from tasks.base import DataError
from tasks.sizes import VISION_CLASSES, UnknownSize, planned_steps, train_examples

NO_TRAINING = {"loda_a1_energy"}  # energy curves of a checkpoint: scripts/energy_curves.py
# The stand-in a run's method is built on: the tiny random-weight model of the same architecture (its
# YAML: target patterns, partial-FT sets over its 2 blocks; a small trained vocabulary, which no
# method sees) at width W = the smallest even width >= every integer setting of the method (rank,
# init_r, base_rank, bottleneck, ...) and >= the tiny width, but <= the real model's width. Every
# size limit of a method (r <= min(d_in, d_out); d_in, d_out are multiples of the width, or the
# head's fixed class count) then decides as on the real model, while most stand-ins stay 32 wide:
# R-LoDA's SVD of a real 1024 x 3072 GPT-2 medium matrix alone takes ~10 s on a CI core.
# Real widths: the HF configs of deberta-v3-base, gpt2, gpt2-medium, vit-base-patch16,
# all-MiniLM-L6-v2 (a BERT: its method settings are checked on a DeBERTa block).
STAND_IN = {  # model: (tiny model, its width key, the real width)
    "deberta_v3_base": ("tiny_deberta", "hidden_size", 768),
    "deberta_v3_base_random": ("tiny_deberta", "hidden_size", 768),
    "minilm_l6": ("tiny_deberta", "hidden_size", 384),
    "gpt2": ("tiny_gpt2", "n_embd", 768),
    "gpt2_medium": ("tiny_gpt2", "n_embd", 1024),
    "vit_b16": ("tiny_vit", "hidden_size", 768),
}
TINY = {"tiny_deberta", "tiny_gpt2", "tiny_vit", "fnn"}  # checked as they are
STAND_IN_VOCAB = 300  # WordPiece trained on a few words: embeddings stay small


def full_experiments() -> list[str]:
    return [e for e in options("experiment") if not e.endswith("_smoke") and e not in NO_TRAINING]


@dataclass
class Outcome:
    """What one config would do: an error (one line) or its plan, and findings that don't stop it."""

    error: str | None = None
    plan: Plan | None = None
    findings: list[str] = field(default_factory=list)
    resolved: dict | None = None


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def head_for(task: dict) -> dict | None:
    """The task's head spec (as its Task class gives it) from the config alone: no data is read."""
    name = task.get("name")
    if name == "glue":
        from tasks.glue import SPECS

        n = SPECS[task["subset"]].num_labels
        kind = "regression" if n == 1 else "single_label_classification"
        return {"type": "sequence_classification", "num_labels": n, "problem_type": kind}
    if name == "squad":
        return {"type": "question_answering"}
    if name in ("e2e", "dart"):
        return {"type": "causal_lm"}
    if name == "vision":
        return {
            "type": "image_classification",
            "num_labels": VISION_CLASSES[(task["dataset"], task["label_column"])],
        }
    return None  # synthetic_fnn: the FNN's own output


def plan_for(resolved: dict, t: TrainConfig) -> Plan:
    """The run's plan as runners/train.py computes it, from the task's known train-set size."""
    n = train_examples(resolved["task"])
    steps = planned_steps(n, t.batch_size, t.grad_accum, t.epochs, t.max_steps)
    return Plan(
        total_steps=steps["total_steps"],
        steps_per_epoch=steps["steps_per_epoch"],
        epochs=steps["epochs"],
        batch_size=t.batch_size * t.grad_accum,
        num_processes=1,  # train.batch_size is the global batch: the step count does not depend on it
        train_examples=n,
    )


def check_config(cfg: DictConfig) -> Outcome:
    """Steps 1-3 of the module docstring for one composed config (no model, no data)."""
    out = Outcome()
    try:
        try:
            out.resolved = OmegaConf.to_container(cfg, resolve=True)
        except OmegaConfBaseException as e:
            raise ConfigError(f"cannot resolve the config: {str(e).splitlines()[0]}") from e
        resolved = out.resolved
        t = typed(TrainConfig, resolved["train"], "train")
        method_mod = lookup(METHODS, cfg.method.name, "method")
        task_mod = lookup(TASKS, cfg.task.name, "task")
        builder = lookup(BUILDERS, cfg.model.builder, "model builder")
        method_cfg = typed(method_mod.Config, cfg.method, "method")
        typed(task_mod.Config, cfg.task, "task", drop=TRAIN_KEYS)
        check_run_config(resolved, t, method_mod, method_cfg)
        builder.check_task(cfg.model.name, cfg.task.name)
        out.plan = plan_for(resolved, t)
        check_plan = getattr(method_mod, "check_plan", None)
        if check_plan is not None:
            out.findings += check_plan(method_cfg, out.plan)
    except UnknownSize as e:  # the run may be fine: its step count is just not known here
        out.findings.append(f"no planned step count: {e}")
    except (ConfigError, DataError, OmegaConfBaseException, KeyError, TypeError, ValueError) as e:
        out.error = one_line(e)
    return out


class StandIns:
    """Stand-in models: configs (one compose per experiment and model.* overrides) and models per head
    (built once, deep-copied for each config: a method changes the model it adapts)."""

    def __init__(self, compose):
        self.compose, self.configs, self.tokenizers, self.models = compose, {}, {}, {}

    def model_cfg(self, overrides: list[str], cfg: DictConfig) -> DictConfig:
        name = cfg.model.name
        if name in TINY:
            return cfg.model
        if name not in STAND_IN:
            raise ConfigError(
                f"no stand-in for model {name!r}; add one to STAND_IN (runners/check_experiments.py)"
            )
        tiny, key, real = STAND_IN[name]
        # the model section depends on the experiment and model.* overrides only (e.g. placement: all)
        shaping = [o for o in overrides if o.lstrip("+").startswith(("experiment=", "model."))]
        ck = (tuple(shaping), tiny)
        if ck not in self.configs:
            self.configs[ck] = self.compose([*shaping, f"model={tiny}"]).model
        model = self.configs[ck].copy()
        method = OmegaConf.to_container(cfg.method, resolve=True)
        ints = [v for v in _values(method) if isinstance(v, int) and not isinstance(v, bool)]
        width = min(real, max([int(model.config[key])] + [v + v % 2 for v in ints if v <= real]))
        with open_dict(model):
            model.config[key] = width
            if "intermediate_size" in model.config:  # DeBERTa / ViT / BERT: 4 x width (GPT-2: its default)
                model.config.intermediate_size = 4 * width
            if model.get("image_processor") is None:
                model.tokenizer, model.tokenizer_train_vocab = None, STAND_IN_VOCAB
        return model

    def model(self, model_cfg: DictConfig, head: dict | None):
        import copy

        key = (OmegaConf.to_yaml(model_cfg), repr(head))
        if key not in self.models:
            builder = BUILDERS[model_cfg.builder]
            words = [" ".join(f"w{i}" for i in range(STAND_IN_VOCAB))] * 2
            tokenizer = builder.build_tokenizer(model_cfg, words)
            self.models[key] = builder.build_model(model_cfg, head, tokenizer)
        return copy.deepcopy(self.models[key])


def _values(obj):
    """Every leaf value of a nested dict / list."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _values(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _values(v)
    else:
        yield obj


def stand_in_setup(cfg: DictConfig, overrides: list[str], outcome: Outcome, stand_ins: StandIns):
    """Step 4: builds the method on the stand-in model and runs `setup` with the real plan."""
    import torch

    scfg = cfg.copy()
    with open_dict(scfg):  # the run's config on the stand-in model: model-dependent method keys re-resolve
        scfg.model = stand_ins.model_cfg(overrides, cfg)
    method_mod = METHODS[cfg.method.name]
    method_cfg = typed(method_mod.Config, scfg.method, "method")
    model_cfg = OmegaConf.to_container(scfg.model, resolve=True)
    head = head_for(outcome.resolved["task"])
    method = method_mod.apply(
        stand_ins.model(scfg.model, head),
        method_cfg,
        list(model_cfg["target_modules"]),
        heads_for(model_cfg, head),
        torch.Generator().manual_seed(int(cfg.seed)),
    )
    method.setup(outcome.plan)
    return method


def check_job(cfg: DictConfig, overrides: list[str], stand_ins: StandIns | None) -> Outcome:
    """Steps 1-4 for one composed job (`stand_ins` None: steps 1-3 only)."""
    out = check_config(cfg)
    if out.error is None and stand_ins is not None and out.plan is not None:
        try:
            stand_in_setup(cfg, overrides, out, stand_ins)
        except Exception as e:  # any failure in apply / setup is what the real run would hit
            out.error = f"setup on the stand-in model: {one_line(e)}"
    return out


@dataclass
class Report:
    experiments: dict[str, int] = field(default_factory=dict)  # runs per experiment
    configs: int = 0
    failures: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)


def structures(jobs: list[list[str]]) -> dict[tuple[str, ...], list[str]]:
    """Jobs grouped by everything but the seed: {overrides without seed: [seed values]}."""
    groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for job in jobs:
        key = tuple(o for o in job if not o.startswith("seed="))
        groups[key] += [o.partition("=")[2] for o in job if o.startswith("seed=")] or ["-"]
    return groups


def check_experiment(experiment: str, extra: list[str], build: bool, report: Report, stand_ins) -> None:
    jobs = expand([f"experiment={experiment}", *extra])
    report.experiments[experiment] = len(jobs)
    groups = structures(jobs)
    seeds = {tuple(sorted(s)) for s in groups.values()}
    if len(seeds) > 1:  # a structure missing a seed (or with one twice): the table's n would differ
        report.failures.append(f"{experiment}: structures do not share one seed list: {sorted(seeds)}")
    for key, run_seeds in groups.items():
        report.configs += 1
        shown = " ".join(o for o in key if not o.startswith("experiment="))
        where = f"{experiment} {shown} ({len(run_seeds)} runs)"
        try:
            cfg = stand_ins.compose(list(key) + [f"seed={run_seeds[0]}"] * (run_seeds[0] != "-"))
        except Exception as e:  # cannot even compose: Hydra's message
            report.failures.append(f"{where}: {one_line(e)}")
            continue
        out = check_job(cfg, list(key), stand_ins if build else None)
        steps = f"{out.plan.total_steps} steps" if out.plan else "steps unknown"
        if out.error:
            report.failures.append(f"{where}, {steps}: {out.error}")
        report.findings += [f"{where}, {steps}: {f}" for f in out.findings]


def run_checks(experiments: list[str], extra: list[str] = (), build: bool = True) -> Report:
    """Checks every config of `experiments` (each with `extra` overrides appended)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from runners.config import register_resolvers

    register_resolvers()
    report = Report()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        stand_ins = StandIns(lambda overrides: compose("config", overrides=overrides))
        for experiment in experiments:
            check_experiment(experiment, list(extra), build, report, stand_ins)
    GlobalHydra.instance().clear()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="*", help="default: every full experiment")
    parser.add_argument("--no-build", action="store_true", help="skip the stand-in model build + setup")
    parser.add_argument("--override", action="append", default=[], help="appended to every job")
    args = parser.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore")  # PEFT / transformers warnings on tiny random models
    tic = time.perf_counter()
    names = args.experiments or full_experiments()
    unknown = sorted(set(names) - set(options("experiment")))
    if unknown:
        print(f"unknown experiment {unknown[0]!r}; valid: {', '.join(full_experiments())}", file=sys.stderr)
        return 2
    report = run_checks(names, args.override, build=not args.no_build)
    runs = sum(report.experiments.values())
    for line in report.findings:
        print(f"finding  {line}")
    for line in report.failures:
        print(f"FAIL     {line}")
    counts = ", ".join(f"{e} {n}" for e, n in report.experiments.items())
    print(
        f"check-experiments: {len(report.experiments)} experiments, {runs} runs ({counts}), "
        f"{report.configs} distinct configs (seeds share structure), "
        f"{'stand-in setup ' if not args.no_build else ''}checked in {time.perf_counter() - tic:.0f} s: "
        f"{len(report.failures)} failing, {len(report.findings)} findings"
    )
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
