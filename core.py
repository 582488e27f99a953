"""The ground floor: what every room of the house uses, importing nothing of the project.

- `ConfigError`: the error users see for a bad setting (one line naming the fix);
- `atomic_write`, `write_json`, `read_json`, `strict`: files that are whole or absent (temp file +
  fsync + rename), JSON that is strict (no bare NaN / Infinity), a full disk said in one line;
- `progress`: a progress bar that is quiet off a terminal;
- `ROOT`: the checkout (conf/, results/, its git history).

Standard library only at import time (tqdm is imported when a bar is made), so that adapters, models,
tasks and runners can all stand on it without pulling each other in.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent


class ConfigError(ValueError):
    """A bad configuration value; the message is one line and names the fix."""


# --- files that are whole or absent ------------------------------------------------------------------


def atomic_write(path: Path, write) -> None:
    """Calls `write(tmp_path)` then renames onto `path` (same directory, so the rename is atomic).

    A failed write leaves `path` as it was and no temp file. The data is fsynced before the rename: a
    rename that reaches the disk before the data would leave an empty file after a power cut. A
    failure from a full disk (or quota, or file-size limit) is raised as an OSError naming `path`,
    whatever the writer raised (torch.save says "unexpected pos 704 vs 598"; safetensors "os error 28").
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        try:
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        except Exception as e:
            full = disk_full(e)
            if full is None:
                raise
            raise OSError(full.errno, full.strerror or os.strerror(full.errno), str(path)) from None
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # disk full, over quota, over the file-size limit


def disk_full(e: BaseException | None) -> OSError | None:
    """The OSError behind `e` if it says there is no room to write (`NO_ROOM`), else None.

    Looks along the chain (torch's writer raises a RuntimeError from our file's OSError) and reads the
    "(os error N)" of errors raised in Rust (safetensors)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in NO_ROOM:
            return e
        if (m := re.search(r"\(os error (\d+)\)", str(e))) and int(m[1]) in NO_ROOM:
            return OSError(int(m[1]), os.strerror(int(m[1])))
        e = e.__cause__ or e.__context__
    return None


# --- strict JSON ---------------------------------------------------------------------------------------


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
    """The JSON object in `path`, or None if it is missing or is not one (truncated, binary, a list)."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):  # ValueError: JSONDecodeError and UnicodeDecodeError
        return None
    return obj if isinstance(obj, dict) else None


# --- progress ------------------------------------------------------------------------------------------


def progress(iterable=None, **kw):
    """tqdm that is quiet off a TTY (`disable=None` is tqdm's own "no TTY, no bar")."""
    from tqdm.auto import tqdm  # here, not above: the ground floor imports the standard library only

    kw.setdefault("disable", None if sys.stderr.isatty() else True)
    kw.setdefault("leave", False)
    kw.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kw)
