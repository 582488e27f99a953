"""Run loggers and progress bars. The runner calls a logger at four points and knows nothing else:

    logger.start(record)                  # once: run_id, group_id, the resolved config
    logger.step(step, values)             # every `logger.every_n_steps` optimizer steps: train loss, lr
    logger.epoch(epoch, step, entry)      # after each epoch: the history entry (train / eval metrics)
    logger.finish(record)                 # once, whatever the outcome: status, final metrics

`logger=none` (default) does nothing and costs nothing (the runner only reads a loss value, a host
sync, when `wants_step` says so). `logger=wandb` logs to Weights & Biases, grouped by `group_id` (one
table cell = one W&B group), `WANDB_MODE=offline` (the default here) writes under
`<results>/wandb/` for a later `wandb sync`. Loggers never change what is trained: `logger` is not
part of `run_id`.

`progress(iterable, ...)` (core.py, importable from here too): a tqdm bar on stderr, silent when
stderr is not a terminal (CI, SLURM logs).
"""

from __future__ import annotations

import math

# progress lived here before core.py: still importable from here
from core import ConfigError, progress  # noqa: F401


def flatten(entry: dict, prefix: str = "") -> dict[str, float]:
    """{"eval": {"validation": {"acc": .5}}} -> {"eval/validation/acc": .5}; finite numbers only."""
    out = {}
    for k, v in entry.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[key] = float(v)
    return out


class Logger:
    """Does nothing (logger=none)."""

    every_n_steps: int = 0

    def wants_step(self, step: int) -> bool:
        return self.every_n_steps > 0 and step % self.every_n_steps == 0

    def start(self, record: dict) -> None:
        pass

    def step(self, step: int, values: dict[str, float]) -> None:
        pass

    def epoch(self, epoch: int, step: int, entry: dict) -> None:
        pass

    def finish(self, record: dict) -> None:
        pass


class WandbLogger(Logger):
    """Weights & Biases: config at start, per-step loss, per-epoch metrics, summary and exit code at the end."""

    def __init__(self, cfg: dict):
        try:
            import wandb
        except ImportError as e:
            raise ConfigError("logger=wandb needs the wandb package: pip install '.[wandb]'") from e
        self.wandb, self.cfg, self.run = wandb, cfg, None
        self.every_n_steps = int(cfg.get("every_n_steps") or 0)

    def start(self, record: dict) -> None:
        c = self.cfg
        self.run = self.wandb.init(
            project=c.get("project"),
            entity=c.get("entity"),
            group=record["group_id"],  # one table cell: the seeds of one config
            name=f"{record['method']}-{record['task']}-s{record['seed']}",
            job_type=record.get("task"),
            tags=list(c.get("tags") or []),
            config={**record["config"], "run_id": record["run_id"], "group_id": record["group_id"]},
            dir=c.get("dir"),
            mode=c.get("mode") or "offline",
            reinit="finish_previous",  # a sweep in one process: one W&B run per job
        )

    def step(self, step: int, values: dict[str, float]) -> None:
        if self.run is not None:
            self.run.log(flatten(values), step=step)

    def epoch(self, epoch: int, step: int, entry: dict) -> None:
        if self.run is not None:
            self.run.log({"epoch": epoch, **flatten({k: v for k, v in entry.items() if k not in ("epoch", "step")})},
                         step=step)  # fmt: skip

    def finish(self, record: dict) -> None:
        if self.run is None:
            return
        metrics = record.get("metrics") or {}
        summary = flatten({"final": metrics.get("final") or {}, "params": record.get("params") or {},
                           "diagnostics": {k: v for k, v in (record.get("diagnostics") or {}).items() if k != "modules"}})  # fmt: skip
        self.run.summary.update({**summary, "status": record.get("status"), "run_id": record["run_id"]})
        self.run.finish(exit_code=0 if record.get("status") == "success" else 1)
        self.run = None


LOGGERS = {"none": Logger, "wandb": WandbLogger}


def build(cfg: dict | None) -> Logger:
    cfg = dict(cfg or {})
    name = cfg.get("name", "none")
    if name not in LOGGERS:
        raise ConfigError(f"unknown logger {name!r}; valid: {', '.join(sorted(LOGGERS))}")
    return LOGGERS[name]() if name == "none" else LOGGERS[name](cfg)
