"""One training run: seed → task data → model → method → train → evaluate every epoch → record.

The loop knows methods and tasks only through their interfaces (adapters/base.py, tasks/base.py).
"""

from __future__ import annotations

import math
import random
import resource
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file
from torch.utils.data import DataLoader, default_collate
from transformers import get_linear_schedule_with_warmup

from adapters import METHODS
from adapters.base import ConfigError
from adapters.lowrank import lowrank_diagnostics
from models import BUILDERS
from runners.config import TRAIN_KEYS, lookup, run_ids, typed
from runners.record import atomic_write, environment, read_json, write_json
from tasks import TASKS


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible; use device=auto or device=cpu")
    return torch.device(name)


def _optimizer(params: list[tuple[str, torch.nn.Parameter]], t) -> torch.optim.Optimizer:
    # no weight decay on biases and norm scales (1-D tensors), as HF Trainer does
    decay = [p for _, p in params if p.ndim > 1]
    rest = [p for _, p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=t.lr, betas=tuple(t.betas), eps=t.eps)


def _validate_train(t) -> None:
    if t.batch_size < 1 or t.grad_accum < 1:
        raise ConfigError("train.batch_size and train.grad_accum must be >= 1")
    if t.lr <= 0:
        raise ConfigError(f"train.lr must be > 0, got {t.lr}")
    if t.max_steps is None and t.epochs < 1:
        raise ConfigError("train.epochs must be >= 1 (or set train.max_steps)")


def run(cfg: DictConfig) -> dict:
    """Trains and evaluates one configuration; returns its record (skips if already done)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    t = cfg.train
    method_mod = lookup(METHODS, cfg.method.name, "method")
    task_mod = lookup(TASKS, cfg.task.name, "task")
    builder = lookup(BUILDERS, cfg.model.builder, "model builder")
    method_cfg = typed(method_mod.Config, cfg.method, "method")
    task_cfg = typed(task_mod.Config, cfg.task, "task", drop=TRAIN_KEYS)
    _validate_train(t)

    run_id, group_id = run_ids(resolved)
    runs = Path(cfg.paths.results_dir) / "runs"
    path = runs / f"{run_id}.json"
    old = read_json(path)
    if old and old.get("status") == "success" and not cfg.force:
        print(f"skip {run_id}: a successful record exists at {path} (force=true reruns)")
        return old

    record = {
        "run_id": run_id,
        "group_id": group_id,
        "status": "running",
        "config": resolved,
        "model": cfg.model.name,
        "task": task_mod.TASK.label(task_cfg),
        "method": method_cfg.name,
        "seed": cfg.seed,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    device = _device(cfg.device)
    record["env"] = environment(device)
    start = time.perf_counter()
    try:
        _train(
            cfg,
            record,
            method_mod,
            method_cfg,
            task_mod,
            task_cfg,
            builder,
            device,
            runs / f"{run_id}.safetensors",
        )
        record["status"] = "success"
    except BaseException as e:
        record.update(status="failed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        record.setdefault("timing", {})["wall_s"] = time.perf_counter() - start
        write_json(path, record)
    record["record_path"] = str(path)
    return record


def _train(cfg, record, method_mod, method_cfg, task_mod, task_cfg, builder, device, weights_path) -> None:
    t = cfg.train
    seed_everything(cfg.seed)
    task = task_mod.TASK(task_cfg)  # loads and checks data files first: cheap failures before models
    tokenizer = builder.build_tokenizer(cfg.model, task.texts())
    model = builder.build_model(cfg.model, task.head, tokenizer)
    data = task.build(model, tokenizer)  # from the frozen base model (the synthetic target needs it)
    method = method_mod.apply(
        model,
        method_cfg,
        list(cfg.model.target_modules),
        list(cfg.model.head_modules),
        torch.Generator().manual_seed(cfg.seed),
    )  # the masks' own stream
    record["params"] = method.param_counts()
    record["task_version"] = task.version

    bf16 = device.type == "cuda" and (t.bf16 == "auto" or t.bf16 is True)
    acc = Accelerator(cpu=device.type == "cpu", mixed_precision="bf16" if bf16 else "no")
    record["env"]["precision"] = "bf16 autocast" if bf16 else "fp32"
    collate = data.collate or default_collate
    loader = DataLoader(
        data.train,
        batch_size=t.batch_size,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(cfg.seed),
        num_workers=t.num_workers,
    )
    evals = {
        k: DataLoader(v, batch_size=t.eval_batch_size, collate_fn=collate) for k, v in data.evals.items()
    }
    steps_per_epoch = math.ceil(len(loader) / t.grad_accum)
    total_steps = t.max_steps or t.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = _optimizer(params, t)
    optimizer_params = [p for _, p in params]
    warmup = t.warmup_steps if t.warmup_steps is not None else round(t.warmup_ratio * total_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    model, optimizer = acc.prepare(model, optimizer)

    def to_device(batch):
        return {k: v.to(acc.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    history, step, seen, train_time = [], 0, 0, 0.0
    first_eval = next(iter(evals))
    sign = 1 if task.higher_is_better else -1
    best = None
    for epoch in range(1, epochs + 1):
        model.train()
        tic = time.perf_counter()
        loss_sum, reg_sum, n, preds, labels = 0.0, 0.0, 0, [], []
        for i, batch in enumerate(loader):
            batch = to_device(batch)
            with acc.autocast():
                loss, p, y = task.forward(model, batch)
                reg = method.extra_loss()
                total = loss if reg is None else loss + reg
            acc.backward(total / t.grad_accum)
            loss_sum += float(loss.detach()) * len(y)
            reg_sum += 0.0 if reg is None else float(reg.detach()) * len(y)
            n += len(y)
            preds.append(p.float().cpu())
            labels.append(y.cpu())
            if (i + 1) % t.grad_accum == 0 or i + 1 == len(loader):
                if t.max_grad_norm:
                    acc.clip_grad_norm_(optimizer_params, t.max_grad_norm)
                method.before_step(optimizer)  # after clipping, as the RM-LoRA code masks
                optimizer.step()
                method.after_step(optimizer)
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if step >= total_steps:
                    break
        train_time += time.perf_counter() - tic
        seen += n
        entry = {
            "epoch": epoch,
            "step": step,
            "train_loss": loss_sum / n,
            "train_reg": reg_sum / n,
            "train": task.metrics(torch.cat(preds), torch.cat(labels)),
            "eval": {k: task.evaluate(model, v, to_device, acc.autocast) for k, v in evals.items()},
        }
        history.append(entry)
        score = entry["eval"][first_eval][task.main_metric]
        if best is None or sign * score > sign * best["score"]:
            best = {"epoch": epoch, "score": score, "eval": entry["eval"]}
        print(
            f"epoch {epoch}/{epochs} step {step}: train loss {entry['train_loss']:.4f} | "
            f"{first_eval} {task.main_metric} {score:.4f}"
        )

    record["metrics"] = {
        "main_metric": task.main_metric,
        "higher_is_better": task.higher_is_better,
        "selection_split": first_eval,
        "final": history[-1]["eval"],
        "best": best,
        "history": history,
    }
    if method.lowrank:
        record["diagnostics"] = lowrank_diagnostics(method.lowrank, cfg.diagnostics.rank_rtol)
    record["timing"] = {
        "train_s": train_time,
        "steps": step,
        "samples_per_s": seen / train_time if train_time else None,
        **_peak_memory(device),
    }
    state = method.trained_state_dict()
    atomic_write(weights_path, lambda tmp: save_file(state, tmp, metadata={"run_id": record["run_id"]}))
    record["weights"] = str(weights_path)


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
        lines.append(f"ΔW: mean rank {d['mean_rank']:.2f} | mean ‖ΔWΔWᵀ−I‖²_F {d['mean_orth_loss']:.4g}")
    lines.append(f"time: {record['timing']['wall_s']:.1f} s | record: {record.get('record_path', '')}")
    return "\n".join(lines)
