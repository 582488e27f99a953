"""Sweep throughput: the same K runs one at a time (`launcher=local`) and packed N at a time
(`launcher=pack hydra.launcher.n_jobs=N`), each phase into its own fresh results dir.

    python scripts/bench_sweep.py --runs 4 --jobs 2 --overrides "model=tiny_deberta task=glue/rte ..."   # CPU
    python scripts/bench_sweep.py --runs 16 --jobs 2 --jobs 4 --jobs 8 \\
        --overrides "model=minilm_l6 task=glue/rte task.data_dir=../shared/data/glue arm=lora_r8 train.epochs=1" \\
        --out results/bench/sweep_h200.json                                                            # GPU

The K runs are `run.py -m <overrides> seed=1,...,K`. Per phase: wall seconds of the whole sweep
command (start-up included), aggregate runs/hour = successful records × 3600 / wall, the ratio to
the sequential phase, the steady rate (records 2..K over the time since the first record: the fixed
start-up of imports, CUDA and workers left out, which a long sweep amortises) and its ratio, peak
GPU memory (nvidia-smi, all GPUs together, sampled every second; and the largest per-run
`timing.peak_mem_mb` of the records), mean GPU utilisation, the number of successful records (should
be K), and whether the packed records have the sequential ones' run_ids and final metrics. Output: a
table on stdout and a JSON file (device, versions, date). Each phase is stopped (SIGTERM, then
SIGKILL) after --timeout seconds; its row says so and its runs/hour still counts the records that
succeeded by then. Exit status 1 unless every phase has K successful records. Timings are
measurements of this machine at this moment: nothing is asserted about them in tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import read_json, write_json  # noqa: E402

SMI = ["nvidia-smi", "--query-gpu=index,memory.used,utilization.gpu", "--format=csv,noheader,nounits"]


def gpu_sample() -> list[tuple[float, float]] | None:
    """(memory used MiB, utilisation %) per GPU, or None without nvidia-smi."""
    try:
        out = subprocess.run(SMI, capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [line.split(",") for line in out.strip().splitlines()]
    return [(float(r[1]), float(r[2])) for r in rows if len(r) == 3]


def records(results: Path) -> dict[str, dict]:
    out = {}
    for path in sorted((results / "runs").glob("*.json")):
        rec = read_json(path)
        if rec is not None:
            out[rec["run_id"]] = rec
    return out


def phase(name: str, argv: list[str], results: Path, runs: int, timeout: float) -> dict:
    """Runs one sweep command, polling its records and the GPUs every second."""
    results.mkdir(parents=True, exist_ok=True)
    log = results / "sweep.log"
    cmd = [sys.executable, "run.py", "-m", *argv, f"paths.results_dir={results}"]
    print(f"[{name}] {shlex.join(cmd)}\n[{name}] log: {log}", flush=True)
    start = time.perf_counter()
    with open(log, "w") as f:  # own session: on timeout the whole sweep (workers too) is killed
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        peak_mem, util, timed_out, shown, seen = 0.0, [], False, -1, {}
        while proc.poll() is None:
            time.sleep(1.0)
            for path in (results / "runs").glob("*.json"):  # when each record appeared (±1 s)
                seen.setdefault(path.name, time.perf_counter() - start)
            if (sample := gpu_sample()) is not None:
                peak_mem = max(peak_mem, sum(m for m, _ in sample))
                util.append(sum(u for _, u in sample) / len(sample))
            elapsed = time.perf_counter() - start
            done = len(seen)
            if done != shown or int(elapsed) % 30 == 0:
                print(f"[{name}] {done}/{runs} records, {elapsed:.0f} s", flush=True)
                shown = done
            if elapsed > timeout:
                timed_out = True
                proc.send_signal(signal.SIGTERM)  # the sweep stops its runs (checkpoint); then make sure
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    wall = time.perf_counter() - start
    for path in (results / "runs").glob("*.json"):
        seen.setdefault(path.name, wall)
    recs = records(results)
    ok = {k: r for k, r in recs.items() if r.get("status") == "success"}
    mems = [r["timing"].get("peak_mem_mb") for r in ok.values() if r.get("timing")]
    done_at = sorted(seen.values())
    # the rate once every worker is up: records 2..K over the time since the first one (start-up and
    # the first run excluded), which is what a long sweep converges to
    span = done_at[-1] - done_at[0] if done_at else 0.0
    steady = (len(done_at) - 1) * 3600 / span if span > 0 else None
    row = {
        "phase": name,
        "returncode": proc.returncode,
        "timed_out": timed_out,
        "wall_s": wall,
        "success": len(ok),
        "runs": runs,
        "runs_per_hour": len(ok) * 3600 / wall,
        "first_record_s": done_at[0] if done_at else None,
        "steady_runs_per_hour": steady,
        "gpu_peak_mem_mib": peak_mem or None,
        "gpu_mean_util_pct": sum(util) / len(util) if util else None,
        "max_run_peak_mem_mb": max((m for m in mems if m is not None), default=None),
        "peak_mem_kind": sorted({r["timing"].get("peak_mem_kind") for r in ok.values()} - {None}),
        "torch_threads": sorted({r["env"].get("torch_threads") for r in ok.values()} - {None}),
        "devices": sorted({r["env"].get("torch_device") for r in ok.values()} - {None}),
        "results_dir": str(results),
        "_records": ok,
    }
    print(
        f"[{name}] done: {len(ok)}/{runs} successful records in {wall:.1f} s (rc {proc.returncode})",
        flush=True,
    )
    return row


def compare(ref: dict[str, dict], other: dict[str, dict]) -> dict:
    """Same run_ids, and the largest difference of any final eval metric (float noise on GPU)."""
    diff = 0.0
    for run_id in ref.keys() & other.keys():
        for split, metrics in ref[run_id]["metrics"]["final"].items():
            for key, value in metrics.items():
                theirs = other[run_id]["metrics"]["final"].get(split, {}).get(key)
                if isinstance(value, int | float) and isinstance(theirs, int | float):
                    diff = max(diff, abs(value - theirs))
    return {"same_run_ids": ref.keys() == other.keys(), "max_final_metric_diff": diff}


def environment() -> dict:
    import torch

    from runners.record import environment as run_env

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env = run_env(device)
    from importlib import metadata

    for name in ("joblib", "hydra-joblib-launcher"):
        env["packages"][name] = metadata.version(name)
    env["cpu_count"] = os.cpu_count()
    env["gpu_count"] = torch.cuda.device_count()
    env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS")
    return env


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=4, help="K runs: seed=1..K (default 4)")
    p.add_argument("--jobs", type=int, action="append", help="runs at once when packed (repeatable; 0: none)")
    p.add_argument("--overrides", default="", help="run.py overrides shared by the K runs (one string)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per phase before it is killed")
    p.add_argument("--no-sequential", action="store_true", help="packed phases only (no ratio)")
    p.add_argument(
        "--reference",
        type=Path,
        help="an earlier output JSON whose sequential phase is the reference, instead of running one "
        "(when all phases do not fit one time limit: first `--jobs 0`, then `--reference` it)",
    )
    p.add_argument("--workdir", type=Path, default=None, help="where the phases' results dirs go")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "sweep.json")
    a = p.parse_args(argv)
    if a.runs < 1 or any(n < 0 for n in a.jobs or []):
        p.error("--runs must be >= 1 and --jobs >= 0")
    jobs = [n for n in (a.jobs or [2]) if n > 0]
    overrides = shlex.split(a.overrides)
    if any(o.split("=", 1)[0] == "seed" for o in overrides):
        p.error("--overrides must not set seed: the K runs are seed=1..K")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    workdir = a.workdir or ROOT / "results" / "bench_sweep" / stamp
    argv_runs = [*overrides, "seed=" + ",".join(str(s) for s in range(1, a.runs + 1))]
    rows, ref = [], None
    if a.reference:
        ref = next(r for r in read_json(a.reference)["phases"] if r["phase"] == "sequential")
        ref.update(reference=str(a.reference), _records=records(Path(ref["results_dir"])))
        rows.append(ref)
    elif not a.no_sequential:
        ref = phase("sequential", [*argv_runs, "launcher=local"], workdir / "sequential", a.runs, a.timeout)
        rows.append(ref)
    for n in jobs:
        launch = ["launcher=pack", f"hydra.launcher.n_jobs={n}"]
        rows.append(phase(f"packed_{n}", [*argv_runs, *launch], workdir / f"packed_{n}", a.runs, a.timeout))
    for row in rows:
        if ref is not None and ref["runs_per_hour"]:
            row["ratio_vs_sequential"] = row["runs_per_hour"] / ref["runs_per_hour"]
            if row.get("steady_runs_per_hour") and ref.get("steady_runs_per_hour"):
                row["steady_ratio"] = row["steady_runs_per_hour"] / ref["steady_runs_per_hour"]
            if row is not ref and ref["_records"]:  # (a --reference whose results dir is gone: none)
                row.update(compare(ref["_records"], row["_records"]))
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "runs": a.runs,
        "overrides": overrides,
        "env": environment(),
        "phases": [{k: v for k, v in r.items() if k != "_records"} for r in rows],
    }
    write_json(a.out, result)
    print_table(result)
    print(f"wrote {a.out}")
    return result


def print_table(result: dict) -> None:
    cols = (
        "phase",
        "success",
        "wall_s",
        "runs_per_hour",
        "ratio_vs_sequential",
        "first_record_s",
        "steady_ratio",
        "gpu_peak_mem_mib",
        "gpu_mean_util_pct",
    )
    print(
        f"\n{result['runs']} runs on {result['env']['device']} ({result['date']}): {' '.join(result['overrides'])}"
    )
    print(" | ".join(f"{c:>19}" for c in cols))
    for row in result["phases"]:
        cells = []
        for c in cols:
            v = row.get(c)
            cells.append(f"{v:>19.2f}" if isinstance(v, float) else f"{'—' if v is None else v!s:>19}")
        flag = (
            " TIMED OUT"
            if row["timed_out"]
            else ("" if row["success"] == row["runs"] else " (not all succeeded)")
        )
        print(" | ".join(cells) + flag)


if __name__ == "__main__":
    phases = main()["phases"]
    sys.exit(0 if all(r["success"] == r["runs"] for r in phases) else 1)
