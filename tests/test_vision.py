"""Vision task: readers, preprocessing, ViT building and placement, the feature cache, end to end."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image

from adapters import METHODS
from adapters.lowrank import LowRankLinear, lowrank_diagnostics, spectrum
from core import ConfigError
from models import hf
from runners.config import CONF, TRAIN_KEYS, heads_for, lookup, typed
from runners.train import run
from scripts.make_synthetic_images import class_names, make_split, write_cifar, write_folder
from tasks import feature_cache as fc
from tasks import images, vision
from tasks.base import DataError

N_CLASSES = 10
# small data, batch and many steps: the tiny ViT learns the synthetic classes in a few seconds
FAST = ("train.batch_size=16", "train.lr=1e-2", "train.checkpoint=false")


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    return write_cifar(tmp_path_factory.mktemp("cifar"), N_CLASSES, n_train=24, n_test=12, seed=0)


@pytest.fixture(scope="module")
def folder_dir(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("folder"), N_CLASSES, n_train=12, n_test=6, seed=0)


@pytest.fixture(autouse=True)
def _empty_memory_cache():
    fc._MEMORY.clear()
    yield
    fc._MEMORY.clear()


def task_cfg(cfg):
    return typed(vision.Config, cfg.task, "task", drop=TRAIN_KEYS)


def built(cfg_factory, *overrides, base=("task=cifar100", "model=tiny_vit")):
    """Task, processor, model, method, data as the runner builds them (before on_method); on the CPU
    (device=cpu: the run's precision is fp32 wherever the test runs)."""
    cfg = cfg_factory(*base, "device=cpu", *overrides)
    task = vision.TASK(task_cfg(cfg))
    processor = hf.build_tokenizer(cfg.model, [])
    model = hf.build_model(cfg.model, task.head, processor)
    data = task.build(model, processor)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    method_mod = lookup(METHODS, cfg.method.name, "method")
    method_cfg = typed(method_mod.Config, cfg.method, "method")
    method = method_mod.apply(
        model,
        method_cfg,
        model_cfg["target_modules"],
        heads_for(model_cfg, task.head),
        torch.Generator().manual_seed(0),
    )
    return task, processor, model, method, data


# ------------------------------------------------------------------------------------------ readers


def test_cifar_pickle_layout_reads_back_the_generated_images(cifar_dir):
    images, labels = make_split(12, N_CLASSES, seed=1)  # the generator's test split
    split, names = vision.read_cifar(cifar_dir, "test", "fine_label")
    assert names == class_names(N_CLASSES) and split.labels == labels
    assert all(np.array_equal(split.load(i), images[i]) for i in (0, 7, len(labels) - 1))
    coarse, _ = vision.read_cifar(cifar_dir / "cifar-100-python", "test", "coarse_label")
    assert coarse.labels == [y // 2 for y in labels]
    with pytest.raises(DataError, match="valid splits"):
        vision.read_cifar(cifar_dir, "validation", "fine_label")


def test_cifar_reader_refuses_code_in_pickles(tmp_path):
    root = write_cifar(tmp_path, 2, n_train=1, n_test=1) / "cifar-100-python"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (root / "test").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        vision.read_cifar(root, "test", "fine_label")


def test_folder_layout_labels_sorted_class_folders_and_decodes_losslessly(folder_dir, tmp_path):
    split, names = vision.read_folder(folder_dir, "train", None)
    assert names == sorted(class_names(N_CLASSES)) and len(split) == 12 * N_CLASSES
    assert split.labels == sorted(split.labels)  # files grouped by class folder
    img = split.load(0)
    path = folder_dir / "train" / names[0] / "0000.png"
    assert img.dtype == np.uint8 and img.shape[2] == 3 and np.array_equal(img, np.asarray(Image.open(path)))
    shapes = {split.load(i).shape[:2] for i in range(0, len(split), 7)}
    assert len(shapes) == 2  # the generator varies sizes: the processor must resize
    (folder_dir / "test" / "zz_extra").mkdir(exist_ok=True)
    try:
        with pytest.raises(DataError, match="zz_extra"):
            vision.read_folder(folder_dir, "test", names)
    finally:
        (folder_dir / "test" / "zz_extra").rmdir()
    with pytest.raises(DataError, match="no split folder"):
        vision.read_folder(folder_dir, "validation", names)


def test_food101_release_layout(tmp_path):
    names = ["apple_pie", "ramen"]
    for c, name in enumerate(names):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * c + i, np.uint8)).save(
                tmp_path / "images" / name / f"{i}.jpg"
            )
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "classes.txt").write_text("\n".join(names))
    (tmp_path / "meta" / "test.txt").write_text("ramen/1\napple_pie/0\n")
    split, got = vision.read_folder(tmp_path, "test", None)
    assert got == names and split.labels == [1, 0] and split.load(0).shape == (8, 8, 3)


def test_slices_and_random_subsets(cfg_factory, cifar_dir):
    cfg = task_cfg(
        cfg_factory(
            "task=cifar100",
            f"task.data_dir={cifar_dir}",
            "task.eval_splits=['test[:5]']",
            "task.max_train_samples=30",
        )
    )
    splits, classes = vision.load_splits(cfg)
    assert len(splits["test[:5]"]) == 5 and len(splits["train"]) == 30 and len(classes) == N_CLASSES
    assert len(set(splits["train"].labels)) > 5  # random, not the first 30 of one class
    again, _ = vision.load_splits(cfg)
    assert again["train"].labels == splits["train"].labels
    assert again["train"].fingerprint == splits["train"].fingerprint
    other, _ = vision.load_splits(typed(vision.Config, {**vars(cfg), "sample_seed": 1}, "task"))
    assert other["train"].fingerprint != splits["train"].fingerprint


def test_bad_task_input_fails_in_one_line(cfg_factory, tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        vision.TASK(task_cfg(cfg_factory("task=cifar100", f"task.data_dir={tmp_path / 'nope'}")))
    with pytest.raises(ConfigError, match="task.augment"):
        task_cfg(cfg_factory("task=cifar100", "task.augment=mixup"))
    with pytest.raises(ConfigError, match="cache_dir"):
        task_cfg(cfg_factory("task=food101", "task.feature_cache=disk", "task.cache_dir=null"))


# ------------------------------------------------------------------------------------ preprocessing


def test_augmentation_is_a_shift_and_or_flip():
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert images.augment_image(img, "none", 0.25) is img
    g = torch.Generator().manual_seed(0)
    flips = [images.augment_image(img, "flip", 0.0, g) for _ in range(40)]
    same = sum(np.array_equal(f, img) for f in flips)
    assert 5 < same < 35 and all(np.array_equal(f, img) or np.array_equal(f, img[:, ::-1]) for f in flips)
    padded = np.pad(img, ((4, 4), (4, 4), (0, 0)), mode="reflect")
    crops = {(dy, dx): padded[dy : dy + 16, dx : dx + 16] for dy in range(9) for dx in range(9)}
    seen = set()
    for _ in range(40):
        out = images.augment_image(img, "crop_flip", 0.25, g)
        hits = [k for k, c in crops.items() if np.array_equal(out, c) or np.array_equal(out, c[:, ::-1])]
        assert hits, "not a crop of the reflect-padded image"
        seen.update(hits)
    assert len(seen) > 10


def test_processor_resizes_rescales_normalises_like_pil(cfg_factory):
    cfg = cfg_factory(
        "task=cifar100", "model=tiny_vit", "+model.image_processor.size={height: 48, width: 48}"
    )
    processor = hf.build_tokenizer(cfg.model, [])
    img = np.random.default_rng(1).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    batch = vision.PixelCollate(processor)([{"image": img, "labels": 3}])
    manual = np.asarray(Image.fromarray(img).resize((48, 48), Image.BILINEAR), np.float32) / 255
    manual = torch.from_numpy(((manual - 0.5) / 0.5).transpose(2, 0, 1))
    assert batch["pixel_values"].shape == (1, 3, 48, 48) and batch["labels"].tolist() == [3]
    assert torch.allclose(batch["pixel_values"][0], manual, atol=1e-6)
    default = hf.build_tokenizer(cfg_factory("task=cifar100", "model=tiny_vit").model, [])
    assert (default.size.height, default.size.width) == (32, 32)  # the tiny ViT's image_size


# ------------------------------------------------------------------------------- model and placement


def test_new_classifier_is_seeded_by_init_seed(cfg_factory, cifar_dir):
    def classifier(*o):
        cfg = cfg_factory("task=cifar100", "model=tiny_vit", f"task.data_dir={cifar_dir}", *o)
        task = vision.TASK(task_cfg(cfg))
        model = hf.build_model(cfg.model, task.head, hf.build_tokenizer(cfg.model, []))
        assert model.config.num_labels == N_CLASSES and model.config.id2label[0] == task.classes[0]
        return model.classifier.weight.detach().clone()

    torch.manual_seed(123)
    a = classifier()
    torch.manual_seed(456)  # the global stream does not matter
    assert torch.equal(a, classifier()) and not torch.equal(a, classifier("model.init_seed=1"))
    assert a.shape == (N_CLASSES, 32)


@pytest.mark.parametrize("placement", ["classifier", "attention"])
def test_placements_and_their_trainable_parameters(placement, cfg_factory, cifar_dir):
    task, _, model, method, _ = built(
        cfg_factory, f"task.data_dir={cifar_dir}", f"model.placement={placement}", "method.rank=4"
    )
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    d, layers = 32, 2
    if placement == "classifier":
        # the head is frozen at its init and adapted only through B A: R·(d_in + d_out)
        assert trainable == {"classifier.lora_A": 4 * d, "classifier.lora_B": N_CLASSES * 4}
        assert not model.classifier.base.weight.requires_grad and not model.classifier.base.bias.requires_grad
        assert fc.trainable_scope(model) == "classifier"
    else:
        assert sum(v for n, v in trainable.items() if "lora_" in n) == layers * 4 * 4 * (d + d)
        assert trainable["classifier.weight"] == N_CLASSES * d and "classifier.bias" in trainable
        assert fc.trainable_scope(model) is None
    assert method.param_counts()["trainable"] == sum(trainable.values())


def test_orth_floor_is_the_null_space_part_of_the_orthogonality_loss():
    torch.manual_seed(0)
    m = LowRankLinear(torch.nn.Linear(32, 10), rank=4, alpha=8)
    torch.nn.init.normal_(m.lora_B)
    d = lowrank_diagnostics({"m": m})["modules"]["m"]
    s = spectrum(m)
    assert d["orth_floor"] == 10 - 4 and d["orth_loss"] >= d["orth_floor"]
    assert d["orth_loss"] - d["orth_floor"] == pytest.approx(float(((s**2 - 1) ** 2).sum()), rel=1e-9)
    dw = m.scaling * m.lora_B.detach().double() @ m.lora_A.detach().double()
    assert d["orth_loss"] == pytest.approx(float(((dw @ dw.T - torch.eye(10)) ** 2).sum()), rel=1e-9)


# ----------------------------------------------------------------------------------- feature cache


@pytest.mark.slow
def test_cached_head_matches_full_model_and_key_tracks_every_input(cfg_factory, cifar_dir, tmp_path):
    over = (f"task.data_dir={cifar_dir}", "task.feature_cache=disk", f"task.cache_dir={tmp_path / 'fc'}")
    task, processor, model, method, data = built(cfg_factory, *over)
    with torch.no_grad():
        torch.nn.init.normal_(model.classifier.lora_B)  # a non-zero ΔW, so the head's update counts
    cached = task.on_method(model, method, data)
    info = task.info()["feature_cache"]
    assert info["source"] == "extracted" and info["head_input_of"] == "classifier"
    assert len(list((tmp_path / "fc").glob("*.safetensors"))) == 1
    batch = cached.collate(cached.evals["test"].__getitems__(list(range(20))))
    uncached = data.collate([data.evals["test"][i] for i in range(20)])
    assert torch.equal(batch["labels"], uncached["labels"])
    model.eval()
    with torch.no_grad():
        loss_c, pred_c, _ = task.forward(model, batch)
        task_plain = vision.TASK(task.cfg)  # no head_module: the full forward
        loss_u, pred_u, _ = task_plain.forward(model, uncached)
    assert torch.allclose(loss_c, loss_u, atol=1e-6) and torch.equal(pred_c, pred_u)

    key = info["key"]
    fc._MEMORY.clear()
    task.on_method(model, method, data)
    assert task.info()["feature_cache"]["source"] == "disk" and task.info()["feature_cache"]["key"] == key
    assert task.on_method(model, method, data) and task.info()["feature_cache"]["source"] == "memory"
    with torch.no_grad():
        model.classifier.lora_A.mul_(2)  # head parameters are not part of the key
    task.on_method(model, method, data)
    assert task.info()["feature_cache"]["key"] == key

    def key_after(change):
        t, p, m, me, d = built(cfg_factory, *over)
        change(t, p, m)
        t.on_method(m, me, d)
        return t.info()["feature_cache"]["key"]

    assert key_after(lambda t, p, m: None) == key
    with torch.no_grad():
        assert key_after(lambda t, p, m: m.vit.layernorm.weight.add_(1e-3)) != key  # backbone
    assert (
        key_after(lambda t, p, m: t.splits.update(train=t.splits["train"].select([0, 1, 2]))) != key
    )  # data
    assert key_after(lambda t, p, m: setattr(p, "image_mean", [0.4, 0.5, 0.5])) != key  # preprocessing
    assert key_after(lambda t, p, m: t.cfg.__dict__.update(augment="flip", augment_views=2)) != key  # policy
    assert key_after(lambda t, p, m: setattr(t, "precision", "bf16 autocast")) != key  # precision


def test_cache_refuses_a_trainable_backbone_unless_auto(cfg_factory, cifar_dir):
    over = (f"task.data_dir={cifar_dir}", "model.placement=attention")
    task, _, model, method, data = built(cfg_factory, *over)
    assert task.on_method(model, method, data) is data
    assert task.info()["feature_cache"]["feature_cache"] == "off"
    assert task.info()["train_augmentation"] == "none"
    task, _, model, method, data = built(cfg_factory, *over, "task.feature_cache=memory")
    with pytest.raises(ConfigError, match="frozen backbone"):
        task.on_method(model, method, data)


def test_cached_augmented_views(cfg_factory, cifar_dir):
    over = (f"task.data_dir={cifar_dir}", "task.augment=crop_flip", "task.augment_views=3")
    task, _, model, method, data = built(cfg_factory, *over)
    cached = task.on_method(model, method, data)
    feats = cached.train.features
    assert feats.shape == (3, 24 * N_CLASSES, 32)
    assert not torch.allclose(feats[0], feats[1])  # different augmented views
    assert "3 fixed views per image" in task.info()["train_augmentation"]
    torch.manual_seed(0)
    got = cached.train.__getitems__([5] * 200)["features"]
    picked = {int((feats[:, 5] - row).abs().sum(-1).argmin()) for row in got}
    assert picked == {0, 1, 2}


def _head_inputs(model, batch) -> torch.Tensor:
    """What the classifier reads for a batch of pixels (the full model, eval mode, as extracted)."""
    seen = []
    hook = model.classifier.register_forward_pre_hook(lambda _m, a: seen.append(a[0].detach()))
    model.eval()
    with torch.no_grad():
        model(pixel_values=batch["pixel_values"])
    hook.remove()
    return seen[0]


@pytest.mark.parametrize(
    "policy",
    [(), ("task.augment=crop_flip", "task.augment_views=2")],
    ids=["default", "crop_flip-2views"],
)
def test_cached_and_uncached_paths_train_on_the_same_inputs(policy, cfg_factory, cifar_dir):
    """Issue 25 #10: what Full FT's uncached path feeds the classifier is what the cache holds."""
    task, processor, model, method, data = built(cfg_factory, f"task.data_dir={cifar_dir}", *policy)
    cached = task.on_method(model, method, data)
    assert task.info()["feature_cache"]["source"] == "extracted"
    feats = cached.train.features  # (views, N, D)
    index = list(range(0, 24 * N_CLASSES, 7))
    torch.manual_seed(0)
    hits = set()
    for _ in range(4 if feats.shape[0] > 1 else 1):  # the uncached path picks a view per read
        uncached = _head_inputs(model, data.collate([data.train[i] for i in index]))
        dist = (feats[:, index] - uncached[None]).abs().amax(-1)  # (views, len(index))
        assert torch.all(dist.min(0).values < 1e-5), "an uncached train input the cache does not hold"
        hits |= set(dist.argmin(0).tolist())
    assert hits == set(range(feats.shape[0]))  # every cached view is one the uncached path reads
    assert task.info()["precision"] == task.info()["feature_cache"]["precision"] == "fp32"


def test_fresh_augmentation_is_never_cached_and_the_policy_is_the_arms_own(cfg_factory, cifar_dir):
    over = (f"task.data_dir={cifar_dir}", "task.augment=crop_flip")
    task, _, model, method, data = built(cfg_factory, *over)
    assert task.on_method(model, method, data) is data  # auto: off, every arm draws afresh
    assert task.info()["feature_cache"]["feature_cache"] == "off"
    assert task.info()["train_augmentation"] == "crop_flip (a fresh draw at every use)"
    with pytest.raises(ConfigError, match="fresh augmentation"):
        task_cfg(cfg_factory("task=cifar100", *over, "task.feature_cache=memory"))
    with pytest.raises(ConfigError, match="augment_views=2 needs an augmentation"):
        task_cfg(cfg_factory("task=cifar100", "task.augment_views=2"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="cache_device=cuda differs"):
            task_cfg(cfg_factory("task=cifar100", "device=cpu", "task.cache_device=cuda"))


def test_precision_follows_the_run_and_the_cache_extracts_under_it(cfg_factory, cifar_dir):
    def precision(*o):
        return vision.run_precision(task_cfg(cfg_factory("task=cifar100", *o)))

    # the runner's rule (runners/train.py): bf16 autocast on CUDA unless train.bf16=false
    assert precision("device=cuda") == precision("device=cuda:1", "train.bf16=true") == "bf16 autocast"
    assert precision("device=cuda", "train.bf16=false") == precision("device=cpu") == "fp32"
    # the cache extracts under the precision it is given (CPU bf16 autocast stands in for CUDA's):
    # the head's inputs then equal the uncached forward's under that autocast, not fp32's
    task, _, model, method, data = built(cfg_factory, f"task.data_dir={cifar_dir}")
    task.precision = "bf16 autocast"
    cached = task.on_method(model, method, data)
    assert task.info()["feature_cache"]["precision"] == "bf16 autocast"
    batch = data.collate([data.train[i] for i in range(16)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = _head_inputs(model, batch)
    fp32 = _head_inputs(model, batch)
    assert torch.allclose(cached.train.features[0, :16], bf16, atol=1e-5)
    assert not torch.allclose(cached.train.features[0, :16], fp32, atol=1e-3)
    # a forward on cached features under another autocast than they were made in is refused
    feats = cached.collate(cached.train.__getitems__(list(range(8))))
    with pytest.raises(ConfigError, match="cached under bf16 autocast but this forward runs under fp32"):
        task.forward(model, feats)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        task.forward(model, feats)


def _vit_arms() -> list[str]:
    params = yaml.safe_load((CONF / "experiment" / "rm_vit_classifier.yaml").read_text())["hydra"]
    return [a.strip() for a in params["sweeper"]["params"]["arm"].split(",")]


def test_every_arm_of_rm_vit_classifier_trains_under_one_policy_and_precision(cfg_factory, cifar_dir):
    """Issue 25 #10: Figures 1-2 compare Full FT with the LoRA family; all 13 arms must see the same
    training inputs in the same precision, whichever path (cached or not) each one takes."""
    arms = _vit_arms()
    assert "ft" in arms and len(arms) == 13
    exp = ("experiment=rm_vit_classifier", "task=cifar100")
    # as built and run: Full FT (uncached) and LoRA / RM-LoRA (cached) on the tiny ViT
    infos = {}
    for arm in ("ft", "lora_r32", "rm_lora_r32"):
        rank = () if arm == "ft" else ("method.rank=8",)  # R <= the 10 synthetic classes
        task, _, model, method, data = built(
            cfg_factory, f"arm={arm}", *rank, f"task.data_dir={cifar_dir}", base=(*exp, "model=tiny_vit")
        )
        task.on_method(model, method, data)
        info = task.info()
        infos[arm] = {k: v for k, v in info.items() if k not in ("feature_cache", "classes")}
        assert info["feature_cache"]["feature_cache"] == ("off" if arm == "ft" else "memory")
    assert infos["ft"] == infos["lora_r32"] == infos["rm_lora_r32"], infos
    assert infos["ft"]["train_augmentation"] == "none" and infos["ft"]["precision"] == "fp32"
    for device in ("cuda", "cpu"):  # every arm as composed, with the paper's ViT-B/16 (no weights needed)
        seen = set()
        for arm in arms:
            cfg = cfg_factory(*exp, f"arm={arm}", f"device={device}")
            c = task_cfg(cfg)
            seen.add(
                (json.dumps(vision.data_policy(c), sort_keys=True), vision.run_precision(c), cfg.train.bf16)
            )
        assert len(seen) == 1, seen


# -------------------------------------------------------------------------------------- end to end


def test_cached_run_equals_uncached_run(cfg_factory, cifar_dir):
    over = (
        "task=cifar100",
        "model=tiny_vit",
        "method=rm_lora",
        f"task.data_dir={cifar_dir}",
        "task.augment=none",
        "train.epochs=2",
        *FAST,
    )
    cached = run(cfg_factory(*over))
    plain = run(cfg_factory(*over, "task.feature_cache=off"))
    assert cached["task_info"]["feature_cache"]["source"] == "extracted"
    assert plain["task_info"]["feature_cache"]["feature_cache"] == "off"
    for a, b in zip(cached["metrics"]["history"], plain["metrics"]["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["train"]["acc"] == b["train"]["acc"]
        assert a["eval"]["test"]["loss"] == pytest.approx(b["eval"]["test"]["loss"], rel=1e-4)
        assert a["eval"]["test"]["acc"] == b["eval"]["test"]["acc"]
    assert cached["diagnostics"]["mean_orth_loss"] == pytest.approx(
        plain["diagnostics"]["mean_orth_loss"], rel=1e-4
    )


@pytest.mark.slow
def test_classifier_rm_lora_learns_the_synthetic_classes_with_the_cache(cfg_factory, cifar_dir):
    rec = run(
        cfg_factory(
            "task=cifar100",
            "model=tiny_vit",
            "method=rm_lora",
            f"task.data_dir={cifar_dir}",
            "train.epochs=20",
            *FAST,
        )
    )
    history = rec["metrics"]["history"]
    last = history[-1]
    assert last["eval"]["test"]["acc"] > 0.6  # chance: 0.1
    assert last["generalization_gap"]["test"] == pytest.approx(
        last["train"]["acc"] - last["eval"]["test"]["acc"]
    )
    assert all(
        {"train", "eval", "generalization_gap"} <= set(e) and "loss" in e["eval"]["test"] for e in history
    )
    d = rec["diagnostics"]["modules"]["classifier"]
    assert d["orth_floor"] == N_CLASSES - 8 and d["rank"] <= 8
    assert rec["params"]["trainable"] == 8 * (32 + N_CLASSES) and rec["params"]["head"] == 0
    assert rec["task_info"]["train_augmentation"] == "none"
    assert rec["task_info"]["precision"] == rec["env"]["precision"]
    assert len(rec["timing"]["epoch_s"]) == 20


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rm_lora", "ft"])
def test_attention_placement_and_ft_learn_on_the_image_folder_layout(method, cfg_factory, folder_dir):
    rec = run(
        cfg_factory(
            "task=food101",
            "model=tiny_vit",
            f"method={method}",
            "model.placement=attention",
            f"task.data_dir={folder_dir}",
            "task.eval_splits=[test]",
            "train.epochs=8",
            *FAST,
            "train.lr=3e-3",
        )
    )
    assert rec["task"] == "food101" and rec["task_info"]["feature_cache"]["feature_cache"] == "off"
    assert rec["metrics"]["final"]["test"]["acc"] > 0.6  # chance: 0.1


def test_hub_path_reads_columns_and_class_names(monkeypatch, cfg_factory):
    import datasets

    names = ["cat", "dog", "emu"]
    images = [Image.fromarray(np.full((8, 8, 3), 50 * i, np.uint8)) for i in range(6)]
    features = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=names)})
    ds = datasets.Dataset.from_dict({"img": images, "fine_label": [0, 1, 2, 0, 1, 2]}, features=features)
    calls = []

    def load_dataset(hub_id, config, split):
        calls.append((hub_id, config, split))
        return ds

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    task = vision.TASK(task_cfg(cfg_factory("task=cifar100", "task.eval_splits=['test[:3]']")))
    assert calls == [("uoft-cs/cifar100", None, "train"), ("uoft-cs/cifar100", None, "test[:3]")]
    assert task.classes == names and task.splits["train"].labels == [0, 1, 2, 0, 1, 2]
    assert np.array_equal(task.splits["train"].load(1), np.full((8, 8, 3), 50, np.uint8))
    with pytest.raises(DataError, match="no column 'image'"):
        vision.TASK(task_cfg(cfg_factory("task=food101")))


def test_vit_b16_loads_a_local_checkpoint_and_its_processor(tmp_path, cfg_factory, cifar_dir):
    from transformers import ViTConfig, ViTImageProcessorPil, ViTModel

    # a tiny ViTModel saved like the ImageNet-21k checkpoint (backbone + pooler, no classifier)
    small = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(0)
    base = ViTModel(small)
    base.save_pretrained(tmp_path / "ckpt")
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "ckpt")
    cfg = cfg_factory(
        "task=cifar100", "model=vit_b16", f"model.path={tmp_path / 'ckpt'}", f"task.data_dir={cifar_dir}"
    )
    task = vision.TASK(task_cfg(cfg))
    processor = hf.build_tokenizer(cfg.model, [])
    model = hf.build_model(cfg.model, task.head, processor)
    assert type(processor).__name__ == "ViTImageProcessorPil" and processor.size.height == 32
    weight = model.vit.embeddings.patch_embeddings.projection.weight
    assert torch.equal(weight, base.embeddings.patch_embeddings.projection.weight)  # the backbone was loaded
    assert model.classifier.out_features == N_CLASSES and model.config.id2label[3] == task.classes[3]


def test_unknown_placement_is_a_one_line_config_error(cfg_factory, cifar_dir):
    with pytest.raises(
        ConfigError, match=r"placements\.foo\.target_modules' not found \(at model\.target_modules\)"
    ):
        run(
            cfg_factory(
                "task=cifar100", "model=tiny_vit", f"task.data_dir={cifar_dir}", "model.placement=foo"
            )
        )


@pytest.mark.slow
def test_vit_trains_compiled_like_eager(folder_dir, tmp_path, stub_inductor):
    """ViT's layers through train.compile=true (Dynamo + AOT autograd; inductor's C++ build is left to
    the GPU): one trace for every layer and the eager run's loss curve."""
    from tests.conftest import make_cfg

    graphs = stub_inductor(aot=True)
    over = ("task=food101", "model=tiny_vit", "method=rm_lora", "model.placement=attention")
    over += (f"task.data_dir={folder_dir}", "task.eval_splits=[test]", "train.epochs=2", *FAST)
    eager = run(make_cfg(*over, results_dir=tmp_path / "eager"))
    compiled = run(make_cfg(*over, "train.compile=true", results_dir=tmp_path / "compiled"))
    assert compiled["env"]["fast_path"]["compiled"].endswith("blocks (ViTLayer)")
    assert 1 <= len(graphs) <= 2  # the layer, and rm_lora's regularizer
    curve = lambda r: [h["train_loss"] for h in r["metrics"]["history"]]  # noqa: E731
    assert len(curve(eager)) == 2
    torch.testing.assert_close(
        torch.tensor(curve(compiled)), torch.tensor(curve(eager)), rtol=1e-4, atol=1e-5
    )


# ------------------------------------------------------------------ faulty files (issue 26 #4)


def _truncate(path, keep=0.6):
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


def test_truncated_images_are_named_before_training(cfg_factory, tmp_path):
    """Without the feature cache (placement=attention) a truncated image stopped the run mid-epoch with
    `OSError: image file is truncated` and no path; now the task refuses it when it is built."""
    root = write_folder(tmp_path / "f", 2, n_train=3, n_test=1, seed=0)
    bad = root / "train" / class_names(2)[1] / "0001.png"
    _truncate(bad)
    with pytest.raises(
        DataError,
        match=rf"1 of 6 images of split 'train' .*{bad} \(image file is truncated\); replace or remove",
    ):
        vision.TASK(task_cfg(cfg_factory("task=cifar100", f"task.data_dir={root}")))
    # a slice that leaves the bad file out is fine (only the images a run reads are checked)
    ok = vision.TASK(
        task_cfg(cfg_factory("task=cifar100", f"task.data_dir={root}", "task.train_split='train[:1]'"))
    )
    assert len(ok.splits["train"]) == 1
    # the Food-101 release's JPEGs; a file its meta lists but that is gone
    food = tmp_path / "food"
    (food / "images" / "ramen").mkdir(parents=True)
    (food / "meta").mkdir()
    for i in range(2):
        Image.fromarray(np.full((64, 64, 3), 90 * i, np.uint8)).save(food / "images" / "ramen" / f"{i}.jpg")
    _truncate(food / "images" / "ramen" / "1.jpg")
    (food / "meta" / "classes.txt").write_text("ramen\n")
    (food / "meta" / "test.txt").write_text("ramen/0\nramen/1\n")
    with pytest.raises(
        DataError, match=r"1 of 2 images .*ramen/1.jpg \((image file is truncated|Truncated File Read)"
    ):
        vision.check_images(vision.read_folder(food, "test", None)[0].files, "test")
    (food / "meta" / "test.txt").write_text("ramen/0\nramen/7\n")
    with pytest.raises(DataError, match=r"ramen/7.jpg: No such file"):
        vision.read_folder(food, "test", None)
    (food / "meta" / "test.txt").write_text("ramen/0\nsushi/1\n")
    with pytest.raises(DataError, match=r"test.txt: entry 2 \('sushi/1'\) names a class not in"):
        vision.read_folder(food, "test", None)


def test_an_image_corrupt_inside_is_named_when_read(tmp_path):
    root = write_folder(tmp_path, 2, n_train=1, n_test=1, seed=0)
    path = root / "train" / class_names(2)[0] / "0000.png"
    raw = path.read_bytes()
    path.write_bytes(raw[:60] + bytes(len(raw) - 72) + raw[-12:])  # intact signature and IEND
    split, _ = vision.read_folder(root, "train", None)
    with pytest.raises(DataError, match=rf"{path}: cannot decode image"):
        split.load(0)


def test_an_empty_class_folder_is_refused_not_trained_as_a_class(tmp_path):
    root = write_folder(tmp_path, 2, n_train=1, n_test=1, seed=0)
    (root / "train" / "zz_empty").mkdir()
    (root / "train" / "zz_empty" / "notes.txt").write_text("not an image")
    with pytest.raises(
        DataError, match=r"train/zz_empty: class folder holds no images .*add its images or remove"
    ):
        vision.read_folder(root, "train", None)
