"""`run.py ... plan=true`: the sweep expanded as Hydra's basic sweeper does, done runs found by run_id,
estimates from measured records (GPU-hours only from CUDA measurements)."""

from __future__ import annotations

import json

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from runners.config import CONF, run_ids
from runners.plan import plan, strip_plan
from runners.sweep import expand


def test_strip_plan():
    assert strip_plan(["-m", "experiment=x", "plan=true"]) == (True, ["experiment=x"])
    assert strip_plan(["experiment=x", "plan=false"]) == (False, ["experiment=x"])
    assert strip_plan(["seed=1"]) == (False, ["seed=1"])


def test_expand_counts_the_paper_sweep_and_command_line_wins():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        jobs = expand(["experiment=rm_table1_glue"])
        assert len(jobs) == 9 * 11 * 3  # GLUE tasks x table rows x seeds (RM-LoRA Table 1)
        narrowed = expand(["experiment=rm_table1_glue", "task=glue/rte", "arm=lora_r4,rm_lora_r4"])
        assert len(narrowed) == 2 * 3 and all("task=glue/rte" in j for j in narrowed)
        assert sorted({o for j in narrowed for o in j if o.startswith("seed=")}) == [
            "seed=1",
            "seed=2",
            "seed=3",
        ]


def test_plan_marks_done_and_estimates_from_the_same_cell(tmp_path):
    base = [
        "experiment=rm_table1_glue_smoke",
        "task=glue/rte",
        "arm=lora_r4",
        f"paths.results_dir={tmp_path}",
    ]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        resolved = OmegaConf.to_container(compose("config", overrides=[*base, "seed=1"]), resolve=True)
    run_id, group_id = run_ids(resolved)
    runs = tmp_path / "runs"
    runs.mkdir()
    rec = {"run_id": run_id, "group_id": group_id, "status": "success", "model": "tiny_deberta",
           "method": "lora", "config": resolved, "timing": {"wall_s": 1800.0}, "env": {"device_type": "cuda"},
           "weights": str(tmp_path / "adapter.safetensors")}  # fmt: skip
    (runs / f"{run_id}.json").write_text(json.dumps(rec))
    # the runner retrains a success whose weights file is gone (records copied without weights): so does plan
    missing = [line for line in plan(base).splitlines() if run_id in line]
    assert len(missing) == 1 and "todo (weights missing)" in missing[0]
    (tmp_path / "adapter.safetensors").write_bytes(b"w")
    text = plan(base)
    lines = [line for line in text.splitlines() if "seed=" in line and line.strip()[0].isdigit()]
    assert len(lines) == 3
    assert "done" in lines[0] and run_id in lines[0]
    assert all("todo" in line and "group" in line and "30.0 min" in line for line in lines[1:])
    assert "runs: 3 | done: 1 | to run: 2" in text
    assert "1 GPU-hours" in text  # 2 runs x 1800 s measured on CUDA


def test_plan_flags_the_runs_that_would_fail(tmp_path):
    """issue 25: plan=true listed all 297 Table 1 runs as composable though AdaLoRA's WNLI cells
    could not start; the same check as `make check-experiments` now flags them, with the reason."""
    base = [
        "experiment=rm_table1_glue",
        "task=glue/wnli",
        "arm=adalora_8to4",
        f"paths.results_dir={tmp_path}",
    ]
    text = plan([*base, "method.schedule=fixed"])  # the old schedule, 50 / 50 in 100 steps
    fails = [line for line in text.splitlines() if " FAIL " in line]
    assert len(fails) == 3 and all("tinit < total_steps - tfinal" in line for line in fails)
    assert "to run: 0 | would fail: 3 | cannot compose: 0" in text
    text = plan(base)  # the default (fit) schedule runs, and says what it changed
    assert "would fail: 0" in text and "finding: adalora: tinit/tfinal/deltaT 50/50/10" in text


def test_table_estimate_nearest_match_rules():
    from runners.plan import RUN_OVERHEAD_S, table_estimate

    row = {"card": "H200", "date": "d", "path": "compiled", "seq_len": 128, "batch": 32}
    table = [
        {**row, "model": "m", "method": "lora", "ms_per_step": 20.0},
        {**row, "model": "m", "method": "rm_lora", "ms_per_step": 30.0},
        {**row, "model": "m", "method": "ft", "ms_per_step": 80.0},
        {**row, "model": "m", "method": "lora", "path": "eager", "ms_per_step": 100.0},
    ]

    def est(method, seq=128, batch=32, steps=2000):
        resolved = {"model": {"name": "m"}, "method": {"name": method}, "task": {"max_length": seq},
                    "train": {"batch_size": batch, "grad_accum": 1, "compile": "auto", "compile_min_steps": 1000}}  # fmt: skip
        return table_estimate(resolved, steps, table)

    secs, basis, detail = est("rm_lora")
    assert basis == "table" and secs == 2000 * 0.030 + RUN_OVERHEAD_S and "rm_lora compiled 128x32" in detail
    assert est("adalora")[:2] == (2000 * 0.020 + RUN_OVERHEAD_S, "table~lr")  # the family's plain row
    assert est("prefix")[:2] == (2000 * 0.080 + RUN_OVERHEAD_S, "table~any")  # slowest row: upper bound
    secs, basis, detail = est("rm_lora", seq=384, batch=16)  # 1.5x the row's tokens per step
    assert basis == "table~lr" and secs == 2000 * 0.020 * 1.5 + RUN_OVERHEAD_S and "x1.5 tokens" in detail
    assert est("lora", steps=100)[0] == 100 * 0.100 + RUN_OVERHEAD_S  # < 1000 steps: the eager row
    assert table_estimate({**{"model": {"name": "other"}}, "method": {"name": "lora"}, "task": {},
                           "train": {"batch_size": 8}}, 10, table) is None  # fmt: skip


def test_plan_estimates_gpu_hours_from_the_step_time_table(tmp_path):
    """No record measured yet: GPU-hours from docs/bench/step_times.csv, basis said per row."""
    from runners.plan import RUN_OVERHEAD_S, step_table

    text = plan(
        ["experiment=rm_table1_glue", "task=glue/sst2", "arm=lora_r4", f"paths.results_dir={tmp_path}"]
    )
    row = next(
        r
        for r in step_table()
        if (r["model"], r["method"], r["path"]) == ("deberta_v3_base", "lora", "compiled")
    )
    secs = 6315 * row["ms_per_step"] / 1000 + RUN_OVERHEAD_S  # 67,349 / 32 = 2,105 steps x 3 epochs
    lines = [line for line in text.splitlines() if "seed=" in line and line.strip()[0].isdigit()]
    assert len(lines) == 3 and all(f"{secs / 60:.1f} min" in line and " table " in line for line in lines)
    assert all(f"table: {row['card']} {row['date']}" in line and "6315 steps" in line for line in lines)
    assert f"{3 * secs / 3600:.3g} GPU-hours" in text and "no measurement yet" not in text
    assert f"from the step-time table: {row['card']} {row['date']}" in text
