"""`scripts/make_figures.py` on fake records: the curves it reads, the seed band, PNGs written."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from scripts import make_figures as mf


def vision_record(run_id, method, rank, seed, epochs=6, model="tiny_vit", task="cifar100", gen_field=False):
    """A record with the per-epoch fields the vision task writes (test split 'test')."""
    history = []
    for e in range(1, epochs + 1):
        test_acc = 0.5 + 0.05 * e + 0.01 * seed + (0.02 if method == "rm_lora" else 0) + rank / 3200
        train_acc = test_acc + 0.01 * e
        ev = {"loss": 2.0 / e + 0.1 * seed, "acc": test_acc}
        if gen_field:
            ev["gen_error"] = 0.123
        history.append({"epoch": e, "train_loss": 1.0 / e, "train": {"acc": train_acc}, "eval": {"test": ev}})
    return {
        "run_id": run_id,
        "group_id": f"g-{method}-{rank}",
        "status": "success",
        "model": model,
        "task": task,
        "method": method,
        "seed": seed,
        "config": {"method": {"name": method, "rank": rank}},
        "metrics": {"selection_split": "test", "history": history, "final": history[-1]["eval"]},
    }


def test_curves_read_history_and_compute_generalization_error():
    c = mf.curves(vision_record("a", "lora", 32, seed=0, epochs=3))
    assert c["test_acc"][2] == pytest.approx(61.0) and c["train_acc"][2] == pytest.approx(63.0)
    assert c["gen_error"][3] == pytest.approx(c["train_acc"][3] - c["test_acc"][3]) == pytest.approx(3.0)
    assert c["test_loss"][1] == pytest.approx(2.0)
    # a recorded generalization error wins over the computed one (fraction -> %)
    assert mf.curves(vision_record("b", "lora", 32, 0, 2, gen_field=True))["gen_error"][1] == pytest.approx(
        12.3
    )
    # tolerant: missing pieces skip points, never raise
    broken = {
        "metrics": {"history": [{"epoch": 1}, "junk", {"epoch": 2, "eval": {"test": {"loss": float("nan")}}}]}
    }
    assert mf.curves(broken) == {"test_loss": {}, "test_acc": {}, "train_acc": {}, "gen_error": {}}


def test_mean_band_is_mean_plus_minus_sample_std():
    xs, m, lo, hi = mf.mean_band([{1: 1.0, 2: 2.0}, {1: 3.0, 2: 2.0}, {1: 5.0}])
    assert xs == [1, 2] and m == [3.0, 2.0]
    assert hi[0] - m[0] == pytest.approx(statistics.stdev([1.0, 3.0, 5.0])) == pytest.approx(2.0)
    assert lo[1] == hi[1] == 2.0  # equal values: no band


def test_figures_and_energy_pngs_are_written(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    for method in ("lora", "rm_lora"):
        for rank in (32, 64):
            for seed in range(3):
                rec = vision_record(f"{method}{rank}{seed}", method, rank, seed)
                (runs / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    energy = tmp_path / "energy"
    energy.mkdir()
    R = list(range(0, 1025, 32))
    (energy / "gpt2_medium_block0.json").write_text(json.dumps({
        "svd": {"R": R, "energy": [1 - math.exp(-r / 200) for r in R]},
        "sparsity": {"fraction": [i / 10 for i in range(11)], "energy": [1 - (1 - i / 10) ** 3 for i in range(11)]},
        "markers": {"R": [300, 400, 500], "fraction": [0.4, 0.5, 0.6]},
    }))  # fmt: skip
    out = tmp_path / "figures"
    written = mf.make_figures(runs, energy, out)
    assert [p.name for p in written] == ["rm_fig1_cifar100_smoke.png", "a1_energy_gpt2_medium_block0.png"]
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 20_000
    lines = mf.lines_for(
        [json.loads(f.read_text()) for f in runs.glob("*.json")], "tiny_vit", "cifar100", None
    )
    assert list(lines) == ["LoRA R=32", "RM-LoRA R=32", "LoRA R=64", "RM-LoRA R=64"]
    assert all(len(v) == 3 for v in lines.values())


def test_energy_json_shape_is_checked(tmp_path):
    with pytest.raises(ValueError, match="svd.R"):
        mf.plot_energy({"svd": {"R": [1]}}, "x", tmp_path / "e.png")
    with pytest.raises(ValueError, match="as long as"):
        mf.plot_energy({"svd": {"R": [1, 2], "energy": [0.5]}, "sparsity": {"fraction": [1], "energy": [1]}},
                       "x", tmp_path / "e.png")  # fmt: skip


def test_energy_curves_output_is_what_the_figure_reads(tmp_path):
    """scripts/energy_curves.py's own JSON (svd.rank, magnitude.fraction) draws the A.1 panels."""
    import torch

    from scripts.energy_curves import curves

    data = curves(torch.randn(8, 24, generator=torch.Generator().manual_seed(0)))
    path = tmp_path / "a1.png"
    mf.plot_energy(data, "A.1 test", path)
    assert path.stat().st_size > 1000
    assert data["svd"]["energy"][-1] == pytest.approx(1.0)
