"""`run.py ... plan=true`: the sweep expanded as Hydra's basic sweeper does, done runs found by run_id,
estimates from measured records (GPU-hours only from CUDA measurements)."""

from __future__ import annotations

import json

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from runners.config import CONF, run_ids
from runners.plan import expand, plan, strip_plan


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
           "method": "lora", "config": resolved, "timing": {"wall_s": 1800.0}, "env": {"device_type": "cuda"}}  # fmt: skip
    (runs / f"{run_id}.json").write_text(json.dumps(rec))
    text = plan(base)
    lines = [line for line in text.splitlines() if "seed=" in line and line.strip()[0].isdigit()]
    assert len(lines) == 3
    assert "done" in lines[0] and run_id in lines[0]
    assert all("todo" in line and "group" in line and "30.0 min" in line for line in lines[1:])
    assert "runs: 3 | done: 1 | to run: 2" in text
    assert "1 GPU-hours" in text  # 2 runs x 1800 s measured on CUDA
