"""RM-LoRA Table 1's GPU cost, measured: one seed of every Table 1 task for `lora` and `rm_lora`.

    python scripts/measure_table1.py --data-dir ../shared/data/glue --jobs 6 --work /tmp/t1 \
        --out docs/bench/<card>-<date>-table1.json          # on the GPU machine (issue 28, goal 5)
    python scripts/measure_table1.py --data-dir ../shared/data/glue --model tiny_deberta --cap 40 \
        --jobs 2 --work /tmp/t1 --out /tmp/t1.json           # CPU: the same pipeline at toy size

Each run is `run.py` with Table 1's settings (arms `glue/lora_r8`, `glue/rm_lora_r8`; batch 32,
max length 128, Table 4's epochs, no warm-up: conf/experiment/rm_table1_glue.yaml), DeBERTa-v3-base
shapes with random weights (`model=deberta_v3_base_random`: the real 184 M parameters and compute),
on the real TSVs. The runs go `--jobs` at a time on one GPU, as `launcher=pack` runs them (each its
own process), and each takes the path `train.compile=auto` would take at FULL size (compiled from
1000 optimizer steps), so what is timed is what the table's runs do.

What is measured and what is extrapolated (the JSON says which, per run):
- Tasks whose full run has at most `--cap` optimizer steps run in full (CoLA, MRPC, STS-B, RTE, WNLI
  at the default cap): measured, nothing extrapolated.
- Larger tasks (SST-2, QNLI, MNLI, QQP) train `--epochs-measured` short epochs of `--cap-epoch`
  steps each (`task.max_train_samples`); the steady step time is the mean of the epochs after the
  first, and the full run is extrapolated as
      wall = measured wall − Σ epoch − Σ eval + (first epoch − its steps × steady)   (start, compile)
             + full steps × steady + evaluations × dev examples × eval time per example
- Offline stand-ins (../shared/data/MANIFEST.md): QNLI has no train TSV: its dev split trains (the
  same text distribution). MNLI and QQP have no files: MNLI's steps run on MRPC's sentence pairs and
  QQP's on STS-B's (closest lengths of the pairs held), with MNLI's / QQP's sizes and dev sizes.
- Table 1 has 11 arms × 9 tasks × 3 seeds = 297 runs. The other arms are costed from these two:
  R-LoRA as RM-LoRA (the same regularizer; the mask costs ≈ nothing: docs/PERFORMANCE.md), LoRA
  r=4 / RM-LoRA r=4 as r=8, Full FT as LoRA (an underestimate: `OTHER_ARMS`), AdaLoRA and SoRA as
  LoRA times their step-time ratio in docs/bench/step_times.csv where it has one (else LoRA's, said
  so in `assumptions`).
- GPU-hours under `launcher=pack` = Σ(every run's wall) / the mean number of runs that shared the
  GPU here (Σ measured walls / the measured sweep wall).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import glob
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import atomic_write  # noqa: E402
from runners.config import TrainConfig  # noqa: E402
from tasks.sizes import GLUE_TRAIN  # noqa: E402

# Table 4's epochs (conf/task/glue/*.yaml); dev examples evaluated per epoch (official GLUE dev sizes;
# MNLI: matched + mismatched).
EPOCHS = {"cola": 3, "sst2": 3, "mrpc": 5, "stsb": 3, "qqp": 3, "mnli": 3, "qnli": 3, "rte": 3, "wnli": 5}
DEV = {
    "cola": 1043,
    "sst2": 872,
    "mrpc": 408,
    "stsb": 1500,
    "qqp": 40430,
    "mnli": 9815 + 9832,
    "qnli": 5463,
    "rte": 277,
    "wnli": 71,
}
# task -> (task config whose data is read, overrides, why)
STAND_IN = {
    "qnli": ("qnli", ["task.train_split=validation"], "QNLI train TSV absent offline: its dev split trains"),
    "mnli": ("mrpc", [], "MNLI absent offline: MRPC's sentence pairs stand in"),
    "qqp": ("stsb", [], "QQP absent offline: STS-B's sentence pairs stand in"),
}
ARMS = {"lora": "glue/lora_r8", "rm_lora": "glue/rm_lora_r8"}
BATCH = 32
COMPILE_MIN_STEPS = TrainConfig.compile_min_steps  # compile=auto compiles runs this long
# Table 1's other arms, costed from the two measured (see the module docstring)
OTHER_ARMS = {
    "glue/lora_r4": ("lora", None),
    "glue/r_lora_r4": ("rm_lora", None),
    "glue/rm_lora_r4": ("rm_lora", None),
    "glue/r_lora_r8": ("rm_lora", None),
    # no compiled Full FT step time is measured: LoRA's, an underestimate (FT also computes the frozen
    # weights' gradients, about 1.5x LoRA's FLOPs per step); the eager ratio in step_times.csv (0.71,
    # host-bound dispatch) does not hold on the compiled path these runs take
    "ft": ("lora", None),
    "adalora_8to4": ("lora", "adalora"),
    "adalora_16to8": ("lora", "adalora"),
    "sora_r8": ("lora", "sora"),
    "sora_r16": ("lora", "sora"),
}
SEEDS = 3


def full_steps(task: str) -> int:
    return EPOCHS[task] * math.ceil(GLUE_TRAIN[task] / BATCH)


def run_args(task: str, arm: str, args) -> tuple[list[str], dict]:
    data_task, extra, why = STAND_IN.get(task, (task, [], None))
    steps = full_steps(task)
    measured_full = steps <= args.cap
    overrides = [
        f"model={args.model}",
        f"task=glue/{data_task}",
        f"task.data_dir={args.data_dir}",
        f"arm={ARMS[arm]}",
        "seed=1",
        "train.warmup_ratio=0.0",
        # the path compile=auto takes at full size
        f"train.compile={'true' if steps >= COMPILE_MIN_STEPS else 'false'}",
        f"paths.results_dir={args.work}/{task}_{arm}",
        *extra,
    ]
    if not measured_full:
        overrides += [
            f"task.max_train_samples={args.cap_epoch * BATCH}",
            f"task.epochs={args.epochs_measured}",
        ]
    overrides += args.override
    info = {
        "task": task,
        "arm": arm,
        "data": data_task,
        "stand_in": why,
        "full_steps": steps,
        "measured_full": measured_full,
        "compiled_at_full_size": steps >= COMPILE_MIN_STEPS,
    }
    return overrides, info


def run_one(task: str, arm: str, args) -> dict:
    overrides, info = run_args(task, arm, args)
    log = Path(args.work) / f"{task}_{arm}.log"
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // args.jobs)))
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "run.py"), *overrides],
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            timeout=args.timeout,
        )
    info["proc_wall_s"] = time.perf_counter() - start
    info["returncode"] = proc.returncode
    info["command"] = "python run.py " + " ".join(overrides)
    records = glob.glob(f"{args.work}/{task}_{arm}/runs/*.json")
    if proc.returncode != 0 or not records:
        info["error"] = log.read_text()[-2000:]
        return info
    rec = json.loads(Path(records[0]).read_text())
    info["status"] = rec["status"]
    info["timing"] = rec["timing"]
    info["fast_path"] = rec["env"].get("fast_path")
    info["device"] = rec["env"].get("device")
    return extrapolate(info, rec["timing"])


def extrapolate(info: dict, timing: dict) -> dict:
    """The full-size wall time of this run from its measured timing (see the module docstring)."""
    epochs, evals = list(timing["epoch_s"]), list(timing.get("eval_s") or [])
    steps = int(timing["steps"])
    outside = info["proc_wall_s"] - sum(epochs) - sum(evals)  # start, imports, setup, checkpoints, record
    per_epoch = steps // len(epochs)
    steady = sum(epochs[1:]) / (per_epoch * (len(epochs) - 1)) if len(epochs) > 1 else sum(epochs) / steps
    info["steady_step_ms"] = 1000 * steady
    if info["measured_full"]:
        info["full_wall_s"] = info["proc_wall_s"]
        return info
    first_extra = epochs[0] - per_epoch * steady  # compile, CUDA-graph recording, first-batch work
    # eval time per example, from this run's own dev passes (over its data's dev set)
    per_example = sum(evals) / (len(evals) * DEV[info["data"]]) if evals else 0.0
    full_evals = EPOCHS[info["task"]]
    info.update(
        first_epoch_extra_s=first_extra,
        outside_s=outside,
        eval_s_per_example=per_example,
        full_wall_s=outside
        + first_extra
        + info["full_steps"] * steady
        + full_evals * DEV[info["task"]] * per_example,
    )
    return info


def step_ratios() -> dict[str, float]:
    """Eager DeBERTa-v3-base step time of each method over LoRA's, from docs/bench/step_times.csv."""
    rows = list(csv.DictReader(open(ROOT / "docs/bench/step_times.csv")))
    ms = {(r["method"], r["path"]): float(r["ms_per_step"]) for r in rows if r["model"] == "deberta_v3_base"}
    return {m: v / ms[("lora", p)] for (m, p), v in ms.items() if ("lora", p) in ms and p == "eager"}


def table_cost(runs: list[dict], sweep_wall: float) -> dict:
    ok = [r for r in runs if "full_wall_s" in r]
    concurrency = sum(r["proc_wall_s"] for r in ok) / sweep_wall
    by = {(r["task"], r["arm"]): r["full_wall_s"] for r in ok}
    ratios, assumptions = step_ratios(), ["ft: LoRA's time (an underestimate, see OTHER_ARMS)"]
    total = 0.0
    for task in EPOCHS:
        for arm in ARMS:
            total += SEEDS * by[(task, arm)]
        for other, (base, bench_row) in OTHER_ARMS.items():
            ratio = ratios.get(bench_row, 1.0) if bench_row else 1.0
            if bench_row and bench_row not in ratios:
                assumptions.append(f"{other}: no {bench_row} row in step_times.csv; LoRA's time")
            total += SEEDS * by[(task, base)] * ratio
    return {
        "runs_in_table": len(EPOCHS) * (len(ARMS) + len(OTHER_ARMS)) * SEEDS,
        "sum_of_run_walls_h": total / 3600,
        "measured_concurrency": concurrency,
        "gpu_hours_packed": total / concurrency / 3600,
        "gpu_hours_one_at_a_time": total / 3600,
        "measured_pair_hours_packed": sum(SEEDS * v for v in by.values()) / concurrency / 3600,
        "step_ratios_used": {k: round(v, 3) for k, v in ratios.items()},
        "assumptions": sorted(set(assumptions)),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--model", default="deberta_v3_base_random")
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--jobs", type=int, default=6, help="runs at a time on the GPU (launcher=pack's n_jobs)")
    p.add_argument(
        "--cap", type=int, default=1000, help="full runs up to this many steps; longer ones extrapolate"
    )
    p.add_argument("--cap-epoch", type=int, default=300, help="steps per measured epoch of a long task")
    p.add_argument("--epochs-measured", type=int, default=2)
    p.add_argument("--tasks", default=",".join(EPOCHS))
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--override", action="append", default=[], help="extra run.py override (repeatable)")
    args = p.parse_args(argv)
    if args.epochs_measured < 2:
        p.error("--epochs-measured must be >= 2 (the steady step time comes from the epochs after the first)")
    Path(args.work).mkdir(parents=True, exist_ok=True)
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(tasks) - set(EPOCHS))
    if unknown:
        p.error(f"unknown tasks {unknown}; valid: {', '.join(EPOCHS)}")
    # longest first, so the pool's tail is short runs
    jobs = sorted(((t, a) for t in tasks for a in ARMS), key=lambda ta: -full_steps(ta[0]))
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda ta: run_one(*ta, args), jobs))
    sweep_wall = time.perf_counter() - start
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "argv": sys.argv[1:],
        "sweep_wall_s": sweep_wall,
        "jobs": args.jobs,
        "runs": runs,
    }
    failed = [f"{r['task']}/{r['arm']}" for r in runs if "full_wall_s" not in r]
    if not failed and set(tasks) == set(EPOCHS):
        out["table1"] = table_cost(runs, sweep_wall)
    out["failed"] = failed
    text = json.dumps(out, indent=1)
    atomic_write(Path(args.out), lambda tmp: Path(tmp).write_text(text))
    for r in runs:
        print(
            f"{r['task']:5} {r['arm']:8} wall {r['proc_wall_s']:7.1f} s  "
            f"steady {r.get('steady_step_ms', float('nan')):7.2f} ms  full {r.get('full_wall_s', float('nan')):9.1f} s"
            + (f"  ({r['stand_in']})" if r["stand_in"] else "")
        )
    if "table1" in out:
        t = out["table1"]
        print(
            f"Table 1 ({t['runs_in_table']} runs): {t['gpu_hours_packed']:.2f} GPU-hours packed "
            f"(concurrency {t['measured_concurrency']:.2f}), {t['gpu_hours_one_at_a_time']:.2f} one at a time"
        )
    print("failed:", failed or "none")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
