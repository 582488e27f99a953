"""runners/logging.py: the logger seam the runner calls, W&B offline, quiet progress bars."""

from __future__ import annotations

import sys
import types

import pytest
from omegaconf import OmegaConf

from core import progress
from runners.config import run_ids
from runners.logging import Logger, build, flatten
from runners.train import run

FAST_FNN = ("task.n_train=256", "task.n_test=128", "train.epochs=2", "task.batch_size=64")


def test_flatten_and_step_filter():
    assert flatten({"eval": {"validation": {"acc": 0.5, "note": "x"}}, "n": 3, "bad": float("nan")}) == {
        "eval/validation/acc": 0.5,
        "n": 3.0,
    }
    log = Logger()
    assert not any(log.wants_step(s) for s in range(1, 50))  # logger=none never asks for a host sync
    log.every_n_steps = 10
    assert [s for s in range(1, 31) if log.wants_step(s)] == [10, 20, 30]
    with pytest.raises(Exception, match="unknown logger 'tensorboard'"):
        build({"name": "tensorboard"})


def test_progress_is_quiet_off_a_tty():
    assert progress(range(3)).disable  # pytest captures stderr: not a terminal


class FakeRun:
    def __init__(self, calls, **kw):
        self.calls, self.summary = calls, {}
        calls.append(("init", kw))

    def log(self, values, step):
        self.calls.append(("log", step, values))

    def finish(self, exit_code):
        self.calls.append(("finish", exit_code, dict(self.summary)))


def test_runner_calls_the_logger_with_config_steps_epochs_and_summary(cfg_factory, monkeypatch):
    calls = []
    fake = types.SimpleNamespace(init=lambda **kw: FakeRun(calls, **kw))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    rec = run(cfg_factory("method=lora", "logger=wandb", "logger.every_n_steps=2", *FAST_FNN))
    init = calls[0][1]
    assert init["group"] == rec["group_id"] and init["config"]["run_id"] == rec["run_id"]
    assert init["mode"] == "offline" and init["config"]["method"]["name"] == "lora"
    steps = [c for c in calls if c[0] == "log" and "train/loss" in c[2]]
    assert [c[1] for c in steps] == [2, 4, 6, 8]  # 4 steps an epoch x 2 epochs, every 2nd
    epochs = [c for c in calls if c[0] == "log" and "epoch" in c[2]]
    assert [c[2]["epoch"] for c in epochs] == [1, 2]
    assert epochs[-1][2]["eval/test/mse"] == pytest.approx(rec["metrics"]["final"]["test"]["mse"])
    assert epochs[-1][2]["train_loss"] == pytest.approx(rec["metrics"]["history"][-1]["train_loss"])
    done = calls[-1]
    assert done[0] == "finish" and done[1] == 0 and done[2]["status"] == "success"
    assert done[2]["params/trainable"] == rec["params"]["trainable"]


def test_logger_is_not_part_of_run_id(cfg_factory):
    a = OmegaConf.to_container(cfg_factory("logger=none"), resolve=True)
    b = OmegaConf.to_container(cfg_factory("logger=wandb"), resolve=True)
    assert run_ids(a) == run_ids(b)


@pytest.mark.slow
def test_real_wandb_offline_run(cfg_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    rec = run(cfg_factory("method=lora", "logger=wandb", *FAST_FNN))
    assert rec["status"] == "success"
    results = tmp_path / "results" / "wandb"
    runs = list(results.glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")) and runs[0].joinpath("files").is_dir()
