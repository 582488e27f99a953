"""The compile cache a sweep shares across nodes and the record's warm-up (runners/compile_cache.py).

Fast tests check the key, the file's checks, the save rule and the warm-up arithmetic; the slow ones
compile a tiny DeBERTa with the real inductor on the CPU in fresh processes: a first run saves the
artifacts, a second one on an empty inductor dir (a fresh node) loads them and trains to the same
losses, a corrupt file is ignored with one warning line and rewritten."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from core import ConfigError
from runners import compile_cache
from runners.compile_cache import ArtifactCache, WarmUp, digest, key_parts
from runners.config import ROOT
from runners.record import save_checked, verify_checked
from tests.conftest import make_cfg

RESOLVED = {
    "seed": 0,
    "train": {"lr": 1e-3},
    "model": {"name": "tiny_deberta", "path": "/a"},
    "method": {"rank": 8},
}
CPU = torch.device("cpu")


def _key(resolved=RESOLVED, mode="default", scope="blocks"):
    return digest(key_parts(resolved, CPU, mode, scope, 32, "fp32"))


def test_the_key_changes_with_torch_version_and_compile_settings_not_with_seed_lr_or_weights_path(
    monkeypatch,
):
    base = _key()
    assert _key(mode="reduce-overhead") != base
    assert _key(scope="model") != base
    assert _key({**RESOLVED, "method": {"rank": 4}}) != base  # other shapes, other graphs
    assert _key({**RESOLVED, "seed": 1, "train": {"lr": 2e-3}}) == base  # a seed or lr sweep shares one file
    assert _key({**RESOLVED, "model": {"name": "tiny_deberta", "path": "/elsewhere"}}) == base
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert _key() != base


def _cache(tmp_path, parts=None):
    state = {}
    return ArtifactCache(tmp_path, parts or {"k": 1}, state), state


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign"])
def test_a_damaged_file_is_ignored_with_one_warning_line_and_will_be_rewritten(damage, tmp_path, capsys):
    cache, state = _cache(tmp_path)
    cache.path.parent.mkdir(parents=True)
    if damage == "garbage":
        cache.path.write_bytes(b"not a cache")
    else:
        save_checked(cache.path, {"format": compile_cache.FORMAT, "key": {}, "artifacts": b"x" * 4096})
        if damage == "truncated":
            cache.path.write_bytes(cache.path.read_bytes()[:2000])
    cache.load()  # "foreign": whole, but torch cannot read its artifacts
    err = capsys.readouterr().err.strip().splitlines()
    ours = [line for line in err if line.startswith("warning: ignoring compile cache")]
    assert len(ours) == 1 and "rewritten" in ours[0]
    assert cache.writer and state["loaded"] is None and state["note"].startswith("unreadable")


def test_save_writes_a_checked_file_once_and_only_as_the_writer(tmp_path, monkeypatch):
    calls = []

    info = type("Info", (), {"artifacts": {"inductor": ["a", "b"], "aot_autograd": ["c"]}})()

    def fake_save():
        calls.append(1)
        return b"artifact bytes", info

    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", fake_save)
    cache, state = _cache(tmp_path, {"torch": "x"})
    cache.load()  # no file yet: this run writes it
    cache.save()
    assert state["saved"] == {"aot_autograd": 1, "inductor": 2, "bytes": 14}
    assert verify_checked(cache.path) is None
    assert [p.name for p in cache.path.parent.iterdir()] == [cache.path.name]  # no temp file left
    cache.save()  # nothing new recorded since: not written again
    assert len(calls) == 1
    reader, _ = _cache(tmp_path, {"torch": "x"})
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", lambda data: info)
    reader.load()
    assert not reader.writer and reader.state["loaded"] == {"aot_autograd": 1, "inductor": 2}
    reader.save()
    assert len(calls) == 1  # a run that loaded the file leaves it as it is


def test_warmup_is_the_excess_of_the_steps_that_compiled_over_the_median_step(monkeypatch):
    events, now = [0], [0.0]
    monkeypatch.setattr(compile_cache, "_compile_events", lambda: events[0])
    saved = []
    cache = type("Cache", (), {"state": {"saved": None}, "save": lambda self: saved.append(now[0]),
                               "count_lookups": lambda self: None})()  # fmt: skip
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    clock = WarmUp(optimizer, cache, clock=lambda: now[0])

    def step(seconds, compiled=True, compiles=0, micro_batches=1):
        for _ in range(micro_batches if compiled else 0):
            clock.step_begins()  # grad accumulation: the step starts at its first micro-batch
            now[0] += seconds / micro_batches
            events[0] += compiles
            compiles = 0
        if not compiled:
            now[0] += seconds
        param.grad = torch.ones(1)
        optimizer.step()

    step(50.0, compiled=False)  # the first step runs eager: not counted
    step(10.0, compiles=3)  # compiled forward and backward
    step(1.0)
    assert saved == [now[0]]  # the first step that compiled nothing ends the warm-up: artifacts saved
    cache.state["saved"] = {"inductor": 1}
    step(4.0, compiles=1, micro_batches=2)  # a recording later on
    step(2.0, micro_batches=2)
    step(3.0)
    t = clock.finish()
    assert t["warmup_steps"] == 2 and t["compiled_step_median_s"] == 2.0
    assert t["warmup_s"] == pytest.approx((10 - 2) + (4 - 2))
    assert saved == [1.0 + 50 + 10, now[0]]  # and topped up at the end
    step(5.0)  # the hook is gone after finish
    assert clock.finish()["warmup_steps"] == 2


@pytest.mark.slow  # two Dynamo-traced runs: ~15 s on 2 cores
def test_a_compiled_run_records_its_warmup_and_the_cache_and_the_switch_turns_it_off(
    tmp_path, glue_dir, stub_inductor
):
    """Dynamo with a stand-in inductor (no artifacts to save): the record's entries, and none with the
    switch off."""
    from runners.train import run

    stub_inductor(aot=True)
    common = (
        "model=tiny_deberta", "task=glue/rte", f"task.data_dir={glue_dir}", "method=lora",
        "+task.max_train_samples=32", "+task.max_eval_samples=8", "train.batch_size=8", "train.epochs=1",
        "train.checkpoint=false", "train.compile=true", "train.compile_mode=default",
    )  # fmt: skip
    on = run(make_cfg(*common, results_dir=tmp_path / "on"))
    state = on["env"]["fast_path"]["compile_cache"]
    assert state["loaded"] is None and state["saved"] is None  # the stand-in writes no cache entries
    assert state["file"].startswith(str(tmp_path / "on" / ".cache" / "compile"))
    assert on["timing"]["warmup_steps"] >= 1 and on["timing"]["warmup_s"] is not None
    off = run(make_cfg(*common, "train.compile_cache=false", results_dir=tmp_path / "off"))
    assert (
        "compile_cache" not in off["env"]["fast_path"]
        and not (tmp_path / "off" / ".cache" / "compile").exists()
    )
    assert off["timing"]["warmup_steps"] >= 1  # the warm-up is recorded either way
    with pytest.raises(ConfigError, match="train.compile_cache must be true or false"):
        run(make_cfg(*common, "train.compile_cache=maybe", results_dir=tmp_path / "bad"))


# --- real inductor on the CPU, fresh processes -----------------------------------------------------

RUN = (
    "model=tiny_deberta", "task=glue/rte", "method=lora", "+task.max_train_samples=48", "+task.max_eval_samples=8",
    "train.batch_size=8", "train.epochs=2", "train.checkpoint=false", "train.compile=true", "train.compile_mode=default",
)  # fmt: skip


def _run(results, glue_dir, inductor=None) -> tuple[dict, str]:
    """`run.py` in a fresh process; inductor's cache under `results` unless `inductor` names one."""
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    if inductor:
        env["TORCHINDUCTOR_CACHE_DIR"] = str(inductor)
    cmd = [sys.executable, "run.py", *RUN, f"task.data_dir={glue_dir}", f"paths.results_dir={results}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (record,) = (results / "runs").glob("*.json")
    return json.loads(record.read_text()), proc.stderr


def _losses(record) -> list:
    return [(h["train_loss"], h["eval"]["validation"]["acc"]) for h in record["metrics"]["history"]]


@pytest.fixture(scope="module")
def first(tmp_path_factory, glue_dir):
    """A cold first run: an empty inductor dir, no artifacts."""
    results = tmp_path_factory.mktemp("first")
    record, _ = _run(results, glue_dir)
    return results, record


@pytest.mark.slow  # a cold inductor compile of a tiny DeBERTa layer on the CPU: 1-2 minutes
def test_a_fresh_node_loads_the_first_runs_artifacts_and_trains_the_same(first, tmp_path, glue_dir):
    results, record = first
    state = record["env"]["fast_path"]["compile_cache"]
    assert state["loaded"] is None and state["saved"]["inductor"] >= 1 and state["saved"]["aot_autograd"] >= 1
    path = results / ".cache" / "compile" / f"{state['key']}.bin"
    assert state["file"] == str(path) and verify_checked(path) is None
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # written atomically: no temp file
    assert record["timing"]["warmup_steps"] >= 1 and record["timing"]["warmup_s"] > 0

    fresh = tmp_path / "fresh"  # a fresh node: the experiment's artifacts copied, inductor's dir empty
    shutil.copytree(results / ".cache" / "compile", fresh / ".cache" / "compile")
    assert not (fresh / ".cache" / "inductor").exists()
    second, _ = _run(fresh, glue_dir)
    loaded = second["env"]["fast_path"]["compile_cache"]
    assert loaded["key"] == state["key"] and loaded["saved"] is None
    assert loaded["loaded"] == {k: v for k, v in state["saved"].items() if k != "bytes"}
    assert loaded["lookups"].get("aot_autograd_hit", 0) >= 1 and "aot_autograd_miss" not in loaded["lookups"]
    assert "fx_graph_miss" not in loaded["lookups"]  # nothing was generated again
    torch.testing.assert_close(_losses(second), _losses(record), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_corrupt_artifacts_file_is_ignored_with_a_warning_and_rewritten(first, tmp_path, glue_dir):
    results, record = first
    state = record["env"]["fast_path"]["compile_cache"]
    again = tmp_path / "again"
    shutil.copytree(results / ".cache" / "compile", again / ".cache" / "compile")
    path = again / ".cache" / "compile" / f"{state['key']}.bin"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a torn copy
    # the first run's inductor dir: a warm node, so this run compiles quickly without the file
    rerun, stderr = _run(again, glue_dir, inductor=results / ".cache" / "inductor")
    warnings = [line for line in stderr.splitlines() if "compile cache" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: ignoring compile cache {path}")
    redone = rerun["env"]["fast_path"]["compile_cache"]
    assert redone["note"].startswith("unreadable") and redone["saved"]["inductor"] >= 1
    assert verify_checked(path) is None  # rewritten whole
    torch.testing.assert_close(_losses(rerun), _losses(record), rtol=1e-5, atol=1e-6)
