"""`python run.py [-m] experiment=<name> plan=true`: the sweep's runs, which are done, and an estimate of
the compute still needed — before anything starts (no job is launched, no model built).

The sweep is expanded exactly as Hydra's basic sweeper does (runners/sweep.py `expand`: the config's
`hydra.sweeper.params`, then the command line's overrides, Cartesian product); every job is composed, its `run_id` computed and
looked up in the results store (`results/runs/<run_id>.json`).

Estimate per run still to do, from measured records in the same store, first match wins:
  1. `group`: successful runs of the same `group_id` (the other seeds of this cell): their mean wall time;
  2. `method`: same model, task and method (other rank / settings): mean wall time × epochs ratio;
  3. `task`: same model and task, any method: the same, less alike.
  Without a measured record, from the committed step-time table (docs/bench/step_times.csv: ms per
  optimizer step measured on the GPU machine per model × method × sequence length × batch), nearest
  match first, the basis said per row:
  (rows of the path the run takes: compiled layers for runs of >= train.compile_min_steps, else eager)
  4. `table`: same model, method and sequence length;
  5. `table~lr`: same model, a low-rank method of either family (LoRA-, LoDA-): the family's plain row;
  6. `table~any`: same model, any method: its slowest row (an upper bound).
  seconds = planned optimizer steps (runners/check_experiments.py: official train-set size, batch,
  accumulation, epochs) × ms/step × tokens-per-step ratio (batch × max_length vs the row's; GLUE's
  dynamic padding makes real steps shorter) + RUN_OVERHEAD_S per run. Evaluation is not counted.
  Otherwise `none` (counted, shown as "?"). Hours are split by the device the measurement came from:
  GPU-hours only from records with `env.device_type == "cuda"` and the table (measured on CUDA);
  CPU-measured times are reported apart (they overestimate a GPU run by orders of magnitude).

Every composed job is also checked as `make check-experiments` checks it (runners/check_experiments.py
`check_job`: config checks, the real plan, the method's `check_plan`, setup on a stand-in model; once
per seed-free structure): a run that would fail is listed as FAIL with its one-line reason.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from core import read_json
from runners.config import CONF, ROOT, TrainConfig, run_ids
from runners.store import has_weights
from runners.sweep import expand

PLAN_KEYS = ("plan", "+plan", "++plan")
STEP_TABLE = ROOT / "docs" / "bench" / "step_times.csv"
# Per run, beside its steps: process start, imports, model load and data (README: ~25 s start-up per
# run on the H200) plus the compiled layers' warm-up (docs/bench rows: warmup_s 12-14 s for the first
# compiled row of a process; docs/bench/h200-2026-12-02b-cola-1epoch-compiled-record.json: 46.6 s for a cold-compiled CoLA run's first epoch).
RUN_OVERHEAD_S = 60.0
LORA_FAMILY = {"lora", "r_lora", "gm_lora", "rm_lora", "adalora", "sora"}
LODA_FAMILY = {"loda", "loda_plus", "r_loda", "r_loda_plus", "s_loda", "s_loda_plus"}


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


def step_table(path=STEP_TABLE) -> list[dict]:
    """The committed step-time rows (docs/bench/step_times.csv), numbers parsed."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["seq_len"], r["batch"], r["ms_per_step"] = (
            int(r["seq_len"]),
            int(r["batch"]),
            float(r["ms_per_step"]),
        )
    return rows


def table_estimate(resolved: dict, steps: int, table: list[dict]) -> tuple[float, str, str] | None:
    """(seconds, basis, detail) from the step-time table, nearest match first (module docstring)."""
    model, method = resolved["model"]["name"], resolved["method"]["name"]
    train, seq = resolved["train"], resolved["task"].get("max_length")
    batch = int(train["batch_size"]) * int(train.get("grad_accum") or 1)
    # the runner compiles its layers on CUDA for runs of >= compile_min_steps (train.compile=auto):
    # rows of the path this run takes, when the table has any for this model
    compile_ = train.get("compile", "auto")
    path = (
        "compiled"
        if compile_ is True
        or (compile_ == "auto" and steps >= train.get("compile_min_steps", TrainConfig.compile_min_steps))
        else "eager"
    )
    mine = [r for r in table if r["model"] == model]
    mine = [r for r in mine if r["path"] == path] or mine
    family = next((f for f in (LORA_FAMILY, LODA_FAMILY) if method in f), None)
    plain = {id(LORA_FAMILY): "lora", id(LODA_FAMILY): "loda"}
    tiers = [
        ("table", [r for r in mine if r["method"] == method and r["seq_len"] == seq]),
        ("table~lr", [r for r in mine if family and r["method"] == plain[id(family)]]
         or [r for r in mine if r["method"] in LORA_FAMILY | LODA_FAMILY] * bool(family)),
        ("table~any", sorted(mine, key=lambda r: -r["ms_per_step"])),
    ]  # fmt: skip
    for basis, hits in tiers:
        if not hits:
            continue
        row = next((r for r in hits if r["seq_len"] == seq), hits[0])
        ratio = (batch * seq) / (row["batch"] * row["seq_len"]) if seq else 1.0
        secs = steps * row["ms_per_step"] / 1000 * ratio + RUN_OVERHEAD_S
        scaled = f", x{ratio:.3g} tokens/step" if abs(ratio - 1) > 1e-9 else ""
        detail = (
            f"table: {row['card']} {row['date']} ({row['model']} {row['method']} {row['path']} {row['seq_len']}x{row['batch']}"
            f" {row['ms_per_step']} ms{scaled}; {steps} steps + {RUN_OVERHEAD_S:.0f} s)"
        )
        return secs, basis, detail
    return None


def _same_task(rec: dict, resolved: dict) -> bool:
    a, b = (rec.get("config") or {}).get("task") or {}, resolved.get("task") or {}
    return a.get("name") == b.get("name") and a.get("subset") == b.get("subset")


def plan(argv: list[str], build: bool = True) -> str:
    """The plan as text (also the return value of `run.py ... plan=true`). `build`: also set up each
    structure's method on a stand-in model (runners/check_experiments.py step 4)."""
    from runners.check_experiments import StandIns

    GlobalHydra.instance().clear()
    rows, findings, used_cards = [], {}, set()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        stand_ins = StandIns(lambda overrides: compose("config", overrides=overrides)) if build else None
        jobs = expand(argv)
        first = compose("config", overrides=jobs[0]) if jobs else None
        runs = Path(first.paths.results_dir) / "runs" if first is not None else Path("results/runs")
        ctx = _Context(runs, _records(runs), step_table(), stand_ins, {})
        for i, job in enumerate(jobs):
            row, found, card = _row(i, job, ctx)
            rows.append(row)
            findings.update({f: None for f in found})
            used_cards.update([card] if card else [])
    return _render(argv, runs, rows, findings, used_cards)


@dataclass
class _Context:
    """What every job's row is computed from."""

    runs: Path
    done: list[dict]  # successful records of the store
    table: list  # the committed step-time table
    stand_ins: object
    checked: dict  # group_id -> Outcome (seeds share structure: checked once)


def _row(i: int, job: list[str], ctx: _Context) -> tuple[tuple, list[str], str | None]:
    """(row, findings, step-table card used) of one job: done, FAIL, ERROR or todo with an estimate."""
    from runners.check_experiments import check_job

    try:
        cfg = compose("config", overrides=job)
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # a job that cannot even compose: say so, keep planning the rest
        return (
            (i, "ERROR", "-", None, "-", "-", job, f"{type(e).__name__}: {str(e).splitlines()[0]}"),
            [],
            None,
        )
    run_id, group_id = run_ids(resolved)
    if group_id not in ctx.checked:
        ctx.checked[group_id] = check_job(cfg, [o for o in job if not o.startswith("seed=")], ctx.stand_ins)
    out = ctx.checked[group_id]
    rec = read_json(ctx.runs / f"{run_id}.json") or {}
    status = rec.get("status") or "todo"
    if status == "success" and not has_weights(rec):
        status = "weights missing"  # as the runner decides: a success whose weights file is gone retrains
    if status == "success" and not resolved.get("force"):
        row = (i, "done", run_id, (rec.get("timing") or {}).get("wall_s"), "measured",
               (rec.get("env") or {}).get("device_type", "?"), job, "")  # fmt: skip
        return row, out.findings, None
    if out.error:
        return (i, "FAIL", run_id, None, "-", "-", job, f"would fail: {out.error}"), out.findings, None
    secs, basis, dev = estimate(resolved, group_id, ctx.done)
    note, card = "", None
    if secs is None and out.plan is not None:
        found = table_estimate(resolved, out.plan.total_steps, ctx.table)
        if found:
            secs, basis, note = found
            card = note.split(" (")[0].removeprefix("table: ")
            dev = "cuda"  # the table's rows were measured on the GPU machine
    todo = "todo" if status in ("todo", "success") else f"todo ({status})"
    return (i, todo, run_id, secs, basis, dev, job, note), out.findings, card


def _duration(secs: float | None) -> str:
    if secs is None:
        return "?"
    return (
        f"{secs:.0f} s" if secs < 120 else f"{secs / 60:.1f} min" if secs < 7200 else f"{secs / 3600:.2f} h"
    )


def _render(argv: list[str], runs: Path, rows: list[tuple], findings: dict, used_cards: set) -> str:
    shown = [o for o in argv if "=" in o]
    lines = [f"plan for: {' '.join(shown) or '(defaults)'}  — nothing is started", f"results store: {runs}"]
    lines.append(f"{'#':>4}  {'status':<16} {'run_id':<12} {'est.':>9}  {'basis':<9} {'dev':<5} overrides")
    fixed = {s.split("=")[0] for s in _fixed(argv)}
    for i, status, run_id, secs, basis, dev, job, err in rows:
        varying = " ".join(o for o in job if o.split("=")[0] not in fixed)
        lines.append(
            f"{i:>4}  {status:<16} {run_id:<12} {_duration(secs):>9}  {basis:<9} {dev:<5} {varying}"
            f"{'  ' + err if err else ''}"
        )
    todo = [r for r in rows if r[1].startswith("todo")]
    by_dev: dict[str, float] = defaultdict(float)
    unknown, from_table = 0, 0.0
    for r in todo:
        if r[3] is None:
            unknown += 1
        else:
            by_dev["GPU-hours" if r[5] == "cuda" else f"hours measured on {r[5]} (not GPU)"] += r[3] / 3600
            from_table += r[3] / 3600 if r[4].startswith("table") else 0.0
    errors = sum(r[1] == "ERROR" for r in rows)
    failing = sum(r[1] == "FAIL" for r in rows)
    lines.append(
        f"runs: {len(rows)} | done: {sum(r[1] == 'done' for r in rows)} | to run: {len(todo)} | "
        f"would fail: {failing} | cannot compose: {errors}"
    )
    est = ", ".join(f"{h:.3g} {k}" for k, h in sorted(by_dev.items())) or "no measurement yet"
    if from_table:
        est += (
            f" ({from_table:.3g} of them from the step-time table: {'; '.join(sorted(used_cards))}, "
            f"docs/bench/step_times.csv; "
            f"+{RUN_OVERHEAD_S:.0f} s per run; evaluation not counted)"
        )
    lines.append(f"estimated compute for the runs to do: {est}; without any estimate: {unknown} runs")
    if failing:
        lines.append(f"{failing} runs would fail (FAIL above): fix them before launching")
    lines += [f"finding: {f}" for f in findings]
    return "\n".join(lines)


def _fixed(argv: list[str]) -> list[str]:
    return [a for a in argv if "=" in a and "," not in a]
