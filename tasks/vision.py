"""Image classification: CIFAR-100 and Food-101 with ViT-B/16 (RM-LoRA Figures 1–2, Table 5).

Data (`task.data_dir` null: `datasets.load_dataset(task.hub_id)`, columns `task.image_column`,
`task.label_column`); with `task.data_dir`, `task.layout` (auto by default) reads:
- `cifar`: the CIFAR-100 python-pickle release, `cifar-100-python/{train,test,meta}` (data_dir is that
  folder or holds it): `data` (N, 3072) uint8, channel-major 3×32×32; `fine_labels` (or
  `label_column=coarse_label`); class names from `meta`. The pickles are read with an unpickler that
  only admits the numpy array types, so a tampered file cannot run code.
- `folder`: `<data_dir>/<split>/<class name>/<image>` (any format PIL opens); class index = rank of
  the name among the train split's sorted class folders. Food-101's own release (`images/<class>/
  <id>.jpg` with `meta/{train,test}.txt`, `meta/classes.txt`) is recognised too.
Splits accept slices (`test[:1000]`); `max_*_samples` keep a random subset drawn from `sample_seed`.

Preprocessing: the model's image processor from transformers (PIL backend; no torchvision): resize to
its size (224 for ViT-B/16), rescale to [0, 1], normalise with its mean / std. Evaluation images are
never augmented. Loss: cross-entropy; metric: accuracy.

Data policy and precision, one per run and the same for every method (issue 25 #10: Full FT and the
LoRA arms of one figure must see the same training inputs). Both are functions of the task config
alone (`data_policy`, `run_precision`), never of the method or of whether the feature cache is used:
- `augment` (train images): `none` (default); `flip` (horizontal flip, p = 1/2); `crop_flip`
  (reflect-pad by `crop_padding` of the side, random crop back: a shift of up to 4 px at 32 px, then
  the flip). `augment_views=0`: a fresh draw at every use; `augment_views=k`: k fixed augmented views
  per image (view v of image i drawn from a seed of (`view_seed`, v, i)), one picked uniformly at
  every use. The uncached path (Full FT) and the cache build the same view v of image i.
- precision: the autocast the runner trains under (runners/train.py: bf16 autocast on CUDA when
  `train.bf16` is auto/true, else fp32), read from `run_device` / `run_bf16`, which the task YAML
  fills from `device` / `train.bf16`. Cached features are extracted under it, and `forward` refuses
  a batch of cached features when the active autocast differs.

Frozen backbone: when every trainable parameter lies inside one module (the classifier, e.g. LoRA on
`classifier` with the head frozen), `on_method` caches that module's inputs once
(`tasks/feature_cache.py`; what both read of the images is in `tasks/images.py`) and training / evaluation run the head alone on them. Only a policy whose
inputs can be cached exactly uses it: `augment=none`, or `augment_views=k`; a fresh augmentation at
every use (`augment_views=0` with `augment` on) needs the backbone at every step, so the cache is
off (auto) or refused (memory / disk).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core import ConfigError
from tasks.base import DataError, Task, TaskData
from tasks.feature_cache import cache_features

# augment_image, precision_context, processor_config, view_generator: used by the feature cache and no
# longer here, still importable from here (their home until tasks/images.py)
from tasks.images import (  # noqa: F401
    ImageDataset,
    PixelCollate,
    Split,
    active_precision,
    augment_image,
    cacheable,
    data_policy,
    device_type,
    digest,
    precision_context,
    processor_config,
    run_precision,
    view_generator,
)

SPLIT = re.compile(r"^(\w+)(?:\[(\d*):(\d*)\])?$")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
AUGMENTS = ("none", "flip", "crop_flip")
LAYOUTS = ("auto", "cifar", "folder")
CACHE_MODES = ("auto", "memory", "disk", "off")


@dataclass
class Config:
    name: str = "vision"
    dataset: str = "cifar100"  # how records name the task
    hub_id: str | None = "uoft-cs/cifar100"
    hub_config: str | None = None
    image_column: str = "img"
    label_column: str = "fine_label"
    data_dir: str | None = None  # local copy; null: datasets.load_dataset(hub_id)
    layout: str = "auto"  # auto | cifar | folder
    train_split: str = "train"
    eval_splits: list[str] = field(default_factory=lambda: ["test"])
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    sample_seed: int = 0  # which random subset max_*_samples keep
    augment: str = "none"  # none | flip | crop_flip (train only; every method alike)
    crop_padding: float = 0.125  # crop_flip: max shift as a fraction of the shorter side
    augment_views: int = 0  # augment on: 0 = a fresh draw per use; k = k fixed views per image, one per use
    view_seed: int = 0  # draws the k fixed views (fixed across run seeds, like the data)
    feature_cache: str = "auto"  # auto (frozen backbone, cacheable policy: memory) | memory | disk | off
    cache_dir: str | None = None  # disk cache folder (feature_cache=disk)
    cache_batch_size: int = 128  # images per forward pass while extracting features
    cache_device: str = "auto"  # where features are extracted: auto (the run's device) | cpu | cuda[:N]
    # mirrors of the run's `device` and `train.bf16` (the task YAML interpolates them; do not set):
    # they decide the precision of every path, cached or not (`run_precision`)
    run_device: str = "auto"
    run_bf16: bool | str = "auto"

    def __post_init__(self):
        for key, value, valid in (
            ("augment", self.augment, AUGMENTS),
            ("layout", self.layout, LAYOUTS),
            ("feature_cache", self.feature_cache, CACHE_MODES),
        ):
            if value not in valid:
                raise ConfigError(f"unknown task.{key} {value!r}; valid: {', '.join(valid)}")
        for split in [self.train_split, *self.eval_splits]:
            if not SPLIT.match(split):
                raise ConfigError(f"bad split {split!r}; use a name with an optional slice, e.g. test[:1000]")
        if not 0.0 <= self.crop_padding < 0.5:
            raise ConfigError(f"task.crop_padding must be in [0, 0.5), got {self.crop_padding}")
        if self.augment_views < 0 or self.cache_batch_size < 1:
            raise ConfigError("task.augment_views must be >= 0 and task.cache_batch_size >= 1")
        if self.augment == "none" and self.augment_views:
            raise ConfigError(
                f"task.augment_views={self.augment_views} needs an augmentation; "
                f"set task.augment=flip or crop_flip"
            )
        if self.feature_cache in ("memory", "disk") and not cacheable(self):
            raise ConfigError(
                f"task.feature_cache={self.feature_cache} cannot hold a fresh augmentation per use "
                f"(task.augment={self.augment}, task.augment_views=0), which every method must see; "
                f"use task.augment=none, task.augment_views=k (k fixed views) or task.feature_cache=auto"
            )
        for key, value in (("cache_device", self.cache_device), ("run_device", self.run_device)):
            if not re.match(r"^(auto|cpu|cuda(:\d+)?)$", value):
                raise ConfigError(f"task.{key} must be auto, cpu, cuda or cuda:N, got {value!r}")
        if self.run_bf16 not in ("auto", True, False):
            raise ConfigError(
                f"task.run_bf16 (= train.bf16) must be auto, true or false, got {self.run_bf16!r}"
            )
        if self.cache_device != "auto" and self.cache_device.split(":")[0] != device_type(self.run_device):
            raise ConfigError(
                f"task.cache_device={self.cache_device} differs from the run's device ({self.run_device}): "
                f"features would be computed in other arithmetic than the uncached path; "
                f"use task.cache_device=auto"
            )
        if self.feature_cache == "disk" and not self.cache_dir:
            raise ConfigError("task.feature_cache=disk needs task.cache_dir (a folder for the feature files)")
        if not self.data_dir and not self.hub_id:
            raise ConfigError("set task.data_dir to a local copy or task.hub_id to a datasets hub id")


# ---------------------------------------------------------------------------------------------- data


def to_rgb_array(image) -> np.ndarray:
    """PIL image or array (grey, RGB, RGBA) -> (H, W, 3) uint8."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    return np.ascontiguousarray(a[..., :3].astype(np.uint8))


class _NumpyOnly(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only (the CIFAR release's content)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR file")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        blob = _NumpyOnly(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DataError(f"{path}: not a CIFAR python-pickle file ({e}); check task.data_dir") from e
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in blob.items()}


def _cifar_root(data_dir: Path) -> Path | None:
    for root in (data_dir, data_dir / "cifar-100-python"):
        if (root / "meta").is_file() and (root / "train").is_file():
            return root
    return None


def read_cifar(data_dir: Path, split: str, label_column: str) -> tuple[Split, list[str]]:
    """A split of the CIFAR-100 python release; returns it and the class names."""
    root = _cifar_root(data_dir)
    if root is None:
        raise DataError(
            f"no CIFAR-100 python files (meta, train, test) in {data_dir} or its cifar-100-python/"
        )
    path = root / split
    if not path.is_file():
        raise DataError(f"CIFAR-100 has no split file {path}; valid splits: train, test")
    blob, meta = _unpickle(path), _unpickle(root / "meta")
    kind = label_column.removesuffix("_label")  # fine | coarse
    if f"{kind}_labels" not in blob:
        raise DataError(f"{path} has no {kind}_labels; set task.label_column to fine_label or coarse_label")
    data = np.asarray(blob["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: data has shape {data.shape}, expected (N, 3072) for 32×32 RGB images")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
    labels = [int(y) for y in blob[f"{kind}_labels"]]
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[f"{kind}_label_names"]]
    fingerprint = digest(["cifar", hashlib.sha1(data.tobytes()).hexdigest(), labels])
    return Split(labels, lambda i: np.ascontiguousarray(images[i]), fingerprint), names


def _load_file(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return to_rgb_array(im)
    except (OSError, SyntaxError, ValueError) as e:  # a fault `check_images` could not see cheaply
        raise DataError(f"{path}: cannot decode image ({e}); replace or remove the file") from None


PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the empty IEND chunk every complete PNG ends with


def image_fault(path: Path) -> str | None:
    """Why `path` cannot be decoded, or None. PNG and JPEG files whose first and last bytes are those
    of a complete file (signature + IEND chunk; SOI + EOI marker) pass without decoding (a truncated
    file lacks the end); any other file is decoded in full. Corruption inside an intact-looking file
    is caught when it is read (`_load_file` names it)."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = f.seek(0, 2)
            f.seek(max(0, size - 16))
            tail = f.read()
    except OSError as e:
        return e.strerror or str(e)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and tail.endswith(PNG_END):
        return None
    if head.startswith(b"\xff\xd8") and tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        return None
    try:
        with Image.open(path) as im:
            im.load()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        return str(e) or type(e).__name__
    return None


def check_images(files: list[Path], where: str) -> None:
    """Refuses a split with any image that cannot be decoded, naming the first few (before training:
    otherwise the first bad file stops the run mid-epoch)."""
    bad = [(p, why) for p in files if (why := image_fault(p)) is not None]
    if bad:
        named = "; ".join(f"{p} ({why})" for p, why in bad[:3]) + ("; ..." if len(bad) > 3 else "")
        raise DataError(
            f"{len(bad)} of {len(files)} images of {where} cannot be decoded: {named}; replace or remove them"
        )


def _files_split(files: list[Path], labels: list[int], tag: str) -> Split:
    stats = []
    for p in files:
        try:
            st = p.stat()
        except OSError as e:
            raise DataError(
                f"{p}: {e.strerror or e}; the split lists it: restore it or remove its entry"
            ) from None
        stats.append((str(p), st.st_size, st.st_mtime_ns))
    return Split(labels, lambda i: _load_file(files[i]), digest([tag, stats, labels]), files)


def read_folder(data_dir: Path, split: str, classes: list[str] | None) -> tuple[Split, list[str]]:
    """`<data_dir>/<split>/<class>/<image>` (or Food-101's images/ + meta/<split>.txt)."""
    meta = data_dir / "meta" / f"{split}.txt"
    if meta.is_file() and (data_dir / "images").is_dir():  # the Food-101 release
        names = (data_dir / "meta" / "classes.txt").read_text().split()
        rows = meta.read_text().split()
        by_name = {n: i for i, n in enumerate(names)}
        unknown = next((i for i, r in enumerate(rows) if r.split("/")[0] not in by_name), None)
        if unknown is not None:
            raise DataError(
                f"{meta}: entry {unknown + 1} ({rows[unknown]!r}) names a class not in meta/classes.txt"
            )
        files = [data_dir / "images" / f"{r}.jpg" for r in rows]
        return _files_split(files, [by_name[r.split("/")[0]] for r in rows], "food101"), names
    folder = data_dir / split
    if not folder.is_dir():
        found = sorted(p.name for p in data_dir.iterdir() if p.is_dir()) if data_dir.is_dir() else []
        raise DataError(
            f"no split folder {folder}; the image-folder layout is <data_dir>/<split>/<class>/<image> "
            f"(folders here: {', '.join(found) or 'none'})"
        )
    here = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if classes is None:  # the train split defines the classes: an empty folder would be one no image trains
        empty = [
            n for n in here if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in (folder / n).iterdir())
        ]
        if empty:
            raise DataError(
                f"{folder / empty[0]}: class folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}), "
                f"so it would add a class that nothing trains; add its images or remove the folder"
                + (f" ({len(empty)} such folders)" if len(empty) > 1 else "")
            )
    classes = classes or here
    unknown = sorted(set(here) - set(classes))
    if unknown:
        raise DataError(f"{folder} has class folder {unknown[0]!r} that the train split lacks")
    files, labels = [], []
    for c, name in enumerate(classes):
        for p in sorted((folder / name).iterdir()) if (folder / name).is_dir() else []:
            if p.suffix.lower() in IMAGE_SUFFIXES:
                files.append(p)
                labels.append(c)
    if not files:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}/<class>/")
    return _files_split(files, labels, "folder"), classes


def read_hub(cfg: Config, split: str) -> tuple[Split, list[str]]:
    import datasets  # heavy, only when used

    try:
        ds = datasets.load_dataset(cfg.hub_id, cfg.hub_config, split=split)
    except Exception as e:  # offline machines land here
        raise DataError(
            f"could not load {cfg.hub_id} {split} from the Hub ({type(e).__name__}); "
            f"set task.data_dir to a local copy (CIFAR python files or an image folder)"
        ) from e
    for col in (cfg.image_column, cfg.label_column):
        if col not in ds.column_names:
            raise DataError(f"{cfg.hub_id} has no column {col!r} (columns: {', '.join(ds.column_names)})")
    feature = ds.features[cfg.label_column]
    names = list(feature.names) if hasattr(feature, "names") else sorted(set(ds[cfg.label_column]))
    labels = [int(y) for y in ds[cfg.label_column]]
    column = cfg.image_column
    return Split(labels, lambda i: to_rgb_array(ds[i][column]), digest(["hub", ds._fingerprint])), names


def resolve_layout(cfg: Config) -> str:
    if cfg.layout != "auto":
        return cfg.layout
    return "cifar" if _cifar_root(Path(cfg.data_dir)) is not None else "folder"


def load_splits(cfg: Config) -> tuple[dict[str, Split], list[str]]:
    """{"train": ..., eval split: ...} and the class names (train split's)."""
    out, classes = {}, None
    layout = resolve_layout(cfg) if cfg.data_dir else "hub"
    for key, spec, limit in [("train", cfg.train_split, cfg.max_train_samples)] + [
        (s, s, cfg.max_eval_samples) for s in cfg.eval_splits
    ]:
        name, lo, hi = SPLIT.match(spec).groups()
        if layout == "hub":
            split, names = read_hub(cfg, spec)
        elif layout == "cifar":
            split, names = read_cifar(Path(cfg.data_dir), name, cfg.label_column)
        else:
            split, names = read_folder(Path(cfg.data_dir), name, classes)
        if layout != "hub":
            part = range(len(split))[slice(int(lo) if lo else None, int(hi) if hi else None)]
            split = split.select(list(part)) if len(part) != len(split) else split
        if limit is not None and limit < len(split):
            g = torch.Generator().manual_seed(cfg.sample_seed)
            split = split.select(sorted(torch.randperm(len(split), generator=g)[:limit].tolist()))
        if len(split) == 0:
            raise DataError(f"split {spec!r} of {cfg.data_dir or cfg.hub_id} is empty")
        if split.files is not None:  # only the images this run reads (a slice checks its slice)
            check_images(split.files, f"split {spec!r} of {cfg.data_dir}")
        classes = classes or names
        out[key] = split
    return out, classes


# ---------------------------------------------------------------------------------------------- task


class Vision(Task):
    name, main_metric, higher_is_better = "vision", "acc", True
    version = 1

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        if cfg.data_dir and not Path(cfg.data_dir).is_dir():
            raise DataError(f"task.data_dir {cfg.data_dir} is not a folder; point it at a local copy")
        self.splits, self.classes = load_splits(cfg)  # now: a missing file fails before models
        self.head_module: nn.Module | None = None  # set by on_method when features are cached
        self.cache_info: dict = {"feature_cache": "off"}
        self.precision = run_precision(cfg)  # every path of this run: the cache extracts under it

    @classmethod
    def label(cls, cfg) -> str:
        return cfg.dataset

    @property
    def head(self) -> dict:
        return {
            "type": "image_classification",
            "num_labels": len(self.classes),
            "id2label": dict(enumerate(self.classes)),
            "label2id": {n: i for i, n in enumerate(self.classes)},
        }

    def build(self, model: nn.Module, processor) -> TaskData:
        if processor is None or not callable(processor):
            raise ConfigError(
                "vision tasks need an image processor; use a vision model (model=tiny_vit, vit_b16)"
            )
        self.processor = processor
        c = self.cfg
        train = ImageDataset(self.splits["train"], c.augment, c.crop_padding, c.augment_views, c.view_seed)
        evals = {k: ImageDataset(v) for k, v in self.splits.items() if k != "train"}
        return TaskData(train, evals, PixelCollate(processor))

    def info(self) -> dict:
        """What training saw: the data policy and precision (the same whether or not the features
        were cached, so the same for every method of the run) and the cache's facts."""
        return {
            **data_policy(self.cfg),
            "precision": self.precision,
            "feature_cache": self.cache_info,
            "classes": len(self.classes),
        }

    def on_method(self, model: nn.Module, method, data: TaskData) -> TaskData:
        return cache_features(self, model, data)

    def forward(self, model, batch):
        labels = batch["labels"]
        if "features" in batch:  # cached backbone output: run the (adapted) head alone
            features = batch["features"]
            if active_precision(features) != self.cache_info["precision"]:  # cheap; the guard of #10
                raise ConfigError(
                    f"features were cached under {self.cache_info['precision']} but this forward runs "
                    f"under {active_precision(features)}; task.run_device / task.run_bf16 must mirror "
                    f"device / train.bf16 (leave them to the task YAML)"
                )
            logits = self.head_module(features)
        else:
            logits = model(pixel_values=batch["pixel_values"]).logits
        loss = F.cross_entropy(logits.float(), labels)
        return loss, logits.detach().argmax(-1), labels

    def metrics(self, preds, labels):
        return {"acc": float((preds == labels).float().mean())}


TASK = Vision
