"""Run records: environment facts and atomic writes (temp file + rename: nothing half-written)."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

import torch

from runners.config import ROOT

PACKAGES = (
    "torch",
    "transformers",
    "datasets",
    "peft",
    "accelerate",
    "hydra-core",
    "numpy",
    "scikit-learn",
    "scipy",
    "safetensors",
    "pillow",
    "tokenizers",
)


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    status = _git("status", "--porcelain")
    return {
        "git_sha": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "python": platform.python_version(),
        "packages": versions,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "device_type": device.type,
        "torch_device": str(device),  # e.g. cuda:1: the GPU a packed sweep job ran on
        "torch_threads": torch.get_num_threads(),
        "host": platform.node(),
    }


def atomic_write(path: Path, write) -> None:
    """Calls `write(tmp_path)` then renames onto `path` (same directory, so the rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def strict(obj):
    """`obj` with non-finite floats as None, so the file is strict JSON (no bare NaN / Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict(v) for v in obj]
    return obj


def write_json(path: Path, obj: dict) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(strict(obj), f, indent=1, default=str, allow_nan=False)
            f.write("\n")

    atomic_write(path, write)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
