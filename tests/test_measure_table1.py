"""scripts/measure_table1.py's arithmetic (issue 28 goal 5): a run's full-size wall time from two
short epochs, and the whole table's GPU-hours under launcher=pack, on hand-computed values."""

from __future__ import annotations

import pytest

from scripts import measure_table1 as mt


def test_extrapolation_from_two_short_epochs_matches_the_docstring_formula():
    info = {"task": "sst2", "data": "sst2", "full_steps": 6315, "measured_full": False, "proc_wall_s": 100.0}
    # 2 epochs of 200 steps: the first pays 30 s of compile, the second runs at 0.1 s per step
    timing = {"epoch_s": [50.0, 20.0], "eval_s": [2.0, 2.0], "steps": 400}
    out = mt.extrapolate(dict(info), timing)
    steady = 20.0 / 200
    assert out["steady_step_ms"] == pytest.approx(100.0)
    assert out["first_epoch_extra_s"] == pytest.approx(50.0 - 200 * steady)  # 30 s
    assert out["outside_s"] == pytest.approx(100.0 - 70.0 - 4.0)
    per_example = 4.0 / (2 * mt.DEV["sst2"])
    full = 26.0 + 30.0 + 6315 * steady + mt.EPOCHS["sst2"] * mt.DEV["sst2"] * per_example
    assert out["full_wall_s"] == pytest.approx(full)
    # a task that ran in full is its measured process wall, nothing extrapolated
    whole = mt.extrapolate({**info, "measured_full": True}, timing)
    assert whole["full_wall_s"] == 100.0


def test_table_cost_counts_297_runs_and_divides_by_the_measured_concurrency(monkeypatch):
    monkeypatch.setattr(mt, "step_ratios", lambda: {"lora": 1.0, "adalora": 2.0})  # no sora row
    runs = [
        {"task": t, "arm": a, "full_wall_s": {"lora": 100.0, "rm_lora": 200.0}[a], "proc_wall_s": 50.0}
        for t in mt.EPOCHS
        for a in mt.ARMS
    ]
    cost = mt.table_cost(runs, sweep_wall=300.0)  # 18 runs x 50 s in 300 s: 3 at a time
    assert cost["runs_in_table"] == 9 * 11 * 3
    assert cost["measured_concurrency"] == pytest.approx(3.0)
    # per task and seed: lora 100 + rm_lora 200; lora_r4 100, r_lora_r4 / rm_lora_r4 / r_lora_r8 200
    # each, ft 100 (LoRA's), adalora x2 at 2 x 100, sora x2 at LoRA's 100
    per_task = 300 + 100 + 3 * 200 + 100 + 2 * 200 + 2 * 100
    assert cost["sum_of_run_walls_h"] == pytest.approx(9 * 3 * per_task / 3600)
    assert cost["gpu_hours_packed"] == pytest.approx(cost["sum_of_run_walls_h"] / 3.0)
    assert any(a.startswith("sora_r8: no sora row") for a in cost["assumptions"])
    assert any(a.startswith("ft: LoRA's time") for a in cost["assumptions"])
