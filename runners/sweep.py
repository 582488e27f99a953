"""Sweeps that survive bad jobs: each job leaves `outcome.json` in its Hydra job folder; at the end
of a `-m` sweep `SweepSummary` prints n ok / skipped / failed / diverged / ... with their run_ids.

Works for every launcher (basic, submitit local, SLURM, pack): the outcomes are files in the sweep folder.
`expand` lists a sweep's jobs before any starts, as the basic sweeper would launch them (`plan=true`,
`make check-experiments`).

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
- memory: after each job the worker frees what it cached (the next job in that process starts clean);
- orphans: a worker whose sweep process died without stopping it (SIGKILL, the OOM killer) would
  otherwise live on: loky's workers wait on a queue nobody writes to, and between runs they turn
  SIGTERM / SIGINT into the stop marker above instead of exiting. Each worker therefore starts a
  watchdog thread as it starts (`watch_parent`, handed to joblib as the workers' initializer): once
  its parent pid changes (the process was re-parented), a running job is stopped as by SIGTERM
  (checkpoint, `interrupted` record, at its next step; `ORPHAN_GRACE` seconds at most) and the worker
  exits; an idle worker exits at once. A polled parent pid, not Linux's PR_SET_PDEATHSIG: that signal
  fires when the parent *thread* that started the worker ends (loky starts workers from a helper
  thread), and only on Linux.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from core import read_json, write_json

OK = ("success", "skipped")
STOP = ".stop"  # in the sweep dir: a packed sweep was stopped, jobs not yet started do not start


def packed(launcher_cfg) -> bool:
    """Whether the sweep runs jobs in Hydra's joblib launcher (conf/launcher/pack.yaml)."""
    return "joblib" in str((launcher_cfg or {}).get("_target_", "")).lower()


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
    marker. Returns the reason not to start, if any. Call `end_packed_job` when the job is done."""
    import torch

    torch.set_num_threads(threads_per_job(n_jobs, current=torch.get_num_threads()))
    marker = Path(sweep_dir) / STOP
    _watched["marker"] = marker
    _watched["busy"] = True  # a job runs: an orphaned worker stops it before exiting (_orphaned)
    for sig in (signal.SIGINT, signal.SIGTERM):  # the run's own handler replaces these while it trains
        signal.signal(sig, _stop_between_runs)
    _start_watcher()
    if marker.exists():
        return "not started: the sweep was stopped (rerun the sweep to run it)"
    return None


def end_packed_job() -> None:
    """The job's outcome is written: an orphaned worker may exit now."""
    _watched["busy"] = False


def watch_parent() -> None:
    """joblib's worker initializer (runs in each loky worker as it starts): exit when the sweep
    process dies (module docstring, "orphans"). Not called in the sweep process itself (n_jobs=1 runs
    the jobs there), whose parent is the user's shell and may well go away (nohup)."""
    _watched["parent"] = os.getppid()
    _start_watcher()


def hand_workers_watch_parent() -> None:
    """In the sweep process: make joblib start every worker with `watch_parent`.

    hydra-joblib-launcher builds `joblib.Parallel(**hydra.launcher)` and has no initializer setting
    (its config is closed, and a launcher subclass would have to live in the hydra_plugins package),
    so the `Parallel` it calls is wrapped to pass one (joblib hands it to loky's executor)."""
    from hydra_plugins.hydra_joblib_launcher import _core

    if getattr(_core.Parallel, "watches_parent", False):
        return
    parallel = _core.Parallel

    def with_initializer(*args, **kwargs):
        kwargs.setdefault("initializer", watch_parent)
        return parallel(*args, **kwargs)

    with_initializer.watches_parent = True
    _core.Parallel = with_initializer


def stop_sweep(sweep_dir: str | Path) -> None:
    """Marks a packed sweep stopped: no new job starts, running ones get SIGTERM (`_watch`)."""
    marker = Path(sweep_dir) / STOP
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


_watched: dict = {}  # this worker's sweep stop marker, parent pid, whether a job runs, watcher thread
ORPHAN_GRACE = 60.0  # seconds an orphaned worker's running job gets to stop (a step + its checkpoint)


def _start_watcher() -> None:
    if "thread" not in _watched:
        _watched["thread"] = threading.Thread(target=_watch, daemon=True, name="sweep-stop")
        _watched["thread"].start()


def _watch(interval: float = 1.0) -> None:
    while True:
        time.sleep(interval)
        if _watched.get("parent") is not None and os.getppid() != _watched["parent"]:
            _orphaned()
        marker = _watched.get("marker")  # None until this worker's first job
        if marker is not None and marker.exists():
            os.kill(os.getpid(), signal.SIGTERM)  # the run's handler (runners/train.py _Signals) stops it


def _orphaned() -> None:
    """The sweep process is gone: stop the running job as SIGTERM does, then exit this worker."""
    print(f"sweep worker {os.getpid()}: the sweep process died; stopping", file=sys.stderr, flush=True)
    deadline = time.monotonic() + ORPHAN_GRACE
    while _watched.get("busy") and time.monotonic() < deadline:
        # again each second: a job between its start and its run's own handler only marks the stop
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1.0)
    os._exit(130)  # os._exit: loky's loop would wait on its queue; nobody reads the status anyway


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
        # issue 26 (#1/#2 helper): a torn outcome.json (a fixed hydra.sweep.dir keeps old ones) is
        # counted as `unreadable`, not a traceback that hides every other job's outcome
        out = read_json(path) or {"status": "unreadable", "run_id": f"job {path.parent.name} ({path})"}
        by_status[str(out.get("status"))].append(out.get("run_id") or f"job {path.parent.name}")
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
        hand_workers_watch_parent()  # workers exit if this process dies without stopping them
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
