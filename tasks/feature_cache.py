"""Frozen-backbone feature cache for head-only training (vision tasks).

When every trainable parameter lies inside one module H (the classifier: LoRA on `classifier` with
the head frozen at its init, or a linear probe), the logits are H(φ(x)) with φ frozen. φ(x), the
input of H, is then computed once per image and training and evaluation run H alone on it: the same
loss and gradients as the full forward, without the backbone's cost per step (a test checks the
equality with the uncached path).

Key: sha1 of (every frozen tensor outside H and the model's config, H's qualified name, each split's
content fingerprint, the image processor's settings, the data policy, the precision,
`CACHE_VERSION`). Changing any of them gives a new key, so a stale entry is never read; old disk
files are simply left behind.
Stores: `memory` keeps the last `MEMORY_ENTRIES` entries in this process (a sweep over methods and
seeds extracts once); `disk` also writes `<cache_dir>/<key>.safetensors` atomically, with the key's
parts in its metadata, and reads it back in later processes.

Same inputs as the uncached path (issue 25 #10: Full FT, which cannot use a cache, and the LoRA
arms, which do, must train under one data policy and one precision). The task's data policy
(`tasks/images.py` `data_policy`, read by tasks/vision.py) is cached only where that is exact: `task.augment=none` caches the
un-augmented train view, which is all the uncached path reads too; `task.augment_views=k` caches the
same k fixed views per image the uncached path draws from, and every use of an example picks one of
them uniformly (torch's global generator: the run seed). A fresh augmentation per use cannot be
cached: `auto` then leaves the cache off, and `memory` / `disk` are refused by the task config.

Extraction runs the full model in eval mode (dropout off), without gradients, under the run's
precision (`Vision.precision`: the bf16 autocast the runner trains under on CUDA, else fp32), on
`task.cache_device` (auto: the run's device; `on_method` runs before the runner places the model, so
the model visits that device for the extraction and goes back). The head's input comes out of the
backbone's final LayerNorm, which autocast runs in float32, so features are stored as float32 on the
CPU either way, and the head runs on them under the same autocast as in the uncached path.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from core import ConfigError, atomic_write
from tasks.base import TaskData
from tasks.images import (
    ImageDataset,
    PixelCollate,
    cacheable,
    data_policy,
    device_type,
    precision_context,
    processor_config,
)

CACHE_VERSION = 2  # 2: the data policy and the precision are in the key
MEMORY_ENTRIES = 4
_MEMORY: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()


def trainable_scope(model: nn.Module) -> str | None:
    """Qualified name of the deepest module holding every trainable parameter; None if that is the
    whole model (or nothing trains)."""
    paths = [n.split(".")[:-1] for n, p in model.named_parameters() if p.requires_grad]
    if not paths:
        return None
    common = os.path.commonprefix(paths)
    return ".".join(common) or None


def frozen_digest(model: nn.Module, scope: str) -> str:
    """sha1 over every parameter and buffer outside `scope` (names, dtypes, shapes, bytes)."""
    h = hashlib.sha1(type(model).__name__.encode())
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_json_string"):
        h.update(config.to_json_string(use_diff=False).encode())
    for name, t in model.state_dict().items():
        if name == scope or name.startswith(scope + "."):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_key(parts: dict) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


class FeatureDataset(Dataset):
    """Cached features (V, N, D) and labels (N,). A batch read (`__getitems__`) picks one of the V
    views per example at random and returns the whole batch at once (no per-example collate)."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return self.features.shape[1]

    def __getitems__(self, index: list[int]) -> dict:
        idx = torch.as_tensor(index, dtype=torch.long)
        views = self.features.shape[0]
        v = torch.randint(views, (len(idx),)) if views > 1 else torch.zeros(len(idx), dtype=torch.long)
        return {"features": self.features[v, idx], "labels": self.labels[idx]}

    def __getitem__(self, i: int) -> dict:
        batch = self.__getitems__([i])
        return {k: t[0] for k, t in batch.items()}


def collate_features(batch):
    """A batch from `FeatureDataset.__getitems__` is already collated."""
    return batch if isinstance(batch, dict) else default_collate(batch)


@torch.no_grad()
def extract(
    model: nn.Module, head: nn.Module, dataset, collate, batch_size: int, precision: str = "fp32"
) -> torch.Tensor:
    """Inputs of `head` for every example of `dataset`, (N, D) float32 on the CPU.

    Runs the whole model (eval mode) under `precision` (the run's: `Vision.precision`) and checks on
    the first batch that the logits equal head(features) under the same autocast, i.e. that the
    head's input is all the model's output depends on.
    """
    device = next(model.parameters()).device
    captured: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    was_training = model.training
    model.eval()
    out = []
    try:
        for i, batch in enumerate(DataLoader(dataset, batch_size=batch_size, collate_fn=collate)):
            captured.clear()
            with precision_context(precision, device):
                logits = model(pixel_values=batch["pixel_values"].to(device)).logits
                if len(captured) != 1:
                    raise ConfigError(
                        f"the head module runs {len(captured)} times per forward; set task.feature_cache=off"
                    )
                if i == 0 and not torch.allclose(head(captured[0]), logits, rtol=1e-4, atol=1e-5):
                    raise ConfigError(
                        "the logits are not a function of the head's input alone; set task.feature_cache=off"
                    )
            out.append(captured[0].float().cpu())
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(out)


def _load_disk(path: Path) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    return load_file(path)


def _save_disk(path: Path, tensors: dict[str, torch.Tensor], parts: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"key_parts": json.dumps(parts, sort_keys=True, default=str)}
    atomic_write(
        path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=meta)
    )


def cache_features(task, model: nn.Module, data: TaskData) -> TaskData:
    """`Vision.on_method`: swap image datasets for cached head inputs when the backbone is frozen."""
    cfg = task.cfg
    mode = cfg.feature_cache
    if mode == "off":
        task.cache_info = {"feature_cache": "off", "reason": "task.feature_cache=off"}
        return data
    if not cacheable(cfg):  # memory / disk were refused by the config already
        reason = f"task.augment={cfg.augment} draws afresh at every use (the backbone must see each draw)"
        task.cache_info = {"feature_cache": "off", "reason": reason}
        return data
    scope = trainable_scope(model)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if scope is None or (distributed and torch.distributed.get_world_size() > 1):
        reason = "parameters outside one head module train" if scope is None else "several processes (DDP)"
        if mode != "auto":
            raise ConfigError(
                f"task.feature_cache={mode} needs a frozen backbone in one process ({reason}); "
                f"use task.feature_cache=auto or off"
            )
        task.cache_info = {"feature_cache": "off", "reason": reason}
        return data
    head = model.get_submodule(scope)
    views = cfg.augment_views if cfg.augment != "none" else 0
    home = next(model.parameters()).device
    device = cfg.cache_device
    if device == "auto":  # the run's device (auto: CUDA when visible, as the runner picks)
        device = device_type(cfg.run_device) if cfg.run_device == "auto" else cfg.run_device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"task.cache_device={device} but no CUDA device is visible; use auto or cpu")
    policy = data_policy(cfg)
    parts = {
        "version": CACHE_VERSION,
        "frozen_weights": frozen_digest(model, scope),
        "head_input_of": scope,
        "data": {k: s.fingerprint for k, s in task.splits.items()},
        "preprocessing": processor_config(task.processor),
        "policy": policy,
        "precision": task.precision,
    }
    key = cache_key(parts)
    path = Path(cfg.cache_dir) / f"{key}.safetensors" if mode == "disk" else None
    tic = time.perf_counter()
    tensors, source = _MEMORY.get(key), "memory"
    if tensors is None and path is not None:
        tensors, source = _load_disk(path), "disk"
    if tensors is None:
        source = "extracted"
        model.to(device)
        collate = PixelCollate(task.processor)
        tensors = {}
        for name, split in task.splits.items():
            # the train split's k fixed views exactly as the uncached ImageDataset builds them
            sets = (
                [
                    ImageDataset(split, cfg.augment, cfg.crop_padding, views, cfg.view_seed, v)
                    for v in range(views)
                ]
                if name == "train" and views > 0
                else [ImageDataset(split)]
            )
            stack = [extract(model, head, s, collate, cfg.cache_batch_size, task.precision) for s in sets]
            tensors[name] = torch.stack(stack)
            tensors[f"{name}.labels"] = torch.tensor(split.labels)
        model.to(home)
    if path is not None and not path.is_file():
        _save_disk(path, tensors, parts)
    _MEMORY[key] = tensors
    _MEMORY.move_to_end(key)
    while len(_MEMORY) > MEMORY_ENTRIES:
        _MEMORY.popitem(last=False)
    task.head_module = head
    task.cache_info = {
        "feature_cache": mode if mode != "auto" else "memory",
        "key": key,
        "source": source,
        "seconds": time.perf_counter() - tic,
        "device": device if source == "extracted" else None,
        "head_input_of": scope,
        "feature_dim": int(tensors["train"].shape[-1]),
        "train_views_cached": int(tensors["train"].shape[0]),
        "precision": task.precision,  # the autocast the features were extracted under (the run's)
        "dropout": "backbone features computed in eval mode (dropout off)",
        "path": str(path) if path else None,
    }
    sets = {name: FeatureDataset(tensors[name], tensors[f"{name}.labels"]) for name in task.splits}
    train = sets.pop("train")
    return TaskData(train, sets, collate_features)
