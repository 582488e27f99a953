"""Run records: environment facts, and checked files (a sha256 header, so that a torn or truncated
checkpoint is recognised as such). Atomic writes and strict JSON live on the ground floor (core.py)."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

# disk_full, NO_ROOM and the JSON helpers lived here before core.py: still importable from here
from core import NO_ROOM, ROOT, atomic_write, disk_full, read_json, strict, write_json  # noqa: F401

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


# --- checked files: b"<MAGIC><sha256 hex of the payload>\n" + payload ------------------------------

MAGIC = b"lowrank-bench sha256="
_HEADER = len(MAGIC) + 64 + 1


class CorruptFile(Exception):
    """A checked file whose payload does not match its checksum (or does not load at all)."""


class _Hashing:
    """A file object that hashes what is written through it (torch.save streams into it)."""

    def __init__(self, f):
        self.f, self.sha = f, hashlib.sha256()

    def write(self, b) -> int:
        self.sha.update(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


def save_checked(path: Path, obj) -> None:
    """torch.save(obj) into `path` atomically, behind a header with the payload's sha256.

    Written through a Python file object (not torch's own file writer), so a full disk surfaces as the
    OSError it is."""

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(MAGIC + b"0" * 64 + b"\n")  # placeholder: the digest is known once the payload is out
            hashing = _Hashing(f)
            torch.save(obj, hashing)
            f.seek(0)
            f.write(MAGIC + hashing.sha.hexdigest().encode() + b"\n")

    atomic_write(path, write)


def _open_checked(path: Path):
    """`path` opened at its payload once the payload matched its sha256 (read in chunks: checkpoints
    of full fine-tuning run to GBs); CorruptFile saying what is wrong if it did not. A file without
    the header (written before checkpoints had one) is returned at its start: torch.load then tells
    whether it is whole."""
    f = open(path, "rb")
    try:
        head = f.read(_HEADER)
        size = os.fstat(f.fileno()).st_size
        if not head.startswith(MAGIC):
            if not head:
                raise CorruptFile("empty file")
            f.seek(0)
            return f
        if len(head) < _HEADER or not head.endswith(b"\n"):
            raise CorruptFile(f"truncated header ({size} bytes)")
        sha = hashlib.sha256()
        while chunk := f.read(1 << 24):
            sha.update(chunk)
        if sha.hexdigest() != head[len(MAGIC) : -1].decode("ascii", "replace"):
            raise CorruptFile(f"sha256 mismatch: torn or truncated write ({size} bytes)")
        f.seek(_HEADER)
        return f
    except BaseException:
        f.close()
        raise


def load_checked(path: Path):
    """torch.load of a checked file (our own, hence weights_only=False); CorruptFile if it is not whole."""
    with _open_checked(path) as f:
        try:
            return torch.load(f, map_location="cpu", weights_only=False)
        except Exception as e:  # only a header-less (old) file gets here broken: its zip does not open
            raise CorruptFile(f"does not load: {type(e).__name__}: {str(e).splitlines()[0][:120]}") from e


def verify_checked(path: Path) -> str | None:
    """None if the checked file at `path` is whole, else what is wrong with it (the checksum decides;
    a header-less old file is loaded to find out)."""
    try:
        with _open_checked(path) as f:
            checked = f.tell() == _HEADER
        if not checked:
            load_checked(path)
    except CorruptFile as e:
        return str(e)
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    return None
