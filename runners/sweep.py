"""Sweeps that survive bad jobs: each job leaves `outcome.json` in its Hydra job folder; at the end
of a `-m` sweep `SweepSummary` prints n ok / skipped / failed / diverged / ... with their run_ids.

Works for every launcher (basic, submitit local, SLURM): the outcomes are files in the sweep folder.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from hydra.experimental.callback import Callback

from runners.record import write_json

OK = ("success", "skipped")


def write_outcome(job_dir: str | Path, outcome: dict) -> None:
    write_json(Path(job_dir) / "outcome.json", outcome)


def summarize(sweep_dir: Path) -> tuple[str, bool]:
    """The summary text and whether every job ended well."""
    by_status: dict[str, list[str]] = defaultdict(list)
    for path in sorted(sweep_dir.glob("*/outcome.json"), key=lambda p: p.parent.name):
        out = json.loads(path.read_text())
        by_status[out["status"]].append(out.get("run_id") or f"job {path.parent.name}")
    jobs = sum(len(v) for v in by_status.values())
    lines = [f"sweep: {jobs} jobs: " + ", ".join(f"{len(v)} {k}" for k, v in sorted(by_status.items()))]
    for status, ids in sorted(by_status.items()):
        if status not in OK:
            lines.append(f"  {status}: {', '.join(ids)}")
    return "\n".join(lines), all(k in OK for k in by_status)


class SweepSummary(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        text, ok = summarize(Path(config.hydra.sweep.dir))
        print(text, file=sys.stdout if ok else sys.stderr)
        if not ok:
            sys.exit(1)  # a sweep with failed jobs is not a success for make or CI
