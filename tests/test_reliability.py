"""Trustworthy records (issue 7): divergence and no-op guards, resume after any interruption, nothing
lost or overwritten, sweeps that survive bad jobs, and one-line errors for bad input before any work.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_cfg
from safetensors.torch import load_file

from core import ConfigError
from runners.config import ROOT, check_overrides, precheck, run_ids
from runners.train import RunStopped, run
from tasks.base import DataError

FAST = ("task.n_train=256", "task.n_test=128", "train.epochs=2")


def strict_json(path: Path) -> dict:
    def refuse(token):
        raise ValueError(f"non-strict JSON token {token} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


def only_record(results: Path) -> dict:
    (path,) = (results / "runs").glob("*.json")
    return strict_json(path)


# --- 1. diverged or frozen runs are not successes ------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        ("method=ft", "train.lr=1e6"),  # the examples
        ("method=lora", "train.lr=1e6", "train.epochs=3"),
        ("method.reg_weight=1e30",),
    ],
)
def test_divergence_stops_the_run_with_a_strict_json_record(overrides, cfg_factory, tmp_path, capsys):
    with pytest.raises(RunStopped, match="lower train.lr") as stop:
        run(cfg_factory(*FAST, *overrides))
    assert stop.value.status == "diverged"
    rec = only_record(tmp_path / "results")
    assert rec["status"] == "diverged" and rec["diverged_at_step"] >= 1
    assert "metrics" not in rec and "diagnostics" not in rec  # nothing computed from NaN weights
    # a diverged record is not a success: the same config trains again instead of being skipped
    with pytest.raises(RunStopped):
        run(cfg_factory(*FAST, *overrides))
    assert "skip" not in capsys.readouterr().out


def test_a_run_whose_method_parameters_never_change_is_frozen(cfg_factory, tmp_path):
    with pytest.raises(RunStopped, match="no method parameter changed") as stop:
        run(cfg_factory(*FAST, "train.lr=1e-300"))  # AdamW's update underflows: nothing moves
    assert stop.value.status == "frozen"
    assert only_record(tmp_path / "results")["status"] == "frozen"


def test_nan_metrics_are_written_as_null(tmp_path):
    from core import write_json

    write_json(tmp_path / "r.json", {"a": float("nan"), "b": [float("inf"), 1.0], "c": {"d": -float("inf")}})
    assert strict_json(tmp_path / "r.json") == {"a": None, "b": [None, 1.0], "c": {"d": None}}


# --- 2. nothing lost, nothing overwritten ---------------------------------------------------------


def test_success_with_missing_weights_is_not_skipped(cfg_factory, capsys):
    first = run(cfg_factory(*FAST))
    Path(first["weights"]).unlink()
    again = run(cfg_factory(*FAST))
    assert "skip" not in capsys.readouterr().out and Path(again["weights"]).is_file()
    assert again["metrics"] == first["metrics"]


def test_a_locked_run_is_skipped_with_a_message(cfg_factory, tmp_path, capsys):
    cfg = cfg_factory(*FAST)
    run_id, _ = run_ids(__import__("omegaconf").OmegaConf.to_container(cfg, resolve=True))
    runs = tmp_path / "results" / "runs"
    runs.mkdir(parents=True)
    with open(runs / f"{run_id}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert run(cfg)["status"] == "locked"
    assert "another process is training it" in capsys.readouterr().out
    assert not list(runs.glob("*.json"))


def test_unwritable_or_full_results_dir_fails_before_any_model_work(
    cfg_factory, tmp_path, monkeypatch, capsys
):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="is not writable"):
        run(make_cfg(*FAST, results_dir=blocker / "results"))
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=10 * 2**20))
    with pytest.raises(ConfigError, match="MB free"):
        run(cfg_factory(*FAST))
    assert "epoch" not in capsys.readouterr().out


# --- 3 + 5. nonsense and bad input: one line before any work ---------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("train.max_steps=0",), "train.max_steps must be an integer >= 1 or null, got 0"),
        (("train.max_steps=-1",), "train.max_steps must be an integer >= 1 or null"),
        (("+train.lrr=1e-3",), "unknown key train.lrr; valid keys: batch_size"),
        (("+foo=1",), "unknown top-level key 'foo'"),
        (("+model.fuzed=1",), "unknown key model.fuzed"),
        (("seed=-1",), "seed must be a non-negative integer, got -1"),
        (("seed=abc",), "seed must be a non-negative integer, got 'abc'"),
        (("device=tpu",), "device must be auto, cpu, cuda or cuda:N"),
        (("model.target_modules=['(']",), r"invalid regex '\('"),
        (("model.target_modules=[]",), "model.target_modules, which is empty"),
        (("model=fnn", "task=glue/cola"), "model=fnn is a plain ReLU network"),
        (("model=tiny_deberta",), "task=synthetic/fnn adapts a plain ReLU network"),
        (("model=tiny_deberta", "task=glue/cola", "task.max_train_samples=-5"), "max_train_samples must be"),
        (("model=tiny_deberta", "task=glue/cola", "task.max_train_samples=0"), "max_train_samples must be"),
    ],
)
def test_bad_values_fail_in_one_line_before_work(overrides, message, cfg_factory, tmp_path, capsys):
    with pytest.raises(ConfigError, match=message) as err:
        run(cfg_factory(*overrides))
    assert "\n" not in str(err.value)
    assert "epoch" not in capsys.readouterr().out
    assert not list((tmp_path / "results" / "runs").glob("*.json"))


def test_keys_that_change_nothing_trained_keep_the_run_id(cfg_factory):
    from omegaconf import OmegaConf

    ids = {
        run_ids(OmegaConf.to_container(cfg_factory(*o), resolve=True))
        for o in [
            (),
            ("train.num_workers=2",),
            ("train.checkpoint_every=7",),
            ("force=true",),
            ("method.fast=false",),
        ]
    }
    assert len(ids) == 1


def _cola_dir(tmp_path: Path, content: bytes) -> Path:
    (tmp_path / "glue" / "CoLA").mkdir(parents=True)
    (tmp_path / "glue" / "CoLA" / "train.tsv").write_bytes(content)
    (tmp_path / "glue" / "CoLA" / "dev.tsv").write_bytes(b"src\t1\t\tA fine sentence .\n")
    return tmp_path / "glue"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"src\t1\t\tGood .\nsrc\tx\t\tBad label .\n", r"CoLA/train.tsv:2: label 'x' is not an integer"),
        (b"src\t1\t\tGood .\nsrc\t1\t\tok\nsrc\t7\t\tBad .\n", r"train.tsv:3: label 7 is outside 0..1"),
        (b"src\t1\t\tGood .\nsrc\t0\t\tCaf\xe9 .\n", r"train.tsv:2: not UTF-8 text"),
        (b"src\t1\t\tGood .\n\x00\x01\x02binary", r"train.tsv:2: NUL byte"),
        (b"", r"train.tsv: no data rows"),
    ],
)
def test_bad_glue_rows_name_file_and_line(content, message, cfg_factory, tmp_path):
    data = _cola_dir(tmp_path, content)
    with pytest.raises(DataError, match=message):
        run(cfg_factory("model=tiny_deberta", "task=glue/cola", f"task.data_dir={data}"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["method.rnk=4"], "unknown key method.rnk; valid keys of method: alpha, dropout"),
        (["-m", "method.rank=2,4", "method.rnk=4"], "unknown key method.rnk"),
        (["task.train_split=validation[:1000]"], "quote the value"),
        (["paths.results_dir=/proc/version/x"], "is not writable"),
    ],
)
def test_command_line_mistakes_are_one_line_before_hydra(argv, message):
    with pytest.raises(ConfigError, match=re.escape(message) if "[" in message else message):
        precheck(argv)


def _readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            if "run.py" in line:
                commands.append(shlex.split(line.split("run.py", 1)[1], comments=True))
    return commands


def test_every_readme_example_parses_as_typed_in_bash():
    commands = _readme_commands()
    assert len(commands) >= 5
    for argv in commands:
        check_overrides(argv)
        precheck([a for a in argv if not a.startswith("hydra.launcher")])


# --- 2. interruption and resume, with real processes ----------------------------------------------

RESUME = (
    "method=rm_lora",
    "task.n_train=4096",
    "task.n_test=256",
    "train.batch_size=16",
    "train.epochs=4",
    "train.checkpoint_every=25",
)
SAME = ("run_id", "group_id", "params", "metrics", "diagnostics", "status")


def _start(results: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "run.py", *RESUME, f"paths.results_dir={results}", *extra]
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def _wait_for(proc: subprocess.Popen, text: str) -> list[str]:
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"process ended before printing {text!r}:\n{''.join(seen)}")


def _finish(proc: subprocess.Popen) -> str:
    out = proc.communicate(timeout=600)[0]
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict, dict, Path]:
    """The uninterrupted run: its record and weights (read once, in memory) and its results dir, which
    one test goes on to rerun with force=true (the others compare against the in-memory copy)."""
    results = tmp_path_factory.mktemp("reference") / "ref"
    proc = _start(results)
    out = _finish(proc)
    assert proc.returncode == 0, out
    rec = only_record(results)
    return rec, load_file(rec["weights"]), results


def _same_as(rec: dict, weights: dict, ref: tuple[dict, dict]) -> None:
    ref_rec, ref_weights = ref
    assert {k: rec.get(k) for k in SAME} == {k: ref_rec.get(k) for k in SAME}
    assert weights.keys() == ref_weights.keys()
    assert all(torch.equal(weights[k], ref_weights[k]) for k in weights)


@pytest.mark.slow
def test_sigterm_then_sigkill_then_resume_ends_exactly_like_an_uninterrupted_run(tmp_path, reference):
    ref = reference[:2]
    results = tmp_path / "killed"
    # SIGTERM mid-run: an `interrupted` record with the history so far, and a checkpoint
    proc = _start(results)
    _wait_for(proc, "epoch 1/4")
    proc.send_signal(signal.SIGTERM)
    out = _finish(proc)
    # 130 as sweeps exit (issue 26 #8, run.py; was 1)
    assert proc.returncode == 130 and "interrupted: stopped by SIGTERM" in out, out
    rec = only_record(results)
    assert rec["status"] == "interrupted" and len(rec["history"]) >= 1
    # the rerun resumes; SIGKILL it at a random moment of its third epoch (or of the fourth: the run
    # must not finish first, and after the runner's speed-ups the time from "resuming" to the end can
    # be under a second): no record is written, the checkpoint stays
    proc = _start(results)
    _wait_for(proc, "resuming")
    _wait_for(proc, "epoch 3/4")
    delay = random.uniform(0.0, 0.2)
    print(f"SIGKILL after {delay:.2f} s")
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.kill()
    _finish(proc)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed: make it longer"
    # the last rerun finishes; its record and weights are those of the uninterrupted run
    proc = _start(results)
    out = _finish(proc)
    assert proc.returncode == 0 and "resuming" in out, out
    rec = only_record(results)
    assert rec["resumed_from_step"] > 0
    _same_as(rec, load_file(rec["weights"]), ref)


@pytest.mark.slow
def test_an_interrupted_forced_rerun_keeps_the_previous_success(reference):
    ref_rec, _, results = reference
    ref = reference[:2]
    proc = _start(results, "force=true")
    _wait_for(proc, "epoch 1/4")
    proc.send_signal(signal.SIGTERM)
    _finish(proc)
    kept = only_record(results)
    assert kept["started_at"] == ref_rec["started_at"] and Path(kept["weights"]).is_file()
    attempt = strict_json(Path(ref_rec["artifacts"]).parent / "attempt-2" / "record.json")
    assert attempt["status"] == "interrupted"
    proc = _start(results, "force=true")
    out = _finish(proc)
    assert proc.returncode == 0 and "resuming" in out, out
    rec = only_record(results)
    assert rec["attempt"] == "attempt-2" and not Path(ref_rec["artifacts"]).exists()
    _same_as(rec, load_file(rec["weights"]), ref)


@pytest.mark.slow
def test_a_bad_job_does_not_abort_the_sweep(tmp_path):
    out = subprocess.run(
        [sys.executable, "run.py", "-m", "method.rank=0,4", *FAST, f"paths.results_dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1, out.stderr  # the sweep ran every job, but not all ended well
    rec = only_record(tmp_path)
    assert rec["status"] == "success" and rec["config"]["method"]["rank"] == 4
    assert "sweep: 2 jobs: 1 config_error, 1 success" in out.stdout + out.stderr
    assert "method.rank must be >= 1" in out.stderr


@pytest.mark.slow
def test_typo_key_on_the_command_line_is_one_line():
    import dataclasses

    from adapters import lora

    keys = ", ".join(sorted(f.name for f in dataclasses.fields(lora.Config)))
    out = subprocess.run([sys.executable, "run.py", "method.rnk=4"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [f"error: unknown key method.rnk; valid keys of method: {keys}"]
