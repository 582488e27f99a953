"""Several processes for one run (DDP through `accelerate launch`, gloo on CPU): the record equals the
single-process run with the same global batch, to float tolerance (sums and gradient averages
happen in another order)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from runners.config import ROOT

ARGS = (
    "method=rm_lora",
    "task.n_train=512",
    "task.n_test=128",
    "train.epochs=2",
    "train.batch_size=16",  # the global batch: 8 per process with 2 processes
    "device=cpu",
)


def _record(results: Path) -> dict:
    (path,) = (results / "runs").glob("*.json")
    return json.loads(path.read_text())


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7)


@pytest.mark.slow
def test_two_processes_give_the_single_process_record(tmp_path):
    single = subprocess.run(
        [sys.executable, "run.py", *ARGS, f"paths.results_dir={tmp_path / 'one'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    two = subprocess.run(
        [*launch, "run.py", *ARGS, f"paths.results_dir={tmp_path / 'two'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={"OMP_NUM_THREADS": "1", **__import__("os").environ},
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _record(tmp_path / "one"), _record(tmp_path / "two")
    assert a["run_id"] == b["run_id"]  # the number of processes is not part of what was trained
    assert b["batching"]["num_processes"] == 2 and b["batching"]["per_process_batch"] == 8
    assert a["batching"]["effective_batch"] == b["batching"]["effective_batch"] == 16
    for ea, eb in zip(a["metrics"]["history"], b["metrics"]["history"], strict=True):
        assert _close(ea["train_loss"], eb["train_loss"]) and _close(ea["train_reg"], eb["train_reg"])
        assert _close(ea["eval"]["test"]["mse"], eb["eval"]["test"]["mse"])
    assert _close(a["diagnostics"]["mean_orth_loss"], b["diagnostics"]["mean_orth_loss"])
    wa, wb = load_file(a["weights"]), load_file(b["weights"])
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-6) for k in wa)
    assert len(list((tmp_path / "two" / "runs").glob("*.json"))) == 1  # one record, from the main process
