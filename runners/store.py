"""Where a run's record and files live, and the rules that keep them trustworthy.

    results/runs/<run_id>.json              the record tables read (flat store, one per run_id)
    results/runs/<run_id>.lock              held (flock) while a process trains this run_id
    results/runs/<run_id>/attempt-<k>/      one attempt's files: weights, outputs/, exports,
                                            checkpoint.pt while it runs, record.json when it ends

- A rerun (`force=true` included) trains in a new attempt folder; `<run_id>.json` is replaced by the
  new record only when it succeeds (a failed, diverged or interrupted attempt never replaces a
  success, and its own record stays in its folder).
- An attempt that ended without success and left a checkpoint is resumed by the next run.
- A success record whose weights file is missing does not count as done.
- Nor does one over other data (its `data.fingerprint`, the sha256 of the files read, differs from
  the files' now): the run trains again, and the old record is first copied to
  `<run_id>/superseded/` (attempt folders go when a new attempt succeeds; that copy stays).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from adapters.base import ConfigError
from runners.record import read_json, write_json

MIN_FREE_MB = 200  # refuse to start with less free space in the results dir


def check_writable(results_dir: Path) -> None:
    """Fails before any model work if results cannot be written (permissions, missing, full disk)."""
    runs = results_dir / "runs"
    try:
        runs.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=runs, prefix=".probe-"):
            pass
    except OSError as e:
        raise ConfigError(
            f"results dir {results_dir} is not writable ({e.strerror}); set paths.results_dir=/writable/dir"
        ) from e
    free_mb = shutil.disk_usage(runs).free / 2**20
    if free_mb < MIN_FREE_MB:
        raise ConfigError(
            f"only {free_mb:.0f} MB free under {results_dir} (need {MIN_FREE_MB}); "
            f"free space or set paths.results_dir to another disk"
        )


class RunStore:
    def __init__(self, results_dir: Path, run_id: str):
        self.runs = Path(results_dir) / "runs"
        self.run_id = run_id
        self.record_path = self.runs / f"{run_id}.json"
        self.dir = self.runs / run_id

    @contextmanager
    def lock(self):
        """Yields True while this process holds the run's lock, False if another process holds it."""
        self.runs.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.runs / f"{self.run_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def success(self) -> dict | None:
        """The published success record, if its weights file still exists."""
        rec = read_json(self.record_path)
        if not rec or rec.get("status") != "success":
            return None
        weights = rec.get("weights")
        return rec if weights and Path(weights).is_file() else None

    def set_aside(self, record: dict) -> Path:
        """Copies a success record that a retraining will supersede to `<run_id>/superseded/`."""
        fingerprint = ((record.get("data") or {}).get("fingerprint") or "none")[:12]
        path = self.dir / "superseded" / f"{record.get('attempt', 'record')}-data-{fingerprint}.json"
        write_json(path, record)
        return path

    def _attempts(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        found = [p for p in self.dir.glob("attempt-*") if p.name.split("-")[-1].isdigit()]
        return sorted(found, key=lambda p: int(p.name.split("-")[-1]))

    def resumable(self) -> Path | None:
        """The newest attempt that did not succeed and left a checkpoint."""
        for attempt in reversed(self._attempts()):
            status = (read_json(attempt / "record.json") or {}).get("status")
            if status == "success":
                return None
            if (attempt / "checkpoint.pt").is_file():
                return attempt
        return None

    def new_attempt(self) -> Path:
        attempts = self._attempts()
        k = int(attempts[-1].name.split("-")[-1]) + 1 if attempts else 1
        path = self.dir / f"attempt-{k}"
        path.mkdir(parents=True)
        return path

    def finish(self, attempt: Path, record: dict) -> Path:
        """Writes the attempt's record; publishes it as <run_id>.json unless that would hide a success.

        Returns the path of the record that now describes this attempt.
        """
        write_json(attempt / "record.json", record)
        if record["status"] == "success":
            write_json(self.record_path, record)
            for old in self._attempts():  # superseded attempts: their files are no longer referenced
                if old != attempt:
                    shutil.rmtree(old, ignore_errors=True)
            return self.record_path
        if self.success() is None:
            write_json(self.record_path, record)
            return self.record_path
        return attempt / "record.json"
