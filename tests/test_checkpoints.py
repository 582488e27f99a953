"""Nothing blocks a run for good, nothing good is deleted (issue 26 #1, #2, #7): checkpoints carry a
sha256 and a torn one is set aside; an unreadable published record is restored from its attempt's
copy; a full disk mid-run ends in one line, a `failed` record if it fits, and the last checkpoint kept.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_cfg
from omegaconf import OmegaConf
from safetensors.torch import load_file

from core import ConfigError, atomic_write, disk_full, read_json
from runners.config import ROOT, run_ids
from runners.record import save_checked, verify_checked
from runners.store import RunStore
from runners.train import RunStopped, run

FAST = ("task.n_train=256", "task.n_test=128", "train.epochs=3")  # checkpoints after epochs 1 and 2
TINY = ("task.n_train=64", "task.n_test=32", "train.epochs=1")


def _store(results: Path, *overrides: str) -> RunStore:
    run_id, _ = run_ids(OmegaConf.to_container(make_cfg(*overrides), resolve=True))
    return RunStore(results, run_id)


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


# --- checked files and atomic writes (fast, in process) --------------------------------------------


def test_a_torn_checkpoint_fails_its_checksum_and_an_older_intact_one_is_resumed(tmp_path, capsys):
    store = RunStore(tmp_path, "abc")
    first, second = store.new_attempt(), store.new_attempt()
    save_checked(first / "checkpoint.pt", {"step": 4})
    save_checked(second / "checkpoint.pt", {"step": 8, "w": torch.arange(1000.0)})
    data = bytearray((second / "checkpoint.pt").read_bytes())
    data[len(data) // 2] ^= 1  # same length, one bit off: only a checksum sees it
    (second / "checkpoint.pt").write_bytes(bytes(data))
    (second / ".checkpoint.pt.x1y2.tmp").write_bytes(b"half")  # a write killed by SIGKILL
    assert store.resumable() == first
    (line,) = capsys.readouterr().err.splitlines()
    assert "sha256 mismatch" in line and f"resuming from {first / 'checkpoint.pt'}" in line
    assert (second / "checkpoint.pt.corrupt-1").read_bytes() == bytes(data)  # kept, renamed
    assert not (second / "checkpoint.pt").exists() and not list(second.glob(".*.tmp"))
    assert verify_checked(first / "checkpoint.pt") is None


def test_a_full_disk_mid_write_keeps_the_old_file_and_names_the_target(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checked(path, {"step": 4})
    before = path.read_bytes()

    class Full:  # torch.save streams into this file object and runs out of room midway
        def __init__(self):
            self.n = 0

        def write(self, b):
            self.n += 1
            if self.n > 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return len(b)

    def write(tmp):
        Path(tmp).write_bytes(b"half a file")
        torch.save({"w": torch.zeros(10_000)}, Full())  # raises RuntimeError("unexpected pos ...")

    with pytest.raises(OSError) as err:
        atomic_write(path, write)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["checkpoint.pt"]
    # safetensors (Rust) reports it in its message only
    assert disk_full(RuntimeError("I/O error: No space left on device (os error 28)")).errno == errno.ENOSPC
    assert disk_full(RuntimeError("unexpected pos 704 vs 598")) is None


def test_unreadable_json_and_lock_files_do_not_crash_the_store(tmp_path, monkeypatch):
    for content in (b"\xff\xfe\x00binary", b"[1, 2]", b'{"status": "succ'):
        (tmp_path / "r.json").write_bytes(content)
        assert read_json(tmp_path / "r.json") is None
    store = RunStore(tmp_path, "abc")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "abc.lock").write_bytes(b"\x00 truncated garbage")  # content is never read
    with store.lock() as held:
        assert held
    (tmp_path / "runs" / "abc.lock").unlink()
    (tmp_path / "runs" / "abc.lock").mkdir()
    with pytest.raises(ConfigError, match=r"cannot open the lock file .*abc.lock .*remove it and rerun"):
        with store.lock():
            pass


def test_a_torn_outcome_of_a_sweep_job_is_counted_not_a_traceback(tmp_path):
    from core import write_json
    from runners.sweep import summarize

    write_json(tmp_path / "0" / "outcome.json", {"status": "success", "run_id": "aaa"})
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "outcome.json").write_text('{"status": "succ')
    text, ok = summarize(tmp_path)
    assert not ok and text.splitlines()[0] == "sweep: 2 jobs: 1 success, 1 unreadable"
    assert str(tmp_path / "1" / "outcome.json") in text


# --- 2. an unreadable published record (in process) -------------------------------------------------


def test_a_truncated_record_is_restored_from_its_attempt_copy_not_retrained(cfg_factory, tmp_path, capsys):
    first = run(cfg_factory(*TINY))
    published = Path(first["record_path"])
    attempt_copy = Path(first["artifacts"]) / "record.json"
    published.write_bytes(published.read_bytes()[:100])  # a full disk or a crash mid-copy
    capsys.readouterr()
    again = run(cfg_factory(*TINY))
    out, err = capsys.readouterr()
    assert again["status"] == "skipped" and "epoch" not in out
    (line,) = _warnings(err)
    assert f"{published} was unreadable; restored from {attempt_copy}" in line
    assert read_json(published) == read_json(attempt_copy) and attempt_copy.is_file()


def test_a_truncated_record_with_no_whole_copy_is_set_aside_and_retrained(cfg_factory, tmp_path, capsys):
    first = run(cfg_factory(*TINY))
    published = Path(first["record_path"])
    broken = published.read_bytes()[:100]
    published.write_bytes(broken)
    (Path(first["artifacts"]) / "record.json").write_bytes(broken[:50])
    capsys.readouterr()
    again = run(cfg_factory(*TINY))
    (line,) = _warnings(capsys.readouterr().err)
    kept = published.with_name(published.name + ".corrupt-1")
    assert f"set aside as {kept}; training again" in line and kept.read_bytes() == broken
    assert again["status"] == "success" and again["metrics"] == first["metrics"]


def test_a_checkpoint_that_passes_its_checksum_but_does_not_fit_is_set_aside(cfg_factory, tmp_path):
    store = _store(tmp_path / "results", *TINY)
    ckpt = store.new_attempt() / "checkpoint.pt"
    save_checked(ckpt, {"params": {"no.such.parameter": torch.zeros(1)}})  # e.g. from older code
    with pytest.raises(
        RunStopped, match=r"does not load \(KeyError.*set aside as .*corrupt-1: rerun to start"
    ):
        run(cfg_factory(*TINY))
    assert run(cfg_factory(*TINY))["status"] == "success"  # not blocked for good
    assert ckpt.with_name("checkpoint.pt.corrupt-1").is_file()  # kept past the success's cleanup


# --- 1 + 7. a full disk mid-run and a torn checkpoint, in real processes ------------------------------

# run.py with files limited to `limit` bytes from the `after`-th checkpoint on: the kernel refuses
# writes past it (EFBIG), as a full disk refuses them (ENOSPC), in torch's writer and ours alike
FILL = """
import resource, runpy, signal, sys
sys.path.insert(0, {root!r})
import runners.checkpoint as checkpoint
limit, after = int(sys.argv.pop(1)), int(sys.argv.pop(1))
saves = []
original = checkpoint.save
def save(*args):
    if len(saves) == after:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process at the limit
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    saves.append(1)
    original(*args)
checkpoint.save = save
sys.argv[0] = "run.py"
runpy.run_path("run.py", run_name="__main__")
"""
CHECKPOINT, FAILED_RECORD = 60_000, 5_000  # bytes, about (fnn, FAST): the limit goes between


def _run(results: Path, *extra: str, fill: tuple[int, int] | None = None) -> subprocess.CompletedProcess:
    head = [sys.executable, "run.py"]
    if fill:
        script = results.parent / "fill.py"
        script.write_text(FILL.format(root=str(ROOT)))
        head = [sys.executable, str(script), *map(str, fill)]
    return subprocess.run(
        [*head, *FAST, f"paths.results_dir={results}", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict, dict]:
    rec = run(make_cfg(*FAST, results_dir=tmp_path_factory.mktemp("ref") / "results"))
    return rec, load_file(rec["weights"])


@pytest.fixture(scope="module")
def disk_filled(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A run whose disk filled at its second checkpoint (after epoch 2): what it left behind."""
    results = tmp_path_factory.mktemp("full") / "results"
    return results, _run(results, fill=((CHECKPOINT + FAILED_RECORD) // 2, 1))


def _same_as(rec: dict, ref: tuple[dict, dict]) -> None:
    keys = ("run_id", "status", "params", "metrics", "diagnostics")
    assert {k: rec.get(k) for k in keys} == {k: ref[0].get(k) for k in keys}
    weights = load_file(rec["weights"])
    assert weights.keys() == ref[1].keys() and all(torch.equal(weights[k], ref[1][k]) for k in weights)


@pytest.mark.slow
def test_a_full_disk_mid_run_is_one_line_a_failed_record_and_an_exact_resume(
    disk_filled, reference, tmp_path
):
    filled, out = disk_filled
    store = _store(filled, *FAST)
    ckpt = store.dir / "attempt-1" / "checkpoint.pt"
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"error: failed: no room to write {ckpt} (File too large); free space under {filled} "
        f"and rerun: it resumes from {ckpt}"
    ]
    rec = json.loads(store.record_path.read_text())
    assert rec["status"] == "failed" and rec == read_json(store.dir / "attempt-1" / "record.json")
    # the epoch-1 checkpoint is whole and no half-written one lies beside it
    assert verify_checked(ckpt) is None and sorted(os.listdir(ckpt.parent)) == [
        "checkpoint.pt",
        "record.json",
    ]
    results = tmp_path / "results"
    shutil.copytree(filled, results)  # the other tests start from it too
    store = _store(results, *FAST)
    again = _run(results)
    assert again.returncode == 0 and "resuming" in again.stdout and "(epoch 2, step 4)" in again.stdout, again
    _same_as(json.loads(store.record_path.read_text()), reference)


@pytest.mark.slow
def test_a_full_disk_that_leaves_no_room_for_the_record_says_so(tmp_path):
    results = tmp_path / "results"
    out = _run(results, fill=(1_000, 1))
    store = _store(results, *FAST)
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: failed: no room to write") and line.endswith(
        f"the failed record could not be written either ({store.dir / 'attempt-1' / 'record.json'}: File too large)"
    )
    assert verify_checked(store.dir / "attempt-1" / "checkpoint.pt") is None


@pytest.mark.slow
@pytest.mark.parametrize("force", [False, True])
def test_a_truncated_checkpoint_is_set_aside_in_one_line_and_the_run_starts_over(
    force, disk_filled, reference, tmp_path
):
    results = tmp_path / "results"
    shutil.copytree(disk_filled[0], results)
    ckpt = _store(results, *FAST).dir / "attempt-1" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:20_000])  # what a dying node leaves
    out = _run(results, *(["force=true"] if force else []))
    assert out.returncode == 0, out.stderr
    kept = ckpt.with_name("checkpoint.pt.corrupt-1")
    assert out.stderr.strip().splitlines() == [
        f"warning: checkpoint {ckpt} is corrupt (sha256 mismatch: torn or truncated write (20000 bytes)); "
        f"set aside as {kept}; starting the run over"
    ]
    assert "resuming" not in out.stdout and kept.stat().st_size == 20_000
    rec = json.loads((results / "runs" / f"{ckpt.parent.parent.name}.json").read_text())
    assert rec["attempt"] == "attempt-2" and "resumed_from_step" not in rec
    _same_as(rec, reference)
