"""Sweeps that survive bad jobs: each job leaves `outcome.json` in its Hydra job folder; at the end
of a `-m` sweep `SweepSummary` prints n ok / skipped / failed / diverged / ... with their run_ids.

Works for every launcher (basic, submitit local, SLURM, pack): the outcomes are files in the sweep folder.

Packed sweeps (`launcher=pack`: Hydra's joblib launcher, n_jobs runs at once in reused worker
processes) need three more things, here:
- threads: each job uses `threads_per_job(n_jobs)` = max(1, cpus // n_jobs) torch threads (never more
  than the process already had, so OMP_NUM_THREADS=1 stays 1), so n_jobs runs do not oversubscribe;
- stopping: Ctrl-C (SIGINT to the terminal's process group) reaches the workers, whose runs stop at
  their next step as the basic launcher's do (checkpoint, `interrupted` record); the first stopped
  job writes `<sweep dir>/.stop`, and SIGTERM to the sweep process writes it too. A thread in each
  worker sees the marker within a second and sends its process SIGTERM, so every running job stops;
  jobs not yet started record `interrupted` without starting; the summary is printed and the sweep
  exits 130. A second Ctrl-C raises KeyboardInterrupt in the runs and joblib kills the workers (the
  last checkpoints stay). The sweep process and the workers it starts ignore SIGINT until a worker
  takes its first job (so a Ctrl-C cannot kill an idle worker, which would make joblib kill them all);
  a Ctrl-C in the few seconds before any job has started is therefore ignored;
- memory: after each job the worker frees what it cached (the next job in that process starts clean).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

from hydra.experimental.callback import Callback

from runners.record import write_json

OK = ("success", "skipped")
STOP = ".stop"  # in the sweep dir: a packed sweep was stopped, jobs not yet started do not start


def packed(launcher_cfg) -> bool:
    """Whether the sweep runs jobs in Hydra's joblib launcher (conf/launcher/pack.yaml)."""
    return "joblib" in str((launcher_cfg or {}).get("_target_", "")).lower()


def threads_per_job(n_jobs: int, cpus: int | None = None, current: int | None = None) -> int:
    """Torch threads for one of n_jobs runs at once: max(1, cpus // n_jobs), at most `current`
    (n_jobs = -1, joblib's "one per CPU", gives 1)."""
    import joblib

    cpus = cpus or joblib.cpu_count()
    share = 1 if n_jobs < 1 else max(1, cpus // n_jobs)
    return min(share, current) if current else share


def start_packed_job(sweep_dir: str | Path, n_jobs: int) -> str | None:
    """In a packed job (a joblib worker process), before its run: sets its torch threads, makes
    SIGINT / SIGTERM between runs stop the sweep instead of killing the worker, and watches the stop
    marker. Returns the reason not to start, if any."""
    import torch

    torch.set_num_threads(threads_per_job(n_jobs, current=torch.get_num_threads()))
    marker = Path(sweep_dir) / STOP
    _watched["marker"] = marker
    for sig in (signal.SIGINT, signal.SIGTERM):  # the run's own handler replaces these while it trains
        signal.signal(sig, _stop_between_runs)
    if "thread" not in _watched:
        _watched["thread"] = threading.Thread(target=_watch, daemon=True, name="sweep-stop")
        _watched["thread"].start()
    if marker.exists():
        return "not started: the sweep was stopped (rerun the sweep to run it)"
    return None


def stop_sweep(sweep_dir: str | Path) -> None:
    """Marks a packed sweep stopped: no new job starts, running ones get SIGTERM (`_watch`)."""
    marker = Path(sweep_dir) / STOP
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


_watched: dict = {}  # this worker's sweep stop marker and its watcher thread


def _watch(interval: float = 1.0) -> None:
    while True:
        time.sleep(interval)
        if _watched["marker"].exists():
            os.kill(os.getpid(), signal.SIGTERM)  # the run's handler (runners/train.py _Signals) stops it


def _stop_between_runs(signum, frame) -> None:
    stop_sweep(_watched["marker"].parent)


def release_memory() -> None:
    """Frees the finished job's tensors and the CUDA cache (sweep jobs share a process).

    The survivors of the collection (modules, caches: hundreds of thousands of objects) are then frozen
    out of later collections, which would otherwise rescan them after every job (0.2-0.4 s a job on a
    CPU). A frozen object that later becomes cyclic garbage stays until exit; what survives a finished
    job is what the jobs share (modules, configs, caches)."""
    gc.collect()
    gc.freeze()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def write_outcome(job_dir: str | Path, outcome: dict) -> None:
    write_json(Path(job_dir) / "outcome.json", outcome)


def summarize(sweep_dir: Path) -> tuple[str, bool]:
    """The summary text and whether every job ended well."""
    by_status: dict[str, list[str]] = defaultdict(list)
    for path in sorted(sweep_dir.glob("*/outcome.json"), key=lambda p: p.parent.name):
        out = json.loads(path.read_text())
        by_status[out["status"]].append(out.get("run_id") or f"job {path.parent.name}")
    jobs = sum(len(v) for v in by_status.values())
    lines = [f"sweep: {jobs} jobs: " + ", ".join(f"{len(v)} {k}" for k, v in sorted(by_status.items()))]
    for status, ids in sorted(by_status.items()):
        if status not in OK:
            lines.append(f"  {status}: {', '.join(ids)}")
    return "\n".join(lines), all(k in OK for k in by_status)


class _PackedStop:
    """The sweep process's signal setup while a packed sweep runs (module docstring): SIGINT ignored
    (inherited by the workers it starts), SIGTERM marks the sweep stopped (a second one: kill)."""

    def __init__(self, sweep_dir: Path):
        self.sweep_dir = sweep_dir
        (sweep_dir / STOP).unlink(missing_ok=True)  # a fixed hydra.sweep.dir may hold an old one
        self.old = {
            signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
            signal.SIGTERM: signal.signal(signal.SIGTERM, self),
        }

    def __call__(self, signum, frame) -> None:
        if (self.sweep_dir / STOP).exists():
            raise KeyboardInterrupt  # stopped already: joblib kills the workers
        stop_sweep(self.sweep_dir)
        print("sweep: SIGTERM: stopping the running jobs at their next step", file=sys.stderr)

    def restore(self) -> bool:
        for sig, old in self.old.items():
            signal.signal(sig, old)
        return (self.sweep_dir / STOP).exists()


class SweepSummary(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        global _stopper
        if packed(config.hydra.get("launcher")):
            _stopper = _PackedStop(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config, **kwargs) -> None:
        global _stopper
        stopped = _stopper.restore() if _stopper is not None else False
        _stopper = None
        text, ok = summarize(Path(config.hydra.sweep.dir))
        print(text, file=sys.stdout if ok else sys.stderr)
        if stopped:
            sys.exit(130)  # stopped by a signal, as the basic launcher exits
        if not ok:
            sys.exit(1)  # a sweep with failed jobs is not a success for make or CI


_stopper: _PackedStop | None = None  # module state, not on the callback (which Hydra pickles to workers)
