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
- Nothing blocks a run for good, and no good copy is deleted: a checkpoint that fails its checksum
  (a torn write: full disk, dying node) is set aside as `checkpoint.pt.corrupt-<n>` and the run
  resumes from an earlier intact checkpoint or starts over; a published record that does not parse
  is restored from its attempt's copy, or set aside as `<run_id>.json.corrupt-<n>` if no copy is
  whole. Each says so in one line on stderr. Set-aside files are kept until you delete them.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from core import ConfigError, read_json, write_json
from runners.record import verify_checked

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


def set_aside_file(path: Path) -> Path:
    """Renames a broken file to `<name>.corrupt-<n>` (the first free n) beside it: kept, never read."""
    n = 1
    while (target := path.with_name(f"{path.name}.corrupt-{n}")).exists():
        n += 1
    os.rename(path, target)
    return target


def _warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr, flush=True)


def has_weights(rec: dict) -> bool:
    """Whether a record's weights file exists: a success without it is not done (the runner retrains it;
    `plan=true` says so)."""
    weights = rec.get("weights")
    return bool(weights) and Path(weights).is_file()


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
        path = self.runs / f"{self.run_id}.lock"
        try:  # the file's content is never read: only flock on it counts (a truncated one is fine)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:  # another user's lock file: flock works on a read-only descriptor too
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise ConfigError(f"cannot open the lock file {path} ({e.strerror}); remove it and rerun") from e
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
        return rec if rec and rec.get("status") == "success" and has_weights(rec) else None

    def restore_record(self) -> None:
        """A published record that exists but does not parse (truncated by a full disk or a crash) is
        restored from its attempt's copy when that is whole, else set aside: a run is never retrained
        silently, nor its only good copy deleted by the retraining's cleanup."""
        if not self.record_path.exists() or read_json(self.record_path) is not None:
            return
        copies = [(a, read_json(a / "record.json")) for a in reversed(self._attempts())]
        copies = [(a, rec) for a, rec in copies if rec and rec.get("run_id") == self.run_id]
        # a success whose weights are there first (an attempt's record is also kept after a failed
        # forced rerun, beside the success it did not replace), else the newest whole copy
        done = [(a, r) for a, r in copies if r.get("status") == "success" and has_weights(r)]
        if done or copies:
            attempt, rec = (done or copies)[0]
            write_json(self.record_path, rec)
            _warn(
                f"{self.record_path} was unreadable; restored from {attempt / 'record.json'} (status {rec.get('status')})"
            )
            return
        kept = set_aside_file(self.record_path)
        _warn(
            f"{self.record_path} was unreadable and no attempt holds a whole copy; set aside as {kept}; training again"
        )

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
        """The newest attempt that did not succeed and left a checkpoint that passes its checksum.

        A checkpoint that does not is set aside (one line on stderr) and the search goes on to older
        attempts; none left means the run starts over."""
        broken = []
        found = None
        for attempt in reversed(self._attempts()):
            status = (read_json(attempt / "record.json") or {}).get("status")
            if status == "success":
                break
            ckpt = attempt / "checkpoint.pt"
            for tmp in attempt.glob(".checkpoint.pt.*.tmp"):  # a write killed midway (SIGKILL): garbage
                tmp.unlink(missing_ok=True)
            if not ckpt.is_file():
                continue
            if (why := verify_checked(ckpt)) is None:
                found = attempt
                break
            broken.append((set_aside_file(ckpt), why))
        for kept, why in broken:
            then = f"resuming from {found / 'checkpoint.pt'}" if found else "starting the run over"
            _warn(
                f"checkpoint {kept.with_name('checkpoint.pt')} is corrupt ({why}); set aside as {kept}; {then}"
            )
        return found

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
        if record["status"] == "success":
            # published copy first: if the disk fills before it is written, the attempt has no record
            # and a rerun resumes its checkpoint (deleted only after this); were the attempt's copy
            # first, the rerun would see a success attempt, no published record, and start over
            write_json(self.record_path, record)
            write_json(attempt / "record.json", record)
            for old in self._attempts():  # superseded attempts: their files are no longer referenced
                if old == attempt:
                    continue
                kept = list(old.glob("*.corrupt-*"))  # set aside for the user to look at: they stay
                if not kept:
                    shutil.rmtree(old, ignore_errors=True)
                    continue
                for child in old.iterdir():
                    if child in kept:
                        continue
                    if child.is_dir():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            return self.record_path
        write_json(attempt / "record.json", record)
        if self.success() is None:
            write_json(self.record_path, record)
            return self.record_path
        return attempt / "record.json"
