"""`python run.py [-m] experiment=<name> plan=true`: the sweep's runs, which are done, and an estimate of
the compute still needed — before anything starts (no job is launched, no model built).

The sweep is expanded exactly as Hydra's basic sweeper does (the config's `hydra.sweeper.params`, then
the command line's overrides, Cartesian product); every job is composed, its `run_id` computed and
looked up in the results store (`results/runs/<run_id>.json`).

Estimate per run still to do, from measured records in the same store, first match wins:
  1. `group`: successful runs of the same `group_id` (the other seeds of this cell): their mean wall time;
  2. `method`: same model, task and method (other rank / settings): mean wall time × epochs ratio;
  3. `task`: same model and task, any method: the same, less alike.
  Otherwise `none` (counted, shown as "?"). Hours are split by the device the measurement came from:
  GPU-hours only from records with `env.device_type == "cuda"`; CPU-measured times are reported apart
  (they overestimate a GPU run by orders of magnitude).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from runners.config import CONF, run_ids
from runners.record import read_json

PLAN_KEYS = ("plan", "+plan", "++plan")


def strip_plan(argv: list[str]) -> tuple[bool, list[str]]:
    """(plan requested, argv without the plan override and without -m/--multirun)."""
    wanted, rest = False, []
    for a in argv:
        key, sep, value = a.partition("=")
        if sep and key in PLAN_KEYS:
            wanted = value.strip().lower() in ("true", "1", "yes")
        elif a not in ("-m", "--multirun"):
            rest.append(a)
    return wanted, rest


def expand(overrides: list[str]) -> list[list[str]]:
    """Every job's override list, as the basic sweeper would launch them."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    base = compose("config", overrides=fixed, return_hydra_config=True)
    params = OmegaConf.to_container(base.hydra.sweeper.params or {}, resolve=False)
    # hydra.* overrides shaped the base (e.g. hydra.sweeper.params.task=...): not part of any job's config
    own = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
    lines = [f"{k}={v}" for k, v in params.items()] + own
    return BasicSweeper.split_arguments(parser.parse_overrides(lines), None)[0]


def _records(runs: Path) -> list[dict]:
    return [r for p in sorted(runs.glob("*.json")) if (r := read_json(p)) and r.get("status") == "success"]


def _epochs(rec_or_cfg: dict) -> float | None:
    train = rec_or_cfg.get("train") or (rec_or_cfg.get("config") or {}).get("train") or {}
    e = train.get("epochs")
    return float(e) if isinstance(e, (int, float)) and e > 0 else None


def estimate(resolved: dict, group_id: str, done: list[dict]) -> tuple[float | None, str, str]:
    """(seconds, basis, device type of the measurement)."""
    model = resolved.get("model", {}).get("name")
    method = resolved.get("method", {}).get("name")
    tiers = [
        ("group", lambda r: r.get("group_id") == group_id),
        (
            "method",
            lambda r: r.get("model") == model and r.get("method") == method and _same_task(r, resolved),
        ),
        ("task", lambda r: r.get("model") == model and _same_task(r, resolved)),
    ]
    for basis, pred in tiers:
        hits = [
            r for r in done if pred(r) and isinstance((r.get("timing") or {}).get("wall_s"), (int, float))
        ]
        if not hits:
            continue
        secs = []
        for r in hits:
            s = r["timing"]["wall_s"]
            mine, theirs = _epochs(resolved), _epochs(r)
            if basis != "group" and mine and theirs:
                s *= mine / theirs
            secs.append(s)
        devices = {(r.get("env") or {}).get("device_type", "?") for r in hits}
        return statistics.fmean(secs), basis, "cuda" if devices == {"cuda"} else "/".join(sorted(devices))
    return None, "none", "-"


def _same_task(rec: dict, resolved: dict) -> bool:
    a, b = (rec.get("config") or {}).get("task") or {}, resolved.get("task") or {}
    return a.get("name") == b.get("name") and a.get("subset") == b.get("subset")


def plan(argv: list[str]) -> str:
    """The plan as text (also the return value of `run.py ... plan=true`)."""
    GlobalHydra.instance().clear()
    lines, rows = [], []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        jobs = expand(argv)
        first = compose("config", overrides=jobs[0]) if jobs else None
        runs = Path(first.paths.results_dir) / "runs" if first is not None else Path("results/runs")
        done_records = _records(runs)
        for i, job in enumerate(jobs):
            try:
                cfg = compose("config", overrides=job)
                resolved = OmegaConf.to_container(cfg, resolve=True)
            except Exception as e:  # a job that cannot even compose: say so, keep planning the rest
                rows.append(
                    (i, "ERROR", "-", None, "-", "-", job, f"{type(e).__name__}: {str(e).splitlines()[0]}")
                )
                continue
            run_id, group_id = run_ids(resolved)
            rec = read_json(runs / f"{run_id}.json") or {}
            status = rec.get("status") or "todo"
            if status == "success" and not resolved.get("force"):
                rows.append((i, "done", run_id, (rec.get("timing") or {}).get("wall_s"), "measured",
                             (rec.get("env") or {}).get("device_type", "?"), job, ""))  # fmt: skip
                continue
            secs, basis, dev = estimate(resolved, group_id, done_records)
            rows.append((i, "todo" if status in ("todo", "success") else f"todo ({status})", run_id, secs, basis,
                         dev, job, ""))  # fmt: skip
    shown = [o for o in argv if "=" in o]
    lines.append(f"plan for: {' '.join(shown) or '(defaults)'}  — nothing is started")
    lines.append(f"results store: {runs}")
    lines.append(f"{'#':>4}  {'status':<16} {'run_id':<12} {'est.':>9}  {'basis':<8} {'dev':<5} overrides")
    for i, status, run_id, secs, basis, dev, job, err in rows:
        est = (
            "?"
            if secs is None
            else f"{secs:.0f} s"
            if secs < 120
            else f"{secs / 60:.1f} min"
            if secs < 7200
            else f"{secs / 3600:.2f} h"
        )
        varying = " ".join(o for o in job if o.split("=")[0] not in {s.split("=")[0] for s in _fixed(argv)})
        lines.append(
            f"{i:>4}  {status:<16} {run_id:<12} {est:>9}  {basis:<8} {dev:<5} {varying}{'  ' + err if err else ''}"
        )
    todo = [r for r in rows if r[1].startswith("todo")]
    by_dev: dict[str, float] = defaultdict(float)
    unknown = 0
    for r in todo:
        if r[3] is None:
            unknown += 1
        else:
            by_dev["GPU-hours" if r[5] == "cuda" else f"hours measured on {r[5]} (not GPU)"] += r[3] / 3600
    errors = sum(r[1] == "ERROR" for r in rows)
    lines.append(
        f"runs: {len(rows)} | done: {sum(r[1] == 'done' for r in rows)} | to run: {len(todo)} | "
        f"cannot compose: {errors}"
    )
    est = ", ".join(f"{h:.3g} {k}" for k, h in sorted(by_dev.items())) or "no measurement yet"
    lines.append(f"estimated compute for the runs to do: {est}; without any measurement: {unknown} runs")
    return "\n".join(lines)


def _fixed(argv: list[str]) -> list[str]:
    return [a for a in argv if "=" in a and "," not in a]
