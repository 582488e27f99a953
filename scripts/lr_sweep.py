"""Pick one learning rate per method family for an experiment, on the dev split, with a seed the table
does not use — the way GLUE papers choose theirs — and write the choice with every score behind it.

    python scripts/lr_sweep.py --experiment minilm_glue --tasks glue/cola,glue/mrpc,glue/rte,glue/stsb \
        --grid ft=arm:ft:2e-5,5e-5,1e-4,2e-4 --grid lowrank=arm:lora_r8:5e-4,1e-3,2e-3 \
        --seed 0 --results /tmp/lr_sweep --out lr_choice.json [-- more run.py overrides]

Each `--grid FAMILY=arm:ARM:LR,LR,...` trains ARM on every task at every lr (`task.lr.FAMILY=LR`,
`launcher=pack`), in its own results folder (so no sweep run lands in the table's store). The choice
per family is the lr with the best mean main metric over the tasks (best epoch, as the table reports);
ties go to the smaller lr. The table is then run with `task.lr.FAMILY=<choice>` (or the experiment YAML
carries the values: the same resolved config, the same run_ids).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_grid(text: str) -> tuple[str, str, list[str]]:
    family, _, rest = text.partition("=")
    kind, arm, lrs = rest.split(":", 2)
    if kind != "arm" or not family or not arm or not lrs:
        raise SystemExit(f"--grid {text!r}: expected FAMILY=arm:ARM:LR,LR,... (e.g. ft=arm:ft:1e-5,5e-5)")
    return family, arm, lrs.split(",")


def scores(results: Path, family: str) -> dict[str, dict[str, float]]:
    """lr -> task -> best-epoch main metric, from the sweep's records."""
    out: dict[str, dict[str, float]] = {}
    for path in sorted((results / "runs").glob("*.json")):
        rec = json.loads(path.read_text())
        if rec.get("status") != "success":
            continue
        lr = rec["config"]["task"]["lr"][family]
        out.setdefault(repr(float(lr)), {})[rec["task"]] = rec["metrics"]["best"]["score"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--tasks", required=True, help="comma-separated task options, e.g. glue/cola,glue/rte")
    ap.add_argument("--grid", action="append", required=True, help="FAMILY=arm:ARM:LR,LR,...")
    ap.add_argument("--seed", type=int, default=0, help="a seed the table does not use")
    ap.add_argument("--jobs", type=int, default=8, help="runs at once (launcher=pack)")
    ap.add_argument("--results", type=Path, required=True, help="the sweep's own results folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("overrides", nargs="*", help="more run.py overrides (after --)")
    a = ap.parse_args()
    choice, table = {}, {}
    for family, arm, lrs in map(parse_grid, a.grid):
        results = a.results / family
        cmd = [sys.executable, str(ROOT / "run.py"), "-m", f"experiment={a.experiment}", "launcher=pack",
               f"hydra.launcher.n_jobs={a.jobs}", f"task={a.tasks}", f"arm={arm}", f"seed={a.seed}",
               f"task.lr.{family}={','.join(lrs)}", f"paths.results_dir={results}", *a.overrides]  # fmt: skip
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=False)  # a failed run shows as a missing score below
        got = scores(results, family)
        tasks = a.tasks.split(",")
        means = {
            lr: statistics.fmean(per.values()) for lr, per in got.items() if len(per) == len(tasks)
        }  # only complete rows compete
        if not means:
            raise SystemExit(f"{family}: no lr finished every task; see {results}/runs")
        best = max(means, key=lambda lr: (means[lr], -float(lr)))
        choice[family] = float(best)
        table[family] = {"arm": arm, "scores": got, "mean": means, "chosen": float(best)}
        print(f"{family}: " + ", ".join(f"lr {lr}: {m:.4f}" for lr, m in sorted(means.items())) +
              f" -> {best}", flush=True)  # fmt: skip
    a.out.write_text(
        json.dumps({"choice": choice, "seed": a.seed, "tasks": a.tasks, "detail": table}, indent=1)
    )
    print(json.dumps(choice))


if __name__ == "__main__":
    main()
