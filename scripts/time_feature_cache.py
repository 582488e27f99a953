"""Time head-only training per epoch with and without the frozen-backbone feature cache.

Both modes run the real runner (`runners.train.run`) on generated CIFAR-layout images
(scripts/make_synthetic_images.py), classifier-placement RM-LoRA, and read `timing.epoch_s`
(wall seconds of each epoch's training + evaluation) from the records.

    # the issue's check (CPU is fine): 60 epochs on tiny_vit, cached vs uncached, same data and seed
    python scripts/time_feature_cache.py compare --epochs 60
    # the same with a random-weight ViT-B/16 (86M, 224 px): the uncached epoch is timed over 2 epochs
    python scripts/time_feature_cache.py compare --backbone vit_b16 --n-train 128 --n-test 32 --uncached-epochs 2
    # CIFAR-100-sized cached epoch: 50k train / 10k test images, 768-d features, 100 classes, R = 32
    # (a random 1-layer ViT of width 768 supplies the features: random weights are fine for timing)
    python scripts/time_feature_cache.py features --device cuda

Prints one JSON object (and writes it to --out when given).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from scripts.make_synthetic_images import write_cifar  # noqa: E402


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from runners.config import CONF, register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def timed_run(*overrides: str) -> dict:
    from runners.train import run

    tic = time.perf_counter()
    rec = run(compose(*overrides, "force=true", "train.checkpoint=false"))
    epochs = rec["timing"]["epoch_s"]
    return {
        "epoch_s_mean": statistics.fmean(epochs),
        "epoch_s_median": statistics.median(epochs),
        "epochs": len(epochs),
        "run_wall_s": rec["timing"]["wall_s"],
        "process_wall_s": time.perf_counter() - tic,
        "amortised_epoch_s": rec["timing"]["wall_s"] / len(epochs),
        "final_test_acc": rec["metrics"]["final"]["test"]["acc"],
        "feature_cache": rec["task_info"]["feature_cache"],
        "device": rec["env"]["device"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["compare", "features"])
    p.add_argument("--epochs", type=int, default=None, help="compare: 60; features: 3")
    p.add_argument("--classes", type=int, default=None, help="compare: 10; features: 100")
    p.add_argument("--n-train", type=int, default=None, help="compare: 1000; features: 50000")
    p.add_argument("--n-test", type=int, default=None, help="compare: 200; features: 10000")
    p.add_argument("--dim", type=int, default=768, help="features: feature width (ViT-B/16: 768)")
    p.add_argument("--rank", type=int, default=None, help="compare: 8; features: 32 (Table 5)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--backbone", choices=["tiny_vit", "vit_b16"], default="tiny_vit", help="compare: the model"
    )
    p.add_argument("--uncached-epochs", type=int, default=None, help="compare: epochs of the uncached run")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--work", type=Path, default=None, help="folder for data and records (default: a temp dir)"
    )
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    big = a.mode == "features"
    epochs = a.epochs or (3 if big else 60)
    classes = a.classes or (100 if big else 10)
    n_train, n_test = a.n_train or (50000 if big else 1000), a.n_test or (10000 if big else 200)
    rank = a.rank or (32 if big else 8)
    work = a.work or Path(tempfile.mkdtemp(prefix="time_feature_cache_"))
    data = work / f"cifar_{classes}x{n_train}x{n_test}"
    tic = time.perf_counter()
    if not (data / "cifar-100-python" / "meta").is_file():
        write_cifar(data, classes, n_train // classes, n_test // classes, seed=0)
    gen_s = time.perf_counter() - tic
    model = ["model=tiny_vit"]
    if a.backbone == "vit_b16":  # ViT-B/16's architecture and 224-px processor, random weights (offline)
        model = ["model=vit_b16", "model.random_init=true", "+model.model_type=vit"]
    common = [
        "task=cifar100",
        *model,
        "method=rm_lora",
        f"method.rank={rank}",
        f"task.data_dir={data}",
        f"train.batch_size={a.batch_size}",
        "train.eval_batch_size=1024",
        f"device={a.device}",
        f"paths.results_dir={work / 'results'}",
    ]
    if big:  # a 1-layer ViT of width dim on 16×16 images (one patch): features of ViT-B/16's width
        heads = 12 if a.dim % 12 == 0 else 1
        common += [
            f"model.config.hidden_size={a.dim}",
            "model.config.num_hidden_layers=1",
            f"model.config.num_attention_heads={heads}",
            f"model.config.intermediate_size={a.dim}",
            "model.config.image_size=16",
            "model.config.patch_size=16",
            "task.cache_batch_size=1024",
        ]
    result = {
        "mode": a.mode,
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "data": {"classes": classes, "train": n_train, "test": n_test, "generate_s": gen_s},
        "method": f"rm_lora R={rank}, classifier placement, batch {a.batch_size}",
        "backbone": "1-layer random ViT, width dim" if big else a.backbone,
        "threads": torch.get_num_threads(),
        "cached": timed_run(*common, f"train.epochs={epochs}"),
    }
    if not big:
        result["uncached"] = timed_run(
            *common, f"train.epochs={a.uncached_epochs or epochs}", "task.feature_cache=off"
        )
        c, u = result["cached"], result["uncached"]
        result["speedup_per_epoch"] = u["epoch_s_mean"] / c["epoch_s_mean"]
        result["speedup_amortised"] = u["amortised_epoch_s"] / c["amortised_epoch_s"]
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
