"""The parts one run trains with, built in this order (the order fixes every random draw):
task data → model → method → plan → loaders → optimizer and schedule → accelerate → compiled forward.

Methods and tasks are reached only through their interfaces (adapters/base.py, tasks/base.py);
`RunSpec` carries the modules the config names, looked up and checked by runners/train.py.
"""

from __future__ import annotations

import math
import random
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedType
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, default_collate

from adapters.base import Method, Plan
from core import ConfigError
from runners import fastpath
from runners.checks import fingerprints
from runners.config import TrainConfig, heads_for
from tasks import batching
from tasks.base import Task


@dataclass
class RunSpec:
    """What to run: the composed config, its `train:` section typed, the modules it names."""

    cfg: DictConfig
    t: TrainConfig
    method_mod: object  # an adapters/ module: Config, apply
    method_cfg: object
    task_mod: object  # a tasks/ module: Config, TASK
    task_cfg: object
    builder: object  # a models/ builder: build_tokenizer, build_model
    device: torch.device


@dataclass
class Parts:
    """A built run; `model` is as accelerate prepared it (wrapped under several processes)."""

    t: TrainConfig
    task: Task
    method: Method
    acc: Accelerator
    model: torch.nn.Module
    eval_model: torch.nn.Module  # unwrapped: every process evaluates the full splits, no gather
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    loader: DataLoader
    evals: dict[str, DataLoader]
    order: torch.Generator  # the data order's own stream (checkpointed)
    total_steps: int  # optimizer steps of the whole run
    epochs: int
    clipped: list[torch.nn.Parameter]  # the optimizer's parameters, whose gradient norm is clipped
    counts_start: dict  # method.param_counts() before training
    compiled: tuple | None = None  # (forward, loss terms, scope); eval stays eager (runners/fastpath.py)
    cudagraphs: bool = False
    watched: dict = field(default_factory=dict)  # method parameters' fingerprints (runners/checks.py)
    trained: list[torch.nn.Parameter] = field(default_factory=list)  # the only ones with gradients
    plain: bool = False  # one process, no loss scaler: the loop calls torch directly (`backward`, `clip`)
    warmup: object = None  # compiled runs: a compile_cache.WarmUp (the record's timing.warmup_s)

    @property
    def main(self) -> bool:
        return self.acc.is_main_process

    @property
    def distributed(self) -> bool:
        return self.acc.num_processes > 1

    def to_device(self, batch: dict | list[dict]) -> dict | list[dict]:
        if isinstance(batch, list):  # micro-batches of one batch (train.length_chunks)
            return [self.to_device(b) for b in batch]
        # non_blocking: pinned batches (CUDA) copy asynchronously, others as before
        return {
            k: v.to(self.acc.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
        }

    def backward(self, loss: torch.Tensor) -> None:
        # accelerate's backward divides by its own accumulation steps (1 here: the loop divides) and
        # picks a scaler or engine; with neither it is loss.backward() plus a kernel
        loss.backward() if self.plain else self.acc.backward(loss)

    def clip(self, max_norm: float) -> torch.Tensor:
        """Clips the trained parameters' gradient norm to `max_norm`; returns the norm before."""
        if self.plain:  # accelerate's clip_grad_norm_ is this after an unscale pass that has no scaler
            return torch.nn.utils.clip_grad_norm_(self.clipped, max_norm)
        return self.acc.clip_grad_norm_(self.clipped, max_norm)

    def forward_for(self, step: int, batch: dict):
        """(model, loss terms, scope) to train `batch` with: eager until the first step is taken, then
        the compiled forward, except for an epoch's last, smaller batch under CUDA graphs, whose new
        shape would cost one graph recording per layer call for one step an epoch: it runs eager."""
        if self.compiled is None or step < 1:
            return self.model, self.method.autograd_loss, nullcontext
        forward, loss_terms, scope = self.compiled
        if self.cudagraphs and batch_rows(batch) < self.t.batch_size // self.acc.num_processes:
            return self.model, loss_terms, nullcontext
        return forward, loss_terms, scope


def build(spec: RunSpec, record: dict) -> Parts:
    """Builds every part in order, noting in `record` what the config alone does not say."""
    t, device = spec.t, spec.device
    if isinstance(t.length_chunks, bool) or not isinstance(t.length_chunks, int) or t.length_chunks < 1:
        raise ConfigError(f"train.length_chunks must be an integer >= 1 (1: off), got {t.length_chunks!r}")
    seed_everything(spec.cfg.seed)
    task, model, method, data, counts_start = _task_and_method(spec, record)
    acc = _accelerator(t, device, record)
    steps_per_epoch = math.ceil(math.ceil(len(data.train) / t.batch_size) / t.grad_accum)
    total_steps = t.max_steps or t.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    fast = fastpath.resolve(t, device, total_steps)
    record["env"]["fast_path"] = fast.describe()
    if t.length_chunks > 1:
        _check_length_chunks(t, acc, fast)
    loader, evals, order = _loaders(data, t, device, spec.cfg.seed, fast)
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
    warmup = t.warmup_steps if t.warmup_steps is not None else round(t.warmup_ratio * total_steps)
    scheduler = linear_schedule(optimizer, warmup, total_steps)
    model, optimizer = acc.prepare(model, optimizer)
    # one process without a loss scaler (fp32, bf16): accelerate's optimizer wrapper adds per-step
    # checks and nothing else; the loop steps torch's optimizer itself (tests/test_host_loop.py)
    plain = acc.num_processes == 1 and acc.scaler is None and acc.distributed_type == DistributedType.NO
    if plain:
        optimizer = optimizer.optimizer
    if acc.num_processes > 1:  # each process takes its slice of every global batch (same order everywhere)
        loader = acc.prepare(loader)
    parts = Parts(
        t, task, method, acc, model, acc.unwrap_model(model), optimizer, scheduler, loader, evals, order,
        total_steps, epochs, clipped=[p for _, p in params], counts_start=counts_start, plain=plain,
    )  # fmt: skip
    if fast.compile_mode is not None:
        parts.compiled = _compile(parts, fast.compile_mode, spec.cfg.paths.results_dir, record)
    parts.cudagraphs = fastpath.uses_cudagraphs(fast.compile_mode)
    parts.watched = fingerprints(method)
    parts.trained = [p for p in model.parameters() if p.requires_grad]
    return parts


def _task_and_method(spec: RunSpec, record: dict):
    """The task's data, the model and the method applied to it (and its parameter counts before
    training): the data files are read and checked first, cheap failures before models."""
    cfg = spec.cfg
    task = spec.task_mod.TASK(spec.task_cfg)
    if spec.t.length_chunks > 1 and (task.head or {}).get("type") != "sequence_classification":
        # the micro-batches' losses are weighted by their share of the rows: right for a loss that is
        # a mean over examples, wrong for one that is a mean over tokens (language modelling, spans)
        raise ConfigError(
            f"train.length_chunks={spec.t.length_chunks} needs a sequence-classification task (a loss that "
            f"is a mean over examples, e.g. GLUE); {task.label(spec.task_cfg)} is not one: set train.length_chunks=1"
        )
    tokenizer = spec.builder.build_tokenizer(cfg.model, task.texts())
    model = spec.builder.build_model(cfg.model, task.head, tokenizer)
    data = task.build(model, tokenizer)  # from the frozen base model (the synthetic target needs it)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    method = spec.method_mod.apply(
        model,
        spec.method_cfg,
        list(model_cfg["target_modules"]),
        heads_for(model_cfg, task.head),
        torch.Generator().manual_seed(cfg.seed),  # the masks' own stream
    )
    model = method.model  # a method may wrap the model it adapts (e.g. PEFT prompt methods)
    data = task.on_method(model, method, data)
    record["task_info"] = task.info()  # how the task ran (e.g. a feature cache), beside the config
    counts_start = method.param_counts()
    record["task_version"] = task.version
    return task, model, method, data, counts_start


def _accelerator(t: TrainConfig, device: torch.device, record: dict) -> Accelerator:
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
    return acc


def _loaders(data, t: TrainConfig, device: torch.device, seed: int, fast: fastpath.FastPath):
    """The shuffled training loader, one eval loader per split, and the data order's generator."""
    collate = data.collate or default_collate
    eval_collate = data.eval_collate or collate  # evaluation is eager: exact padding
    if t.length_chunks > 1 and data.pad_values:  # micro-batches, each padded to its own longest row
        collate = batching.chunked(collate, data.pad_values, t.length_chunks, fast.pad_to_multiple_of)
    elif fast.pad_to_multiple_of and data.pad_values:
        collate = fastpath.bucketed(collate, data.pad_values, fast.pad_to_multiple_of)
    order = torch.Generator().manual_seed(seed)  # the data order's own stream
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
    return loader, evals, order


def _check_length_chunks(t: TrainConfig, acc: Accelerator, fast: fastpath.FastPath) -> None:
    """train.length_chunks > 1 runs each batch as micro-batches of their own shapes: not under CUDA
    graphs (each shape a recording; `Parts.forward_for` would run them eager) nor several processes
    (accelerate splits a batch dict, not a list of them)."""
    if fastpath.uses_cudagraphs(fast.compile_mode):
        raise ConfigError(
            f"train.length_chunks={t.length_chunks} runs micro-batches of many shapes, which CUDA graphs "
            f"would record one by one: set train.compile=false or train.compile_mode=default"
        )
    if acc.num_processes > 1:
        raise ConfigError(
            f"train.length_chunks={t.length_chunks} is single-process only ({acc.num_processes} processes): "
            f"set train.length_chunks=1"
        )


def _compile(parts: Parts, mode: str, results_dir: str, record: dict) -> tuple:
    """(forward, loss terms, scope), used from the second step on (`Parts.forward_for`); the shared
    compile cache loaded first and the warm-up clock started (runners/compile_cache.py)."""
    from runners.compile_cache import ArtifactCache, WarmUp, key_parts

    fast_path = record["env"]["fast_path"]
    fast_path["inductor_cache"] = fastpath.use_cache_dir(results_dir)
    # a new model and backend per run: earlier runs' entries (a sweep in one process) would only
    # fill Dynamo's per-function recompile limit (8), past which it runs that function eager
    torch._dynamo.reset()
    cache = None
    if parts.t.compile_cache:
        from torch.compiler._cache import CacheArtifactManager

        CacheArtifactManager.clear()  # the file gets this run's entries, not an earlier run's in this process
        fast_path["compile_cache"] = state = {}
        key = key_parts(
            record["config"], parts.acc.device, mode, parts.t.compile_scope,
            fast_path["pad_to_multiple_of"], record["env"]["precision"],
        )  # fmt: skip
        cache = ArtifactCache(results_dir, key, state)
        cache.load()  # before the first compile: its entries land in the (maybe empty) inductor dir
    method, device = parts.method, parts.acc.device
    loss_terms = method.autograd_loss
    if method.autograd_terms:
        loss_terms = fastpath.compile(method.autograd_loss, mode, device, dynamic=None)
    # dynamic=True: one graph for every padded length (bucketing leaves a handful of shapes, which
    # CUDA graphs record one by one); dynamic=None would compile a static graph first, then again
    forward, scope, what = fastpath.compile_forward(
        parts.model, parts.t.compile_scope, mode, device, dynamic=True
    )
    fast_path["compiled"] = what  # e.g. "12 blocks (DebertaV2Layer)", or "model"
    parts.warmup = warmup = WarmUp(parts.optimizer, cache if parts.main else None)

    @contextmanager
    def timed_scope():  # a compiled step begins with its first forward
        warmup.step_begins()
        with scope():
            yield

    return forward, loss_terms, timed_scope


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


def batch_rows(batch: dict) -> int:
    """The number of examples in a batch (its first tensor's leading size)."""
    return next(v.shape[0] for v in batch.values() if torch.is_tensor(v) and v.ndim)
