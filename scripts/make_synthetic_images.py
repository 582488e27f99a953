"""Synthetic image-classification data in the two on-disk layouts `tasks/vision.py` reads.

Class c of n has its own hue (c/n of the colour wheel) and one of four patterns (c mod 4: horizontal
stripes, vertical stripes, checkerboard, centred disc) drawn with a random phase / period / radius,
brightness jitter and pixel noise, so classes differ in both colour statistics and texture: a linear
probe on random ViT features separates them (tests rely on it), but no two images are equal.

    python scripts/make_synthetic_images.py OUT --layout cifar   # OUT/cifar-100-python/{train,test,meta}
    python scripts/make_synthetic_images.py OUT --layout folder  # OUT/{train,test}/<class>/<i>.png

Then: `python run.py task=cifar100 model=tiny_vit task.data_dir=OUT`.
"""

from __future__ import annotations

import argparse
import colorsys
import pickle
from pathlib import Path

import numpy as np


def class_names(n_classes: int) -> list[str]:
    kinds = ("hstripes", "vstripes", "checker", "disc")
    return [f"c{c:02d}_{kinds[c % 4]}" for c in range(n_classes)]


def draw(c: int, n_classes: int, rng: np.random.Generator, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    """One (H, W, 3) uint8 image of class `c`."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(5.0, 9.0) * min(h, w) / 32
    phase = rng.uniform(0, 2 * np.pi)
    kind = c % 4
    if kind == 0:
        mask = np.sin(2 * np.pi * yy / period + phase) > 0
    elif kind == 1:
        mask = np.sin(2 * np.pi * xx / period + phase) > 0
    elif kind == 2:
        mask = (np.sin(2 * np.pi * yy / period + phase) > 0) ^ (np.sin(2 * np.pi * xx / period + phase) > 0)
    else:
        r = rng.uniform(0.25, 0.4) * min(h, w)
        cy, cx = h / 2 + rng.uniform(-2, 2), w / 2 + rng.uniform(-2, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    hue = (c / n_classes + rng.uniform(-0.02, 0.02)) % 1.0
    fg = np.array(colorsys.hsv_to_rgb(hue, 0.9, rng.uniform(0.75, 1.0)), dtype=np.float32) * 255
    bg = np.array(colorsys.hsv_to_rgb(hue, 0.4, rng.uniform(0.15, 0.35)), dtype=np.float32) * 255
    img = np.where(mask[..., None], fg, bg) + rng.normal(0, 12, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_split(n_per_class: int, n_classes: int, seed: int, size=(32, 32)) -> tuple[np.ndarray, list[int]]:
    """Images (N, H, W, 3) and labels, classes interleaved (0, 1, ..., n-1, 0, 1, ...)."""
    rng = np.random.default_rng(seed)
    labels = [c for _ in range(n_per_class) for c in range(n_classes)]
    return np.stack([draw(c, n_classes, rng, size) for c in labels]), labels


def write_cifar(root: Path, n_classes: int = 10, n_train: int = 24, n_test: int = 12, seed: int = 0) -> Path:
    """CIFAR-100's python-pickle layout (`root/cifar-100-python/{train,test,meta}`), 32×32 images.

    Same keys and encodings as the official files: bytes keys, `data` (N, 3072) uint8 in channel-major
    order (1024 red, 1024 green, 1024 blue values, rows top to bottom), `fine_labels`, `coarse_labels`.
    """
    out = Path(root) / "cifar-100-python"
    out.mkdir(parents=True, exist_ok=True)
    for split, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        images, labels = make_split(n, n_classes, s)
        data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # (N, 3·32·32), channel-major
        blob = {
            b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(labels))],
            b"batch_label": f"{split} batch".encode(),
            b"fine_labels": labels,
            b"coarse_labels": [c // 2 for c in labels],
            b"data": data,
        }
        (out / split).write_bytes(pickle.dumps(blob, protocol=2))
    meta = {
        b"fine_label_names": [n.encode() for n in class_names(n_classes)],
        b"coarse_label_names": [f"group{g}".encode() for g in range((n_classes + 1) // 2)],
    }
    (out / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return Path(root)


def write_folder(
    root: Path,
    n_classes: int = 10,
    n_train: int = 24,
    n_test: int = 12,
    seed: int = 0,
    sizes=((32, 32), (40, 48)),
) -> Path:
    """Image-folder layout `root/<split>/<class name>/<i>.png`; image sizes cycle through `sizes`."""
    from PIL import Image

    for split, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        rng = np.random.default_rng(s)
        names = class_names(n_classes)
        for i in range(n):
            for c in range(n_classes):
                folder = Path(root) / split / names[c]
                folder.mkdir(parents=True, exist_ok=True)
                img = draw(c, n_classes, rng, sizes[(i + c) % len(sizes)])
                Image.fromarray(img).save(folder / f"{i:04d}.png")
    return Path(root)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--layout", choices=["cifar", "folder"], default="cifar")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--train-per-class", type=int, default=100)
    p.add_argument("--test-per-class", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    write = write_cifar if a.layout == "cifar" else write_folder
    write(a.out, a.classes, a.train_per_class, a.test_per_class, a.seed)
    print(f"wrote {a.layout} layout to {a.out}")


if __name__ == "__main__":
    main()
