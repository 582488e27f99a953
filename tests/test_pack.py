"""Several runs at once per GPU (issue 11 goal 5): launcher=pack (Hydra's joblib launcher) gives the
records of the sequential launcher, keeps bad jobs inside their job, stops every job on Ctrl-C, puts
sweep job k on GPU k mod n and gives each job its share of the CPU threads; launcher=slurm_shared
asks SLURM for a GPU shard. (Throughput itself: scripts/bench_sweep.py, measured, not asserted.)
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import joblib
import pytest
import torch
from conftest import GLUE_DIR, make_cfg
from safetensors.torch import load_file

from core import ConfigError
from runners import train
from runners.config import ROOT, check_launcher, precheck
from runners.sweep import packed, threads_per_job
from tests.conftest import interrupt_when, start_run

TINY = (
    "model=tiny_deberta",
    "task=glue/rte",
    f"task.data_dir={GLUE_DIR}",
    "task.max_train_samples=64",
    "task.max_eval_samples=32",
    "task.max_length=32",
    "train.max_steps=4",
    "method=lora",
)


def _records(results: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (results / "runs").glob("*.json")}


def _sweep(results: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "run.py", "-m", *args, f"paths.results_dir={results}"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


# --- GPU and CPU shares ----------------------------------------------------------------------------


def test_sweep_job_k_runs_on_gpu_k_mod_n(monkeypatch):
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: current.append(torch.device(d)))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    got = [train._device("auto", job) for job in range(7)]
    assert got == [torch.device("cuda", k) for k in (0, 1, 2, 0, 1, 2, 0)]
    assert current == got  # each made the current device, so accelerate's "cuda" is that GPU
    assert train._device("auto") == torch.device("cuda")  # a single run: unchanged
    assert train._device("cuda:2") == torch.device("cuda", 2) and current[-1] == torch.device("cuda", 2)
    with pytest.raises(ConfigError, match="only 3 CUDA device"):
        train._device("cuda:3")
    monkeypatch.setenv("LOCAL_RANK", "1")  # accelerate launch places its processes itself
    assert train._device("auto", 5) == torch.device("cuda")


def test_sweep_job_on_a_cpu_machine_stays_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train._device("auto", 3) == torch.device("cpu")


@pytest.mark.parametrize(
    ("n_jobs", "cpus", "current", "threads"),
    [
        (4, 16, None, 4),
        (8, 16, None, 2),
        (3, 16, None, 5),
        (32, 16, None, 1),
        (-1, 16, None, 1),
        (4, 16, 1, 1),
    ],
)
def test_each_packed_job_gets_its_share_of_the_cpus(n_jobs, cpus, current, threads):
    assert threads_per_job(n_jobs, cpus=cpus, current=current) == threads


# --- configs ---------------------------------------------------------------------------------------


def _compose_hydra(*overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from runners.config import CONF

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_pack_is_the_joblib_launcher_and_changes_no_run_id():
    from omegaconf import OmegaConf

    from runners.config import run_ids

    cfg = _compose_hydra("launcher=pack", "hydra.launcher.n_jobs=8")
    assert packed(cfg.hydra.launcher) and cfg.hydra.launcher.n_jobs == 8
    assert not packed(_compose_hydra("launcher=local").hydra.launcher)
    ids = {
        run_ids(OmegaConf.to_container(make_cfg(f"launcher={name}"), resolve=True))
        for name in ("local", "pack")
    }
    assert len(ids) == 1


def test_slurm_shared_asks_for_a_gpu_shard_not_a_whole_gpu(tmp_path, monkeypatch):
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf
    from submitit.slurm.slurm import SlurmExecutor

    precheck(["launcher=slurm_shared", "seed=1,2", f"paths.results_dir={tmp_path}"])
    params = OmegaConf.to_container(_compose_hydra("launcher=slurm_shared").hydra.launcher, resolve=False)
    for key in ("_target_", "submitit_folder", "max_num_timeout"):
        params.pop(key)
    # the parameters as hydra-submitit-launcher hands them to submitit, then submitit's sbatch file
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # no `srun` needed here
    executor = submitit.AutoExecutor(cluster="slurm", folder=tmp_path)
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    sbatch = executor._executor._make_submission_file_text("python run.py", "uid")
    assert "#SBATCH --gres=shard:1" in sbatch
    assert "--gpus-per-node" not in sbatch and "--gres=gpu" not in sbatch


JOBLIB = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}


@pytest.mark.parametrize("n_jobs", [0, -2, "four", 2.5, True])
def test_a_packed_sweep_with_no_worker_fails_in_one_line(n_jobs):
    """joblib's own error for n_jobs=0 was a traceback from inside the launcher (issue 26 #8)."""
    with pytest.raises(ConfigError, match=r"^hydra.launcher.n_jobs must be >= 1 \(or -1 for one per core\)"):
        check_launcher({**JOBLIB, "n_jobs": n_jobs})


def test_n_jobs_is_checked_before_hydra_starts(tmp_path):
    for good in (1, 8, -1):
        check_launcher({**JOBLIB, "n_jobs": good})
    check_launcher({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})  # no n_jobs
    with pytest.raises(ConfigError, match="n_jobs must be >= 1"):  # run.py's check of the command line
        precheck(["launcher=pack", "hydra.launcher.n_jobs=0", "seed=1,2", f"paths.results_dir={tmp_path}"])
    precheck(["launcher=pack", "hydra.launcher.n_jobs=-1", "seed=1,2", f"paths.results_dir={tmp_path}"])


# --- real packed sweeps ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_packed_sweep_gives_the_sequential_records_and_keeps_bad_jobs_in_their_job(tmp_path):
    share = threads_per_job(2, cpus=joblib.cpu_count())  # what each of 2 packed jobs gets
    seq_env = {**os.environ, "OMP_NUM_THREADS": str(share)}  # the same threads: bit-identical runs
    seq = _sweep(tmp_path / "seq", *TINY, "method.rank=8", "seed=1,2", env=seq_env)
    assert seq.returncode == 0, seq.stderr
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the launcher sets the share
    # 4 jobs, 2 at a time: rank 0 is a config error (jobs 0 and 2), rank 8 trains (jobs 1 and 3)
    out = _sweep(
        tmp_path / "pack",
        *TINY,
        "method.rank=0,8",
        "seed=1,2",
        "launcher=pack",
        "hydra.launcher.n_jobs=2",
        env=env,
    )
    assert out.returncode == 1, out.stderr  # every job ran, not all ended well
    assert "sweep: 4 jobs: 2 config_error, 2 success" in out.stdout + out.stderr
    assert "method.rank must be >= 1" in out.stderr
    ref, got = _records(tmp_path / "seq"), _records(tmp_path / "pack")
    assert got.keys() == ref.keys() and len(got) == 2
    for run_id, rec in got.items():
        assert rec["status"] == "success"
        for key in ("group_id", "params", "metrics", "diagnostics", "seed"):
            assert rec[key] == ref[run_id][key], key
        a, b = load_file(rec["weights"]), load_file(ref[run_id]["weights"])
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert rec["env"]["torch_threads"] == share
        assert rec["env"]["torch_device"] == "cpu"


@pytest.mark.slow
def test_ctrl_c_stops_every_packed_job_with_a_checkpoint(tmp_path):
    results = tmp_path / "r"
    # long runs (they cannot end by themselves during the test), 3 jobs on 2 workers: one waits
    args = ["task.n_train=8192", "task.n_test=64", "train.epochs=50", "train.batch_size=16", "method=lora"]
    proc = start_run(
        "-m", *args, "seed=1,2,3", "launcher=pack", "hydra.launcher.n_jobs=2", f"paths.results_dir={results}"
    )
    out = interrupt_when(proc, lambda seen: sum("epoch 1/50" in s for s in seen) == 2)  # both workers train
    assert proc.returncode == 130, out
    assert "sweep: 3 jobs: 3 interrupted" in out, out
    outcomes = [json.loads(p.read_text()) for p in results.glob("hydra/*/*/outcome.json")]
    errors = sorted(o["error"].split(":")[0] for o in outcomes)
    assert errors == ["interrupted", "interrupted", "not started"], outcomes  # the waiting job never ran
    recs = _records(results)
    assert len(recs) == 2 and {r["status"] for r in recs.values()} == {"interrupted"}
    for rec in recs.values():  # each stopped run left a checkpoint to resume from
        assert (Path(rec["artifacts"]) / "checkpoint.pt").is_file()


def test_bench_sweep_compares_records_by_run_id():
    spec = importlib.util.spec_from_file_location("bench_sweep", ROOT / "scripts" / "bench_sweep.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rec = lambda acc: {"metrics": {"final": {"validation": {"acc": acc, "loss": 0.5}}}}  # noqa: E731
    assert bench.compare({"a": rec(0.5), "b": rec(0.25)}, {"a": rec(0.5), "b": rec(0.375)}) == {
        "same_run_ids": True,
        "max_final_metric_diff": 0.125,
    }
    assert not bench.compare({"a": rec(0.5)}, {"b": rec(0.5)})["same_run_ids"]


def _drain(stream, into: list) -> threading.Thread:
    """Reads `stream` to its end in a thread: the end comes when every process writing it is gone
    (and a full pipe would block the writers, which outlive the process the test started)."""
    thread = threading.Thread(target=lambda: into.extend(stream), daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_workers_of_a_killed_sweep_stop_their_runs_and_exit(tmp_path):
    """Issue 26 #3: SIGKILL the sweep process (the OOM killer, a lost session): its joblib workers and
    loky's trackers used to live on for good, finished jobs and all, ignoring SIGTERM. Each worker now
    stops its run as SIGTERM does (checkpoint, `interrupted` record) and exits; an idle worker exits."""
    import psutil

    results = tmp_path / "r"
    # 2 long runs on 3 workers: two train, one stays idle (loky starts n_jobs workers)
    args = ["task.n_train=2048", "task.n_test=64", "train.epochs=400", "train.batch_size=16", "method=lora"]
    proc = start_run(
        "-m", *args, "seed=1,2", "launcher=pack", "hydra.launcher.n_jobs=3", f"paths.results_dir={results}"
    )
    seen, children = [], []
    try:
        for line in proc.stdout:
            seen.append(line)
            if sum("epoch 1/400" in s for s in seen) == 2:  # both runs train, with a checkpoint each
                break
        children = psutil.Process(proc.pid).children(recursive=True)
        workers = [c for c in children if "loky.backend.popen_loky_posix" in " ".join(c.cmdline())]
        assert len(workers) == 3, [c.cmdline() for c in children]
        proc.kill()  # SIGKILL: no handler, no cleanup in the sweep process
        proc.wait()
        reader = _drain(proc.stdout, seen)
        alive = _alive_after(children, timeout=15)  # a step, a checkpoint, a record: seconds
        reader.join(timeout=5)
        assert not alive, f"still running after the sweep process died: {alive}"
    finally:
        for child in _alive_after(children, timeout=0):  # a failed test leaves no process behind
            child.kill()
        if proc.poll() is None:
            proc.kill()
    out = "".join(seen)
    assert "the sweep process died" in out, out
    recs = _records(results)
    assert len(recs) == 2 and {r["status"] for r in recs.values()} == {"interrupted"}, out
    for rec in recs.values():  # stopped at a step, resumable: nothing trained so far is lost
        assert "stopped by SIGTERM" in rec["error"] and (Path(rec["artifacts"]) / "checkpoint.pt").is_file()


def _alive_after(procs: list, timeout: float) -> list:
    """Which of `procs` still run after up to `timeout` seconds (zombies count as gone: whether a
    re-parented process is reaped depends on the machine's init)."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.2)
