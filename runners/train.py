"""One training run, top to bottom: check the config → lock or skip → build the parts (task data,
model, method, plan, optimizer and schedule, compiled forward) → resume or start → epochs of optimizer
steps, each epoch evaluated → the record.

The loop knows methods and tasks only through their interfaces (adapters/base.py, tasks/base.py);
the parts are built in runners/parts.py, the checkpoint saved and loaded in runners/checkpoint.py,
the run's progress is a `Progress` (runners/state.py). Every input is checked before any model work;
records and files follow runners/store.py (attempts, locks, nothing overwritten by a failure). A run
checkpoints every epoch (and every `train.checkpoint_every` steps) and a rerun of the same config
resumes from the last checkpoint, ending with the same record as an uninterrupted run. A non-finite
loss or gradient norm stops the run as `diverged`; a run whose method parameters never changed ends as
`frozen` (runners/checks.py).
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from accelerate import PartialState
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from safetensors.torch import save_file

from adapters import METHODS
from adapters.lowrank import lowrank_diagnostics
from core import ConfigError, atomic_write, disk_full
from core import progress as progress_bar
from models import BUILDERS
from runners.checkpoint import Checkpoint
from runners.checkpoint import acc_state_to as acc_state_to  # noqa: F401  (its old home: tests import it here)
from runners.checks import check_finite, check_run_config, unchanged
from runners.config import TRAIN_KEYS, TrainConfig, lookup, run_ids, typed
from runners.logging import build as build_logger
from runners.parts import Parts, RunSpec, batch_rows, build
from runners.parts import linear_schedule as linear_schedule  # noqa: F401  (its old home)
from runners.record import environment
from runners.state import EpochSums, Progress, RunStopped
from runners.store import RunStore, check_writable
from tasks import TASKS
from tasks.base import EvalContext, data_record


def run(cfg: DictConfig, job: int | None = None) -> dict:
    """Trains and evaluates one configuration; returns its record (skips if already done).

    `job`: the number of this run in a `-m` sweep (Hydra's `job.num`), which picks its GPU (`_device`).
    """
    spec, resolved = _spec(cfg, job)
    check_writable(Path(cfg.paths.results_dir))
    logger = build_logger(resolved.get("logger"))
    run_id, group_id = run_ids(resolved)
    store = RunStore(Path(cfg.paths.results_dir), run_id)
    data = data_record(spec.task_mod.TASK, spec.task_cfg)  # source + sha256 of the files this config reads
    state = PartialState(cpu=spec.device.type == "cpu")  # several processes under `accelerate launch`
    main = state.is_main_process  # only the main process locks, decides, checkpoints and writes
    with ExitStack() as stack:
        verdict, old = _decide(store, stack, cfg.force, data, state)
        if verdict[0] == "locked":
            print(f"skip {run_id}: another process is training it now (lock {store.runs / run_id}.lock)")
            return {"run_id": run_id, "status": "locked"}
        if verdict[0] == "skipped":
            if main:
                print(f"skip {run_id}: a successful record exists at {store.record_path} (force=true reruns)")
                return {**old, "status": "skipped", "record_path": str(store.record_path)}
            return {"run_id": run_id, "status": "skipped"}
        attempt = Path(verdict[1])
        record = {
            "run_id": run_id,
            "group_id": group_id,
            "status": "running",
            "config": resolved,
            "model": cfg.model.name,
            "task": spec.task_mod.TASK.label(spec.task_cfg),
            "method": spec.method_cfg.name,
            "seed": cfg.seed,
            "attempt": attempt.name,
            "artifacts": str(attempt),
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "env": environment(spec.device),
            "data": data,
        }
        unwritten = _train_and_write(
            spec, record, store, attempt, logger if main else build_logger(None), main
        )
    if unwritten and record["status"] == "success":
        raise RunStopped(
            "failed",
            f"failed: trained, but its record could not be written ({unwritten}); free space and rerun: {_rerun(attempt)}",
        )
    if record["status"] != "success":
        message = f"{record['status']}: {record['error']}"
        if unwritten:
            message += f"; the {record['status']} record could not be written either ({unwritten})"
        raise RunStopped(record["status"], message)
    return record


def _spec(cfg: DictConfig, job: int | None) -> tuple[RunSpec, dict]:
    """The config resolved, typed and checked, the modules it names looked up: one-line errors
    before any data or model work. Also the resolved config (a plain dict)."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:  # e.g. model.placement=foo: ${.placements.${.placement}} fails
        where = f" (at {e.full_key})" if getattr(e, "full_key", None) else ""
        raise ConfigError(
            f"cannot resolve the config: {str(e).splitlines()[0]}{where}; fix the value that key depends on"
        ) from e
    t = typed(TrainConfig, resolved["train"], "train")
    method_mod = lookup(METHODS, cfg.method.name, "method")
    task_mod = lookup(TASKS, cfg.task.name, "task")
    builder = lookup(BUILDERS, cfg.model.builder, "model builder")
    method_cfg = typed(method_mod.Config, cfg.method, "method")
    task_cfg = typed(task_mod.Config, cfg.task, "task", drop=TRAIN_KEYS)
    check_run_config(resolved, t, method_mod, method_cfg)
    builder.check_task(cfg.model.name, cfg.task.name)
    builder.check_source(cfg.model, cfg.task.name)  # pretrained weights reachable: else one line, at once
    device = _device(cfg.device, job)
    return RunSpec(cfg, t, method_mod, method_cfg, task_mod, task_cfg, builder, device), resolved


def _decide(store: RunStore, stack: ExitStack, force: bool, data: dict, state) -> tuple[tuple, dict | None]:
    """("train", attempt dir) | ("locked", None) | ("skipped", None), as the main process decides
    (holding the run's lock in `stack` while it trains), and the successful record found, if any."""
    verdict = ("train", None)
    old = None
    if state.is_main_process:
        if not stack.enter_context(store.lock()):
            verdict = ("locked", None)
        else:
            store.restore_record()  # an unreadable published record: restored from its attempt's copy
            if (old := store.success()) and not force and not (stale := _stale_data(old, data)):
                verdict = ("skipped", None)
            else:
                if old and not force:  # done, but over other data: train again, keep the old record
                    print(f"retrain {store.run_id}: {stale}; old record kept at {store.set_aside(old)}")
                verdict = ("train", str(store.resumable() or store.new_attempt()))
    return _from_main(verdict, state), old


def _train_and_write(spec: RunSpec, record: dict, store: RunStore, attempt: Path, logger, main: bool):
    """Trains, sets the record's status, writes it (main process); returns why the record could not
    be written (a full disk), or None. A bug's exception goes on up, its traceback the report."""
    start = time.perf_counter()
    raising = False  # a bug's exception is on its way up
    unwritten = None
    try:
        logger.start(record)
        with _Signals() as signals:
            _train(spec, record, attempt, signals, logger)
        record["status"] = "success"
    except RunStopped as e:
        record.update(status=e.status, error=str(e), **e.details)
    except BaseException as e:
        hint = ""
        if record["env"].get("fast_path", {}).get("compiled") and _from_torch_compile(e):
            hint = " (raised by torch.compile: train.compile=false runs this eager)"
            print(f"error: {type(e).__name__}{hint}", file=sys.stderr)
        record.update(status="failed", error=f"{type(e).__name__}: {e}{hint}")
        if (full := disk_full(e)) is None:
            raising = True
            raise
        # a full disk (checkpoint, weights, outputs): one line, not the writers' chained tracebacks;
        # the writes are atomic, so the last checkpoint is whole and a rerun with room resumes it
        record["error"] = (
            f"no room to write {full.filename} ({full.strerror}); free space under "
            f"{store.runs.parent} and rerun: {_rerun(attempt)}"
        )
    finally:
        record.setdefault("timing", {})["wall_s"] = time.perf_counter() - start
        if main:
            try:
                record["record_path"] = str(store.finish(attempt, record))
                if record["status"] == "success":  # only now: until the record is out it resumes
                    (attempt / "checkpoint.pt").unlink(missing_ok=True)
            except OSError as e:  # most likely the disk is full (again): said in the run's one line
                unwritten = f"{e.filename or store.record_path}: {e.strerror or e}"
                if raising:
                    print(f"error: the run's record could not be written ({unwritten})", file=sys.stderr)
        try:
            logger.finish(record)
        except Exception as e:  # a logging failure must not turn a trained run into a failed one
            print(f"warning: logger.finish failed: {type(e).__name__}: {e}", file=sys.stderr)
    return unwritten


# --- the run: parts, epochs, steps, evaluation, the record ------------------------------------------


def _train(spec: RunSpec, record: dict, attempt: Path, signals: _Signals, logger) -> None:
    """Builds the parts, resumes or starts, trains epoch by epoch (evaluating), fills the record."""
    setup_tic = time.perf_counter()
    parts = build(spec, record)
    checkpoint = Checkpoint(attempt / "checkpoint.pt", parts, enabled=spec.t.checkpoint)
    progress, sums = checkpoint.resume(record)
    check_every = spec.t.check_every or (1 if spec.device.type == "cpu" else 50)  # steps per host sync
    loop = _Loop(parts, progress, checkpoint, signals, logger, check_every)
    eval_epochs = set(spec.t.eval_epochs or range(1, parts.epochs + 1)) | {parts.epochs}
    setup_s = time.perf_counter() - setup_tic  # data, model, method, optimizer, compile wrappers

    for epoch in range(progress.epoch, parts.epochs + 1):
        epoch_tic = time.perf_counter()
        sums = loop.train_epoch(epoch, sums)
        entry = _epoch_entry(parts, progress, sums, epoch)
        shown = "(no evaluation this epoch)"
        if epoch in eval_epochs:
            shown = _evaluate(parts, progress, entry, epoch, attempt)
        # wall seconds of this epoch's training + evaluation, in timing (history stays deterministic)
        progress.epoch_s.append(time.perf_counter() - epoch_tic)
        progress.history.append(entry)
        logger.epoch(epoch, progress.step, entry)
        if parts.main:
            print(
                f"epoch {epoch}/{parts.epochs} step {progress.step}: train loss {entry['train_loss']:.4f} | {shown}"
            )
        progress.epoch, progress.batch, sums = epoch + 1, 0, None
        if epoch < parts.epochs:
            checkpoint.save(progress, None)

    frozen = unchanged(parts.method, parts.watched)
    _fill_record(spec, parts, progress, record, setup_s)
    _save_weights(parts, record, attempt)
    if frozen is not None:
        raise RunStopped(
            "frozen",
            f"no method parameter changed in {progress.step} steps ({frozen}); "
            f"check train.lr (now {spec.t.lr}) and method.reg_weight, and that the loss reaches the adapter",
        )
    # the checkpoint is deleted by run() once the success record is written (a full disk in between
    # leaves it to resume from)


@dataclass
class _Loop:
    """Epochs of optimizer steps, and what follows each step: the finite check (every `check_every`
    steps, one host sync), a caught signal (checkpoint, stop), a mid-epoch checkpoint."""

    parts: Parts
    progress: Progress
    checkpoint: Checkpoint
    signals: _Signals
    logger: object
    check_every: int
    pending: list[torch.Tensor] = field(default_factory=list)  # losses, grad norms not yet checked
    tic: float = 0.0  # when the training time not yet counted in progress.train_time began (s)

    def train_epoch(self, epoch: int, sums: EpochSums | None) -> EpochSums:
        """Trains epoch `epoch`, or its rest after a resume (`sums`: its sums so far)."""
        p, progress = self.parts, self.progress
        p.model.train()
        self.tic = time.perf_counter()
        if progress.batch == 0:
            progress.order_state = p.order.get_state()
            sums = EpochSums.zeros(p.acc.device)
        else:  # resumed mid-epoch: same order, skip the batches already trained on
            p.order.set_state(progress.order_state)
        self.pending = []
        batches = iter(p.loader)
        for _ in range(progress.batch):
            next(batches)
        bar = progress_bar(
            total=len(p.loader), initial=progress.batch, desc=f"epoch {epoch}/{p.epochs}", unit="batch"
        )
        for i, batch in enumerate(batches, start=progress.batch):
            bar.update()
            total = self._forward_backward(p.to_device(batch), sums)
            if (i + 1) % p.t.grad_accum and i + 1 != len(p.loader):
                continue  # gradients accumulate over grad_accum batches (the epoch's last ones fewer)
            self._step()
            progress.batch = i + 1
            self._after_step(total, sums)
            if progress.step >= p.total_steps:
                break
        bar.close()
        check_finite(self.pending, progress, p.t.lr)
        progress.train_time += time.perf_counter() - self.tic
        return sums

    def _forward_backward(self, batch: dict | list[dict], sums: EpochSums) -> torch.Tensor:
        """One batch's loss, its gradients added to the accumulated ones; returns its total loss.

        A list is one batch as micro-batches of similar length (`train.length_chunks`, tasks/batching.py
        `split_by_length`): each one's loss, a mean over its rows, is weighted by its share of the batch's
        rows and the method's loss terms count once (with the first), so the gradients sum to the whole
        batch's and the returned loss is its mean, to float tolerance (tests/test_length_chunks.py).
        Dropout draws other masks for other shapes: equal only without it."""
        p = self.parts
        chunks = batch if isinstance(batch, list) else [batch]
        rows = [batch_rows(c) for c in chunks] if len(chunks) > 1 else None
        total = reg = None
        n = 0
        for i, chunk in enumerate(chunks):
            model, extra_loss, scope = p.forward_for(self.progress.step, chunk)
            if p.cudagraphs:  # (one chunk: length_chunks is refused under CUDA graphs)
                torch.compiler.cudagraph_mark_step_begin()
            with p.acc.autocast(), scope():
                loss, preds, y = p.task.forward(model, chunk)
                part = loss if rows is None else loss * (rows[i] / sum(rows))
                if i == 0:
                    reg = extra_loss()
                    part = part if reg is None else part + reg
            p.backward(part / p.t.grad_accum)
            sums.add(loss, None, preds, y)
            n += len(y)
            total = part.detach() if total is None else total + part.detach()
        analytic = p.method.add_loss_grads(1 / p.t.grad_accum)  # terms whose gradient is closed-form
        if analytic is not None:
            reg = analytic if reg is None else reg.detach() + analytic
            total = total + analytic
        if reg is not None:
            sums.reg += reg.detach().float() * n
        self.pending.append(total.to(torch.float32, copy=True))
        return total

    def _step(self) -> None:
        """One optimizer step over the accumulated gradients, clipped, with the method's hooks."""
        p, progress = self.parts, self.progress
        if p.t.max_grad_norm:
            self.pending.append(p.clip(p.t.max_grad_norm).float())
        progress.step += 1
        p.method.before_step(p.optimizer, progress.step)  # after clipping, as the RM-LoRA code masks
        p.optimizer.step()
        p.method.after_step(p.optimizer, progress.step)
        p.scheduler.step()
        # model.zero_grad walks every parameter (DeBERTa: 2.5 s of 804 profiled steps)
        for param in p.trained:
            param.grad = None

    def _after_step(self, total: torch.Tensor, sums: EpochSums) -> None:
        p, progress, step = self.parts, self.progress, self.progress.step
        if self.logger.wants_step(step):  # one host sync, only when a logger asks for it
            self.logger.step(step, {"train/loss": float(total.detach()), "lr": p.scheduler.get_last_lr()[0]})
        if step % self.check_every == 0 or step >= p.total_steps:
            self._check()
        if self.signals.caught is not None:
            check_finite(self.pending, progress, p.t.lr)
            self.checkpoint.save(progress, sums)
            name = signal.Signals(self.signals.caught).name
            raise RunStopped(
                "interrupted",
                f"stopped by {name} at step {step}; rerun the same command to resume",
                history=progress.history,
            )
        every = p.t.checkpoint_every
        if every and step % every == 0 and step < p.total_steps:
            self._check()
            progress.train_time += time.perf_counter() - self.tic
            self.tic = time.perf_counter()
            self.checkpoint.save(progress, sums)

    def _check(self) -> None:
        check_finite(self.pending, self.progress, self.parts.t.lr)
        self.pending = []


def _epoch_entry(parts: Parts, progress: Progress, sums: EpochSums, epoch: int) -> dict:
    """The epoch's history entry: its mean training loss and regularizer, and its train metrics."""
    acc = parts.acc
    if parts.distributed:  # sums over processes; predictions gathered (metrics do not depend on order)
        sums.loss, sums.reg = acc.reduce(sums.loss, "sum"), acc.reduce(sums.reg, "sum")
        sums.n = int(acc.reduce(torch.tensor(sums.n, device=acc.device), "sum"))
        if sums.preds:
            sums.preds = [acc.gather(torch.cat(sums.preds))]
            sums.labels = [acc.gather(torch.cat(sums.labels))]
    progress.seen += sums.n
    n = max(sums.n, 1)
    entry = {
        "epoch": epoch,
        "step": progress.step,
        "train_loss": float(sums.loss) / n,
        "train_reg": float(sums.reg) / n,
    }
    if sums.preds:
        preds = torch.cat(sums.preds).cpu()
        labels = torch.cat(sums.labels).cpu()
        entry["train"] = parts.task.metrics(preds, labels.float() if labels.is_floating_point() else labels)
    return entry


def _evaluate(parts: Parts, progress: Progress, entry: dict, epoch: int, attempt: Path) -> str:
    """Evaluates every split into `entry`, keeps the best epoch by the first split; returns its line."""
    task, tic = parts.task, time.perf_counter()
    entry["eval"] = {}
    for split, loader in parts.evals.items():
        ctx = EvalContext(
            parts.to_device, parts.acc.autocast, attempt / "outputs" / f"epoch_{epoch}" / split, epoch, split
        )
        entry["eval"][split] = task.evaluate(parts.eval_model, loader, ctx)
    progress.eval_s.append(time.perf_counter() - tic)
    first = next(iter(parts.evals))  # the selection split
    score = entry["eval"][first][task.main_metric]
    if task.main_metric in entry.get("train", {}):  # train − eval (RM-LoRA's generalization error)
        train_score = entry["train"][task.main_metric]
        entry["generalization_gap"] = {k: train_score - v[task.main_metric] for k, v in entry["eval"].items()}
    sign = 1 if task.higher_is_better else -1
    if progress.best is None or sign * score > sign * progress.best["score"]:
        progress.best = {"epoch": epoch, "score": score, "eval": entry["eval"]}
    return f"{first} {task.main_metric} {score:.4f}"


def _fill_record(spec: RunSpec, parts: Parts, progress: Progress, record: dict, setup_s: float) -> None:
    """Parameter counts, metrics, diagnostics and timing, once training is done."""
    method, task = parts.method, parts.task
    method.finish()
    counts_end = method.param_counts()
    record["params"] = {
        **counts_end,
        "trainable": parts.counts_start["trainable"],
        "method_trainable": parts.counts_start["method_trainable"],
        "trainable_at_end": counts_end["trainable"],
        **(method.extra_counts() if method.extra_counts else {}),
    }
    record["metrics"] = {
        "main_metric": task.main_metric,
        "higher_is_better": task.higher_is_better,
        "selection_split": next(iter(parts.evals)),
        "final": progress.history[-1]["eval"],
        "best": progress.best,
        "history": progress.history,
    }
    if task.notes():
        record["task_notes"] = task.notes()
    if method.lowrank:
        record["diagnostics"] = lowrank_diagnostics(method.lowrank, spec.cfg.diagnostics.rank_rtol)
    record["timing"] = {
        "train_s": progress.train_time,
        "steps": progress.step,
        "samples_per_s": progress.seen / progress.train_time if progress.train_time else None,
        "epoch_s": progress.epoch_s,  # each epoch's training + evaluation
        "eval_s": progress.eval_s,
        "setup_s": setup_s,  # this process's, before its first step (a resumed run's own)
        **_peak_memory(spec.device),
        **(
            parts.warmup.finish() if parts.warmup else {}
        ),  # compiled runs: warmup_s (runners/compile_cache.py)
    }


def _save_weights(parts: Parts, record: dict, attempt: Path) -> None:
    """The method's trained tensors (and its own export, if it has one), by the main process."""
    weights = attempt / "weights.safetensors"
    record["weights"] = str(weights)
    if parts.main:
        state = parts.method.trained_state_dict()
        atomic_write(weights, lambda tmp: save_file(state, tmp, metadata={"run_id": record["run_id"]}))
        if parts.method.exporter:
            parts.method.exporter(attempt)
    parts.acc.wait_for_everyone()


# --- around the run: the device, signals, a stale success, processes ---------------------------------


def _device(name: str, job: int | None = None) -> torch.device:
    """`auto`: CUDA if visible, else CPU. Job k of a `-m` sweep (`job`) with n GPUs visible gets
    GPU k mod n, so runs packed several at once spread over the GPUs (launcher=pack); outside a sweep,
    or under `accelerate launch` (which places each process itself), plain `cuda`.
    An indexed GPU is made the current one, so that every `cuda` tensor (accelerate's too) lands there.
    """
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA device is visible; use device=auto or device=cpu")
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if job is None or "LOCAL_RANK" in os.environ:
            return torch.device("cuda")
        name = f"cuda:{job % torch.cuda.device_count()}"
    device = torch.device(name)
    if device.index is not None and "LOCAL_RANK" not in os.environ:
        if device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device={name} but only {torch.cuda.device_count()} CUDA device(s) are visible; "
                f"use device=auto or cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
        torch.cuda.set_device(device)
    return device


class _Signals:
    """SIGTERM / SIGINT set a flag the loop checks after each optimizer step (a second SIGINT aborts).

    Left alone under submitit, whose own handlers requeue preempted or timed-out SLURM jobs (the
    requeued job resumes from the last checkpoint).
    """

    def __init__(self):
        self.caught: int | None = None
        self._old: dict = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread() and "SUBMITIT_FOLDER" not in os.environ:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.caught == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.caught = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _rerun(attempt: Path) -> str:
    """What rerunning the same command will do with this attempt's files."""
    if (attempt / "checkpoint.pt").is_file():
        return f"it resumes from {attempt / 'checkpoint.pt'}"
    return "it starts over (no checkpoint yet)"


def _stale_data(old: dict, data: dict) -> str | None:
    """Why a success record `old` does not hold for the data files now, or None if it does.

    Configs that read no files (Hub datasets, generated data) have no fingerprint: nothing to compare.
    """
    if data["fingerprint"] is None:
        return None
    before = old.get("data") or {}
    if before.get("fingerprint") == data["fingerprint"]:
        return None
    if not before.get("fingerprint"):
        return "its record names no data fingerprint (written before records had one)"
    files = before.get("files") or {}
    changed = sorted(n for n in data["files"].keys() | files.keys() if files.get(n) != data["files"].get(n))
    return f"its data files changed since the record ({', '.join(changed)})"


def _from_torch_compile(e: BaseException) -> bool:
    """Whether Dynamo or inductor raised `e` (or the exception it was raised from)."""
    while e is not None:
        if type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
            return True
        e = e.__cause__
    return False


def _from_main(obj, state):
    """`obj` as the main process has it (one broadcast when several processes run)."""
    if state.num_processes == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {
            "peak_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20,
            "peak_mem_kind": "cuda_allocated",
        }
    return {
        "peak_mem_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_mem_kind": "process_max_rss",
    }


def summary(record: dict) -> str:
    """A few lines for the terminal."""
    m = record["metrics"]
    first = m["selection_split"]
    key = m["main_metric"]
    p = record["params"]
    lines = [
        f"{record['method']} on {record['task']} ({record['model']}), seed {record['seed']}: "
        f"{first} {key} {m['final'][first][key]:.6g} (best {m['best']['score']:.6g} @ epoch {m['best']['epoch']})",
        f"params: trainable {p['trainable']:,} | inference {p['inference']:,} | total {p['total']:,} (head {p['head']:,})",
    ]
    if "diagnostics" in record:
        d = record["diagnostics"]
        floor = f" (floor d_out−R: {d['mean_orth_floor']:.4g})" if "mean_orth_floor" in d else ""
        lines.append(
            f"ΔW: mean rank {d['mean_rank']:.2f} | mean ‖ΔWΔWᵀ−I‖²_F {d['mean_orth_loss']:.4g}{floor}"
        )
    lines.append(f"time: {record['timing']['wall_s']:.1f} s | record: {record.get('record_path', '')}")
    return "\n".join(lines)
