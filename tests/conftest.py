"""Shared fixtures: the real conf/ composed with test overrides, results in a tmp dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from runners.config import CONF, ROOT, register_resolvers

SHARED = ROOT.parent / "shared" / "data"
GLUE_DIR = SHARED / "glue"

register_resolvers()


def make_cfg(*overrides: str, results_dir: Path | None = None):
    """Composes conf/config.yaml like `python run.py OVERRIDES` does."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        extra = [f"paths.results_dir={results_dir}"] if results_dir else []
        return compose("config", overrides=[*overrides, *extra])


def start_run(*argv: str) -> subprocess.Popen:
    """`python run.py ARGV` in its own process group (as a terminal's foreground job: a signal to the
    group reaches every process it starts), output merged and unbuffered, read line by line."""
    return subprocess.Popen(
        [sys.executable, "run.py", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )


def interrupt_when(proc: subprocess.Popen, ready: Callable[[list[str]], bool], sig=signal.SIGINT) -> str:
    """Reads `proc`'s output until `ready(lines so far)`, sends `sig` to its process group (SIGINT: what
    Ctrl-C in a terminal does) and returns all its output once it exits; a group that outlives the
    test is killed."""
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if ready(seen):
                break
        os.killpg(proc.pid, sig)
        seen.append(proc.communicate(timeout=120)[0])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return "".join(seen)


@pytest.fixture
def cfg_factory(tmp_path):
    return lambda *o: make_cfg(*o, results_dir=tmp_path / "results")


@pytest.fixture(scope="session")
def glue_dir():
    if not GLUE_DIR.is_dir():
        pytest.fail(f"shared GLUE data not found at {GLUE_DIR}: clone the repo beside ../shared")
    return GLUE_DIR


@pytest.fixture
def stub_inductor(monkeypatch):
    """`stub_inductor(aot=False) -> graphs`: inductor, behind runners/fastpath.py's backend, replaced by
    a stand-in that records each graph Dynamo hands it and runs it as traced (or through AOT autograd,
    `aot=True`): Dynamo's capture and our dispatch are tested without inductor's C++ build."""
    import torch
    from torch._dynamo.backends.debugging import aot_eager

    graphs = []

    def install(aot: bool = False) -> list:
        def backend(gm, example_inputs, **kwargs):
            graphs.append(gm)
            return aot_eager(gm, example_inputs) if aot else gm.forward

        monkeypatch.setattr(torch, "_TorchCompileInductorWrapper", lambda *args: backend)
        return graphs

    return install


def tiny_parts(model: str, glue_dir):
    """(model cfg, head spec, tokenizer, batch of 8 SST-2 sentences, labels) for one tiny model."""
    import torch

    from models import hf as hf_builder
    from tasks.glue import Config as GlueConfig
    from tasks.glue import Glue

    cfg = make_cfg(f"model={model}", "task=glue/sst2")
    task = Glue(GlueConfig(subset="sst2", data_dir=str(glue_dir), train_split="validation[:64]"))
    tok = hf_builder.build_tokenizer(cfg.model, task.texts())
    batch = tok([r["text"][0] for r in task.raw["train"][:8]], padding=True, return_tensors="pt")
    return cfg.model, task.head, tok, dict(batch), torch.tensor([0, 1] * 4)


@pytest.fixture(scope="module")
def deberta_parts(glue_dir):
    return tiny_parts("tiny_deberta", glue_dir)


@pytest.fixture(scope="module")
def gpt2_parts(glue_dir):
    return tiny_parts("tiny_gpt2", glue_dir)
