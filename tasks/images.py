"""Images as both the vision task and its feature cache see them (tasks/vision.py, tasks/feature_cache.py).

Here so that the two build the same inputs without importing each other: a split of images (`Split`),
how a read image is augmented and turned into pixels (`ImageDataset`, `PixelCollate`; `processor_config`
names the preprocessing in the cache key), and the run's data policy and precision, which every path
must follow alike, cached or not (issue 25 #10; tasks/vision.py's docstring says what they are).
The functions that take `cfg` read a vision task config (tasks/vision.py `Config`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# ------------------------------------------------------------------------------- policy and precision


def cacheable(cfg) -> bool:
    """Whether the train inputs of this policy can be cached exactly: no augmentation, or k fixed views."""
    return cfg.augment == "none" or cfg.augment_views > 0


def device_type(device: str) -> str:
    """`cpu` | `cuda` for a `device` setting; auto = CUDA when visible, as runners/train.py `_device`."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device.split(":")[0]


def run_precision(cfg) -> str:
    """The precision every path of this run computes in, named as the record's env.precision:
    runners/train.py trains under bf16 autocast on CUDA when train.bf16 is auto or true, else fp32."""
    bf16 = device_type(cfg.run_device) == "cuda" and cfg.run_bf16 in ("auto", True)
    return "bf16 autocast" if bf16 else "fp32"


def active_precision(t: torch.Tensor) -> str:
    """The autocast in force for tensors on `t`'s device, in `run_precision`'s names."""
    kind = t.device.type
    on = torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) == torch.bfloat16
    return "bf16 autocast" if on else "fp32"


def precision_context(precision: str, device: torch.device):
    """The autocast the runner's Accelerator applies for `precision` (for the feature extraction)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16 autocast")


def data_policy(cfg) -> dict:
    """What the training inputs are: the same for every method of a run (it reads only the config)."""
    if cfg.augment == "none":
        train = "none"
    elif cfg.augment_views == 0:
        train = f"{cfg.augment} (a fresh draw at every use)"
    else:
        train = f"{cfg.augment} ({cfg.augment_views} fixed views per image, one drawn at every use)"
    policy = {"train_augmentation": train, "eval_augmentation": "none"}
    if cfg.augment != "none":
        policy.update(augment=cfg.augment, crop_padding=cfg.crop_padding, augment_views=cfg.augment_views)
        if cfg.augment_views:
            policy["view_seed"] = cfg.view_seed
    return policy


# ---------------------------------------------------------------------------------------------- data


@dataclass
class Split:
    """One split of images: `load(i)` gives an (H, W, 3) uint8 array; `fingerprint` names the content;
    `files`: the image file of each example (image-file layouts), checked before training."""

    labels: list[int]
    load: Callable[[int], np.ndarray]
    fingerprint: str
    files: list[Path] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, index: list[int]) -> Split:
        parent = self.load
        fingerprint = digest([self.fingerprint, index])
        files = [self.files[i] for i in index] if self.files is not None else None
        return Split([self.labels[i] for i in index], lambda i: parent(index[i]), fingerprint, files)


def digest(obj) -> str:
    """16 hex characters of the sha1 of `obj` as sorted-key JSON: names a split's content."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------- preprocessing


def augment_image(img: np.ndarray, kind: str, padding: float, generator: torch.Generator | None = None):
    """Random shift (reflect-pad, crop back) and horizontal flip of an (H, W, 3) uint8 image."""
    if kind == "none":
        return img
    if kind == "crop_flip":
        h, w = img.shape[:2]
        p = round(padding * min(h, w))
        if p > 0:
            padded = np.pad(img, ((p, p), (p, p), (0, 0)), mode="reflect")
            dy, dx = torch.randint(0, 2 * p + 1, (2,), generator=generator).tolist()
            img = padded[dy : dy + h, dx : dx + w]
    if torch.rand((), generator=generator) < 0.5:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


def view_generator(view_seed: int, view: int, index: int) -> torch.Generator:
    """The generator that draws fixed view `view` of image `index` (the cache and the uncached path
    both use it, so they build the same view)."""
    hexdigest = hashlib.sha1(f"{view_seed}:{view}:{index}".encode()).hexdigest()
    return torch.Generator().manual_seed(int(hexdigest[:15], 16))


class ImageDataset(torch.utils.data.Dataset):
    """Examples {"image": (H, W, 3) uint8, "labels": int}; train images augmented on every read.

    `views=0`: each read draws a fresh augmentation from torch's global generator (seeded by the run
    seed; DataLoader workers get their own seeds from it). `views=k`: each read picks one of k fixed
    views uniformly (global generator), view v of image i drawn by `view_generator`; `view=v` always
    reads view v (the cache extracts them so).
    """

    def __init__(
        self,
        split: Split,
        augment: str = "none",
        padding: float = 0.0,
        views: int = 0,
        view_seed: int = 0,
        view: int | None = None,
    ):
        self.split, self.augment, self.padding = split, augment, padding
        self.views, self.view_seed, self.view = views, view_seed, view

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict:
        generator = None
        if self.augment != "none" and self.views:
            v = self.view if self.view is not None else int(torch.randint(self.views, ()))
            generator = view_generator(self.view_seed, v, i)
        img = augment_image(self.split.load(i), self.augment, self.padding, generator)
        return {"image": img, "labels": self.split.labels[i]}


class PixelCollate:
    """A batch of images -> {"pixel_values": (B, 3, S, S) float32, "labels": (B,)} via the processor."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, batch: list[dict]) -> dict:
        pixels = self.processor(images=[b["image"] for b in batch], return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels, "labels": torch.tensor([b["labels"] for b in batch])}


def processor_config(processor) -> dict:
    """What the processor does to an image (part of the feature-cache key)."""
    d = processor.to_dict() if hasattr(processor, "to_dict") else {}
    return {"class": type(processor).__name__, **{k: v for k, v in d.items() if not k.startswith("_")}}
