"""One training run: check → seed → task data → model → method → train → evaluate → record.

The loop knows methods and tasks only through their interfaces (adapters/base.py, tasks/base.py).
Every input is checked before any model work; records and files follow runners/store.py (attempts,
locks, nothing overwritten by a failure). A run checkpoints every epoch (and every
`train.checkpoint_every` steps) and a rerun of the same config resumes from the last checkpoint,
ending with the same record as an uninterrupted run. A non-finite loss or gradient norm stops the
run as `diverged`; a run whose method parameters never changed ends as `frozen`.
"""

from __future__ import annotations

import math
import os
import random
import resource
import signal
import sys
import time
from contextlib import ExitStack, nullcontext
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DataLoaderConfiguration
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from safetensors.torch import save_file
from torch.utils.data import DataLoader, default_collate

from adapters import METHODS
from adapters.base import ConfigError, Plan
from adapters.lowrank import lowrank_diagnostics
from models import BUILDERS
from runners import fastpath
from runners.checks import check_run_config
from runners.config import TRAIN_KEYS, TrainConfig, heads_for, lookup, run_ids, typed
from runners.logging import build as build_logger
from runners.logging import progress as progress_bar
from runners.record import CorruptFile, atomic_write, disk_full, environment, load_checked, save_checked
from runners.store import RunStore, check_writable, set_aside_file
from tasks import TASKS
from tasks.base import EvalContext, data_record


class RunStopped(Exception):
    """The run ended early for a reason recorded in its status (diverged, interrupted, frozen)."""

    def __init__(self, status: str, message: str, **details):
        super().__init__(message)
        self.status, self.details = status, details


def linear_schedule(optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 over `warmup` steps, then linear decay to 0 at `total`: HF's
    `get_linear_schedule_with_warmup`, whose import (transformers.optimization) pulls in peft and
    costs each run's start seconds (tests/test_runner.py checks the two agree step for step)."""

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def _optimizer(
    params: list[tuple[str, torch.nn.Parameter]], t: TrainConfig, fused: bool = False
) -> torch.optim.Optimizer:
    # no weight decay on biases and norm scales (1-D tensors), as HF Trainer does
    decay = [p for _, p in params if p.ndim > 1]
    rest = [p for _, p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=t.lr, betas=tuple(t.betas), eps=t.eps, fused=fused or None
    )


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


def run(cfg: DictConfig, job: int | None = None) -> dict:
    """Trains and evaluates one configuration; returns its record (skips if already done).

    `job`: the number of this run in a `-m` sweep (Hydra's `job.num`), which picks its GPU (`_device`).
    """
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
    check_writable(Path(cfg.paths.results_dir))
    logger = build_logger(resolved.get("logger"))

    run_id, group_id = run_ids(resolved)
    store = RunStore(Path(cfg.paths.results_dir), run_id)
    data = data_record(task_mod.TASK, task_cfg)  # source + sha256 of the files this config reads
    state = PartialState(cpu=device.type == "cpu")  # several processes under `accelerate launch`
    main = state.is_main_process  # only the main process locks, decides, checkpoints and writes
    with ExitStack() as stack:
        verdict = ("train", None)
        old = None
        if main:
            locked = not stack.enter_context(store.lock())
            if not locked:  # an unreadable published record: restored from its attempt's copy, or set aside
                store.restore_record()
            if locked:
                verdict = ("locked", None)
            elif (old := store.success()) and not cfg.force and not (stale := _stale_data(old, data)):
                verdict = ("skipped", None)
            else:
                if old and not cfg.force:  # done, but over other data: train again, keep the old record
                    print(f"retrain {run_id}: {stale}; old record kept at {store.set_aside(old)}")
                verdict = ("train", str(store.resumable() or store.new_attempt()))
        verdict = _from_main(verdict, state)
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
            "task": task_mod.TASK.label(task_cfg),
            "method": method_cfg.name,
            "seed": cfg.seed,
            "attempt": attempt.name,
            "artifacts": str(attempt),
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "env": environment(device),
            "data": data,
        }
        if not main:
            logger = build_logger(None)
        start = time.perf_counter()
        raising = False  # a bug's exception is on its way up (its traceback is the report)
        unwritten = None  # why the record could not be written (a full disk), if it could not
        try:
            logger.start(record)
            with _Signals() as signals:
                _train(
                    cfg,
                    t,
                    record,
                    method_mod,
                    method_cfg,
                    task_mod,
                    task_cfg,
                    builder,
                    device,
                    attempt,
                    signals,
                    logger,
                )
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


def _train(
    cfg, t, record, method_mod, method_cfg, task_mod, task_cfg, builder, device, attempt, signals, logger
):
    setup_tic = time.perf_counter()
    seed_everything(cfg.seed)
    task = task_mod.TASK(task_cfg)  # loads and checks data files first: cheap failures before models
    tokenizer = builder.build_tokenizer(cfg.model, task.texts())
    model = builder.build_model(cfg.model, task.head, tokenizer)
    data = task.build(model, tokenizer)  # from the frozen base model (the synthetic target needs it)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    method = method_mod.apply(
        model,
        method_cfg,
        list(model_cfg["target_modules"]),
        heads_for(model_cfg, task.head),
        torch.Generator().manual_seed(cfg.seed),  # the masks' own stream
    )
    model = method.model  # a method may wrap the model it adapts (e.g. PEFT prompt methods)
    data = task.on_method(model, method, data)
    record["task_info"] = task.info()  # how the task ran (e.g. a feature cache), beside the config
    counts_start = method.param_counts()
    record["task_version"] = task.version

    if device.type == "cuda":  # peak memory of this run, not of earlier runs in the same process (sweeps)
        torch.cuda.reset_peak_memory_stats(device)
    bf16 = device.type == "cuda" and (t.bf16 == "auto" or t.bf16 is True)
    # several processes (`accelerate launch`): train.batch_size is the global batch, split across them
    acc = Accelerator(
        cpu=device.type == "cpu",
        mixed_precision="bf16" if bf16 else "no",
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )
    record["env"]["precision"] = "bf16 autocast" if bf16 else "fp32"
    if t.batch_size % acc.num_processes:
        raise ConfigError(
            f"train.batch_size={t.batch_size} (the global batch) must divide among {acc.num_processes} processes"
        )
    record["batching"] = {
        "num_processes": acc.num_processes,
        "per_process_batch": t.batch_size // acc.num_processes,
        "grad_accum": t.grad_accum,
        "effective_batch": t.batch_size * t.grad_accum,
        "convention": "train.batch_size is the global batch (split across processes); train.lr is used "
        "as given, not scaled with the number of processes",
    }
    n_batches = math.ceil(len(data.train) / t.batch_size)  # = len(loader) below
    steps_per_epoch = math.ceil(n_batches / t.grad_accum)
    total_steps = t.max_steps or t.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    fast = fastpath.resolve(t, device, total_steps)
    record["env"]["fast_path"] = fast.describe()
    collate = data.collate or default_collate
    eval_collate = data.eval_collate or collate  # evaluation is eager: exact padding
    if fast.pad_to_multiple_of and data.pad_values:
        collate = fastpath.bucketed(collate, data.pad_values, fast.pad_to_multiple_of)
    order = torch.Generator().manual_seed(cfg.seed)  # the data order's own stream
    loader = DataLoader(
        data.train,
        batch_size=t.batch_size,
        shuffle=True,
        collate_fn=collate,
        generator=order,
        num_workers=t.num_workers,
        # page-locked batches copy to the GPU without blocking: a copy from pageable memory waits for
        # the stream to drain, so the host could not queue step n+1 while the GPU runs step n
        pin_memory=device.type == "cuda",
    )
    evals = {
        k: DataLoader(v, batch_size=t.eval_batch_size, collate_fn=eval_collate) for k, v in data.evals.items()
    }
    method.setup(
        Plan(
            total_steps=total_steps,
            steps_per_epoch=steps_per_epoch,
            epochs=epochs,
            batch_size=t.batch_size * t.grad_accum,
            num_processes=acc.num_processes,
            train_examples=len(data.train),
        )
    )
    params = method.optimizer_parameters()
    optimizer = _optimizer(params, t, fast.fused_optimizer)
    clipped = [p for _, p in params]
    warmup = t.warmup_steps if t.warmup_steps is not None else round(t.warmup_ratio * total_steps)
    scheduler = linear_schedule(optimizer, warmup, total_steps)
    model, optimizer = acc.prepare(model, optimizer)
    distributed = acc.num_processes > 1
    if distributed:  # each process takes its slice of every global batch (same order everywhere)
        loader = acc.prepare(loader)
    main = acc.is_main_process
    eval_model = acc.unwrap_model(model)  # every process evaluates the full splits: no gather needed
    train_model, extra_loss, compiled_scope = model, method.autograd_loss, nullcontext
    compiled = None  # (model, loss terms, scope) after the first step; evaluation stays eager (fastpath)
    if fast.compile_mode is not None:
        record["env"]["fast_path"]["inductor_cache"] = fastpath.use_cache_dir(cfg.paths.results_dir)
        # a new model and backend per run: earlier runs' entries (a sweep in one process) would only
        # fill Dynamo's per-function recompile limit (8), past which it runs that function eager
        torch._dynamo.reset()
        loss_terms = method.autograd_loss
        if method.autograd_terms:
            loss_terms = fastpath.compile(method.autograd_loss, fast.compile_mode, acc.device, dynamic=None)
        # dynamic=True: one graph for every padded length (bucketing leaves a handful of shapes, which
        # CUDA graphs record one by one); dynamic=None would compile a static graph first, then again
        forward, scope, what = fastpath.compile_forward(
            model, t.compile_scope, fast.compile_mode, acc.device, dynamic=True
        )
        compiled = (forward, loss_terms, scope)
        record["env"]["fast_path"]["compiled"] = what  # e.g. "12 blocks (DebertaV2Layer)", or "model"
    cudagraphs = fastpath.uses_cudagraphs(fast.compile_mode)
    per_process_batch = t.batch_size // acc.num_processes
    watched = _fingerprints(method)
    trained = [p for p in model.parameters() if p.requires_grad]  # the only ones with gradients

    def to_device(batch):  # non_blocking: pinned batches (CUDA) copy asynchronously, others as before
        return {k: v.to(acc.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    s = {"epoch": 1, "batch": 0, "step": 0, "history": [], "best": None, "train_time": 0.0, "seen": 0}
    ckpt_path = attempt / "checkpoint.pt"
    if ckpt_path.is_file():
        try:
            s = _load_checkpoint(ckpt_path, model, optimizer, scheduler, method, order, watched)
        except (CorruptFile, KeyError, ValueError, RuntimeError) as e:
            # it passed its checksum (runners/store.py) but does not fit this model (a code change), or
            # broke since: rerunning would fail the same way, so it goes aside and the rerun starts over
            if isinstance(e, torch.OutOfMemoryError):
                raise
            why = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}" if str(e) else type(e).__name__
            kept = set_aside_file(ckpt_path) if main else ckpt_path
            raise RunStopped(
                "failed",
                f"checkpoint {ckpt_path} does not load ({why}); set aside as {kept}: rerun to start over",
            ) from e
        if main:
            print(f"resuming {record['run_id']} from {ckpt_path} (epoch {s['epoch']}, step {s['step']})")
        record["resumed_from_step"] = s["step"]
    check_every = t.check_every or (1 if device.type == "cpu" else 50)
    eval_epochs = set(t.eval_epochs or range(1, epochs + 1)) | {epochs}
    first_eval = next(iter(evals))
    sign = 1 if task.higher_is_better else -1

    def checkpoint(acc_state):
        # several processes: only at epoch ends (each process's partial-epoch sums stay its own)
        if t.checkpoint and main and not (distributed and acc_state is not None):
            _save_checkpoint(ckpt_path, s, acc_state, model, optimizer, scheduler, method, order, watched)

    setup_s = time.perf_counter() - setup_tic  # data, model, method, optimizer, compile wrappers
    for epoch in range(s["epoch"], epochs + 1):
        model.train()
        tic = epoch_tic = time.perf_counter()
        if s["batch"] == 0:
            s["order_state"] = order.get_state()
            acc_state = {
                "loss": torch.zeros((), device=acc.device),
                "reg": torch.zeros((), device=acc.device),
            }
            acc_state.update(n=0, preds=[], labels=[])
        else:  # resumed mid-epoch: same order, skip the batches already trained on
            order.set_state(s["order_state"])
            acc_state = s.pop("acc_state")
        pending = []  # this window's losses and grad norms, checked with one host sync
        batches = iter(loader)
        for _ in range(s["batch"]):
            next(batches)
        bar = progress_bar(
            total=len(loader), initial=s["batch"], desc=f"epoch {epoch}/{epochs}", unit="batch"
        )
        for i, batch in enumerate(batches, start=s["batch"]):
            bar.update()
            batch = to_device(batch)
            if compiled is not None and s["step"] >= 1:
                train_model, extra_loss, compiled_scope = compiled
                if cudagraphs and _rows(batch) < per_process_batch:
                    # an epoch's last, smaller batch: its shape would cost one CUDA-graph recording
                    # per layer call, forward and backward, for one step an epoch; it runs eager
                    train_model, compiled_scope = model, nullcontext
            if cudagraphs:
                torch.compiler.cudagraph_mark_step_begin()
            with acc.autocast(), compiled_scope():
                loss, p, y = task.forward(train_model, batch)
                reg = extra_loss()
                total = loss if reg is None else loss + reg
            acc.backward(total / t.grad_accum)
            analytic = method.add_loss_grads(1 / t.grad_accum)  # terms whose gradient is closed-form
            if analytic is not None:
                reg = analytic if reg is None else reg.detach() + analytic
                total = total.detach() + analytic
            acc_state["loss"] += loss.detach().float() * len(y)
            if reg is not None:
                acc_state["reg"] += reg.detach().float() * len(y)
            acc_state["n"] += len(y)
            if p is not None:  # copies of outputs: CUDA graphs reuse their output buffers on the next step
                acc_state["preds"].append(p.detach().to(torch.float32, copy=True))
                acc_state["labels"].append(y.detach())
            pending.append(total.detach().to(torch.float32, copy=True))
            if (i + 1) % t.grad_accum and i + 1 != len(loader):
                continue
            if t.max_grad_norm:
                pending.append(acc.clip_grad_norm_(clipped, t.max_grad_norm).float())
            s["step"] += 1
            method.before_step(optimizer, s["step"])  # after clipping, as the RM-LoRA code masks
            optimizer.step()
            method.after_step(optimizer, s["step"])
            scheduler.step()
            # model.zero_grad walks every parameter (DeBERTa: 2.5 s of 804 profiled steps)
            for param in trained:
                param.grad = None
            s["batch"] = i + 1
            if logger.wants_step(s["step"]):  # one host sync, only when a logger asks for it
                logger.step(
                    s["step"], {"train/loss": float(total.detach()), "lr": scheduler.get_last_lr()[0]}
                )
            if s["step"] % check_every == 0 or s["step"] >= total_steps:
                _check_finite(pending, s, t)
                pending = []
            if signals.caught is not None:
                _check_finite(pending, s, t)
                checkpoint(acc_state)
                name = signal.Signals(signals.caught).name
                raise RunStopped(
                    "interrupted",
                    f"stopped by {name} at step {s['step']}; rerun the same command to resume",
                    history=s["history"],
                )
            if t.checkpoint_every and s["step"] % t.checkpoint_every == 0 and s["step"] < total_steps:
                _check_finite(pending, s, t)
                pending = []
                s["train_time"] += time.perf_counter() - tic
                tic = time.perf_counter()
                checkpoint(acc_state)
            if s["step"] >= total_steps:
                break
        bar.close()
        _check_finite(pending, s, t)
        s["train_time"] += time.perf_counter() - tic
        if distributed:  # sums over processes; predictions gathered (metrics do not depend on order)
            for key in ("loss", "reg"):
                acc_state[key] = acc.reduce(acc_state[key], "sum")
            acc_state["n"] = int(acc.reduce(torch.tensor(acc_state["n"], device=acc.device), "sum"))
            if acc_state["preds"]:
                acc_state["preds"] = [acc.gather(torch.cat(acc_state["preds"]))]
                acc_state["labels"] = [acc.gather(torch.cat(acc_state["labels"]))]
        s["seen"] += acc_state["n"]
        n = max(acc_state["n"], 1)
        entry = {
            "epoch": epoch,
            "step": s["step"],
            "train_loss": float(acc_state["loss"]) / n,
            "train_reg": float(acc_state["reg"]) / n,
        }
        if acc_state["preds"]:
            preds = torch.cat(acc_state["preds"]).cpu()
            labels = torch.cat(acc_state["labels"]).cpu()
            entry["train"] = task.metrics(preds, labels.float() if labels.is_floating_point() else labels)
        if epoch in eval_epochs:
            eval_tic = time.perf_counter()
            entry["eval"] = {}
            for split, loader_ in evals.items():
                ctx = EvalContext(
                    to_device, acc.autocast, attempt / "outputs" / f"epoch_{epoch}" / split, epoch, split
                )
                entry["eval"][split] = task.evaluate(eval_model, loader_, ctx)
            s.setdefault("eval_s", []).append(time.perf_counter() - eval_tic)
            score = entry["eval"][first_eval][task.main_metric]
            if task.main_metric in entry.get("train", {}):  # train − eval (RM-LoRA's generalization error)
                train_score = entry["train"][task.main_metric]
                entry["generalization_gap"] = {
                    k: train_score - v[task.main_metric] for k, v in entry["eval"].items()
                }
            if s["best"] is None or sign * score > sign * s["best"]["score"]:
                s["best"] = {"epoch": epoch, "score": score, "eval": entry["eval"]}
            shown = f"{first_eval} {task.main_metric} {score:.4f}"
        else:
            shown = "(no evaluation this epoch)"
        # wall seconds of this epoch's training + evaluation, in timing (history stays deterministic)
        s.setdefault("epoch_s", []).append(time.perf_counter() - epoch_tic)
        s["history"].append(entry)
        logger.epoch(epoch, s["step"], entry)
        if main:
            print(f"epoch {epoch}/{epochs} step {s['step']}: train loss {entry['train_loss']:.4f} | {shown}")
        s.update(epoch=epoch + 1, batch=0)
        if epoch < epochs:
            checkpoint(None)

    unchanged = _unchanged(method, watched)
    method.finish()
    counts_end = method.param_counts()
    record["params"] = {
        **counts_end,
        "trainable": counts_start["trainable"],
        "method_trainable": counts_start["method_trainable"],
        "trainable_at_end": counts_end["trainable"],
        **(method.extra_counts() if method.extra_counts else {}),
    }
    record["metrics"] = {
        "main_metric": task.main_metric,
        "higher_is_better": task.higher_is_better,
        "selection_split": first_eval,
        "final": s["history"][-1]["eval"],
        "best": s["best"],
        "history": s["history"],
    }
    if task.notes():
        record["task_notes"] = task.notes()
    if method.lowrank:
        record["diagnostics"] = lowrank_diagnostics(method.lowrank, cfg.diagnostics.rank_rtol)
    record["timing"] = {
        "train_s": s["train_time"],
        "steps": s["step"],
        "samples_per_s": s["seen"] / s["train_time"] if s["train_time"] else None,
        "epoch_s": s.get("epoch_s", []),  # each epoch's training + evaluation
        "eval_s": s.get("eval_s", []),
        "setup_s": setup_s,  # this process's, before its first step (a resumed run's own)
        **_peak_memory(device),
    }
    weights = attempt / "weights.safetensors"
    record["weights"] = str(weights)
    if main:
        state = method.trained_state_dict()
        atomic_write(weights, lambda tmp: save_file(state, tmp, metadata={"run_id": record["run_id"]}))
        if method.exporter:
            method.exporter(attempt)
    acc.wait_for_everyone()
    if unchanged is not None:
        raise RunStopped(
            "frozen",
            f"no method parameter changed in {s['step']} steps ({unchanged}); "
            f"check train.lr (now {t.lr}) and method.reg_weight, and that the loss reaches the adapter",
        )
    # the checkpoint is deleted by run() once the success record is written (a full disk in between
    # leaves it to resume from)


def _check_finite(pending: list[torch.Tensor], s: dict, t: TrainConfig) -> None:
    """Raises `diverged` if a loss or gradient norm in `pending` is not finite (one host sync)."""
    if not pending:
        return
    values = torch.stack(pending).cpu()
    if bool(torch.isfinite(values).all()):
        s["last_finite_loss"] = float(values[-1])
        return
    last = s.get("last_finite_loss")
    raise RunStopped(
        "diverged",
        f"non-finite loss or gradient norm by step {s['step']} "
        f"({'no finite loss yet' if last is None else f'last finite total loss {last:.6g}'}); lower train.lr (now {t.lr}) or method.reg_weight, or set train.max_grad_norm",
        diverged_at_step=s["step"],
        last_finite_loss=s.get("last_finite_loss"),
        history=s["history"],
    )


def _fingerprints(method) -> dict[str, tuple[float, float]]:
    """(sum, sum of squares) in float64 of every method parameter (head excluded): changed or not."""
    head = set(method.head)
    return {
        n: _fingerprint(p)
        for n, p in method.model.named_parameters()
        if (p.requires_grad or any(p is q for q in method.own_params)) and n not in head
    }


def _fingerprint(p: torch.Tensor) -> tuple[float, float]:
    x = p.detach().double()
    return float(x.sum()), float((x * x).sum())


def _unchanged(method, watched: dict) -> str | None:
    """None if some watched parameter changed, else a short description of what stayed put."""
    now = {n: _fingerprint(p) for n, p in method.model.named_parameters() if n in watched}
    if not now or any(now[n] != watched[n] for n in now):
        return None
    names = sorted(now)
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _save_checkpoint(path, s, acc_state, model, optimizer, scheduler, method, order, watched) -> None:
    state = {
        "progress": {k: v for k, v in s.items() if k != "acc_state"},
        "acc_state": acc_state,
        "params": {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad},
        "buffers": {n: b.detach().cpu().clone() for n, b in model.named_buffers()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "method": method.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy": np.random.get_state(),
            "python": random.getstate(),
            "order": order.get_state(),
        },
        "watched": watched,
    }
    save_checked(path, state)  # atomic, behind its sha256: a torn write is recognised on resume


def _load_checkpoint(path, model, optimizer, scheduler, method, order, watched) -> dict:
    state = load_checked(path)  # CorruptFile if it does not match its checksum
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for n, v in state["params"].items():
            params[n].copy_(v)
        for n, v in state["buffers"].items():
            buffers[n].copy_(v)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    method.load_state_dict(state["method"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    order.set_state(rng["order"])
    watched.clear()
    watched.update(state["watched"])
    progress = state["progress"]
    if progress["batch"]:
        progress["acc_state"] = acc_state_to(state["acc_state"], next(model.parameters()).device)
    return progress


def acc_state_to(acc_state: dict, device: torch.device) -> dict:
    """A partial epoch's sums and predictions, on the run's device. The checkpoint loads them on the
    CPU; the epoch's end concatenates the restored predictions with this device's new ones (a resumed
    CUDA run failed there with "Expected all tensors to be on the same device", H100, 2026-12-07)."""
    moved = {}
    for key, value in acc_state.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
        elif isinstance(value, list):
            value = [v.to(device) if isinstance(v, torch.Tensor) else v for v in value]
        moved[key] = value
    return moved


def _rows(batch: dict) -> int:
    """The number of examples in a batch (its first tensor's leading size)."""
    return next(v.shape[0] for v in batch.values() if torch.is_tensor(v) and v.ndim)


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
