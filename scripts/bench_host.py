"""Host time of the runner's training step, part by part, against a bare loop (issue 28, goal 3).

    python scripts/bench_host.py                               # CPU: tiny DeBERTa, MRPC, batch 32
    python scripts/bench_host.py --device cuda --steps 300     # GPU: the same rows
    python scripts/bench_host.py --profile 25                  # also cProfile's top 25 functions

The model is DeBERTa-v3-base's structure (12 layers, the same 72 LoRA modules, so per-module costs
show) at a width so small that its arithmetic is negligible (`--hidden 8`); the batches are the
runner's own (real MRPC text, a WordPiece vocabulary trained on it, batch 32, ≤ 128 tokens). What is
left is host work: Python, op dispatch, the autograd engine, the optimizer's loops.

Rows, µs per optimizer step (mean over `--steps` steps after `--warmup`):
  runner        `runners.train._Loop.train_epoch`, the real loop, with the real parts (`runners.parts.build`)
  <part>        the share of that loop spent in each part, timed by wrapping the callables the loop
                calls (data = the DataLoader's next(), i.e. sampling + collate; forward = the task's
                forward; hooks = the method's loss terms and before/after-step hooks; ...). `rest` is
                the loop's own code between them: zero_grad, the epoch sums, the finite check, the
                progress bar, the step counters
  bare          `model(**batch).loss.backward(); opt.step(); opt.zero_grad()`, the same model and
                batches (collated and moved to the device beforehand), plain AdamW: the floor
Times are this process's CPU time on CPU (robust to other processes sharing the cores) and wall time
on CUDA (the host's time to queue the step; the GPU is idle most of it). On CUDA the runner's
"forward" and "backward" include their kernel launches. One thread (`torch.set_num_threads(1)`).
Nothing is asserted about these numbers in tests; they are indicative only on CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402

from core import atomic_write  # noqa: E402
from runners.config import CONF, register_resolvers  # noqa: E402

PARTS = ("data", "to_device", "forward", "backward", "hooks", "clip", "optimizer", "scheduler")


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--task", default="glue/mrpc")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "glue"))
    ap.add_argument("--method", default="lora")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=8, help="hidden size (2 heads); 8: arithmetic negligible")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--override", action="append", default=[], help="extra config override (repeatable)")
    ap.add_argument(
        "--profile", type=int, default=0, help="print cProfile's top N functions of the runner rows"
    )
    ap.add_argument("--out", help="write the rows as JSON here")
    return ap.parse_args(argv)


def config(args):
    register_resolvers()
    GlobalHydra.instance().clear()
    h = args.hidden
    overrides = [
        "model=tiny_deberta",
        f"task={args.task}",
        f"task.data_dir={args.data_dir}",
        f"method={args.method}",
        f"device={args.device}",
        f"train.batch_size={args.batch_size}",
        "train.checkpoint=false",
        f"model.config.num_hidden_layers={args.layers}",
        f"model.config.hidden_size={h}",
        f"model.config.intermediate_size={2 * h}",
        f"model.config.num_attention_heads={min(2, h)}",
        *args.override,
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


class Clock:
    """Accumulated host seconds per part; `wrap(obj, name, part)` times `obj.name(...)` into `part`."""

    def __init__(self, now):
        self.now, self.total = now, dict.fromkeys(PARTS, 0.0)

    def wrap(self, obj, name, part):
        fn = getattr(obj, name)

        def timed(*a, **k):
            tic = self.now()
            try:
                return fn(*a, **k)
            finally:
                self.total[part] += self.now() - tic

        setattr(obj, name, timed)

    def loader(self, loader):
        clock = self

        class Timed:
            def __len__(self):
                return len(loader)

            def __iter__(self):
                it = iter(loader)
                while True:
                    tic = clock.now()
                    try:
                        batch = next(it)
                    except StopIteration:
                        return
                    finally:
                        clock.total["data"] += clock.now() - tic
                    yield batch

        return Timed()

    @contextlib.contextmanager
    def context(self, obj, name, part):
        """`obj.name()` returns a context manager: its enter and exit are timed into `part`."""
        fn = getattr(obj, name)

        @contextlib.contextmanager
        def timed(*a, **k):
            tic = self.now()
            with fn(*a, **k) as v:
                self.total[part] += self.now() - tic
                yield v
                tic = self.now()
            self.total[part] += self.now() - tic

        setattr(obj, name, timed)
        yield


def runner_parts(cfg, device):
    from runners.parts import build
    from runners.train import _spec

    spec, _ = _spec(cfg, None)
    record = {"env": {}}
    return build(spec, record), record


def run_steps(loop, n: int) -> None:
    """`n` more optimizer steps of the real loop, epoch after epoch."""
    p, progress = loop.parts, loop.progress
    p.total_steps = progress.step + n
    while progress.step < p.total_steps:
        loop.train_epoch(progress.epoch, None)
        progress.batch = 0
        progress.epoch += 1


def bench_runner(cfg, args, now, sync):
    from runners.checkpoint import Checkpoint
    from runners.logging import Logger
    from runners.state import Progress
    from runners.train import _Loop, _Signals

    parts, record = runner_parts(cfg, args.device)
    clock = Clock(now)
    parts.loader = clock.loader(parts.loader)
    clock.wrap(parts, "to_device", "to_device")
    clock.wrap(parts.task, "forward", "forward")
    new = hasattr(parts, "backward")  # the loop calls Parts.backward / clip (after issue 28's cut)
    clock.wrap(parts if new else parts.acc, "backward", "backward")
    for name in ("autograd_loss", "add_loss_grads", "before_step", "after_step"):
        if getattr(parts.method, name, None) is not None:
            clock.wrap(parts.method, name, "hooks")
    clock.wrap(parts, "clip", "clip") if new else clock.wrap(parts.acc, "clip_grad_norm_", "clip")
    clock.wrap(parts.optimizer, "step", "optimizer")
    clock.wrap(parts.scheduler, "step", "scheduler")
    check_every = parts.t.check_every or (1 if parts.acc.device.type == "cpu" else 50)
    checkpoint = Checkpoint(Path("/nonexistent"), parts, enabled=False)
    loop = _Loop(parts, Progress(), checkpoint, _Signals(), Logger(), check_every)
    run_steps(loop, args.warmup)
    sync()
    clock.total = dict.fromkeys(PARTS, 0.0)
    profiler = cProfile.Profile() if args.profile else None
    tic = now()
    with profiler or contextlib.nullcontext():
        run_steps(loop, args.steps)
        sync()
    total = now() - tic
    rows = {"runner": total}
    rows.update(clock.total)
    rows["rest"] = total - sum(clock.total.values())
    if profiler:
        stats = pstats.Stats(profiler).sort_stats("tottime")
        stats.print_stats(args.profile)
    return parts, rows, record


def bench_bare(parts, args, now, sync):
    """The floor: the same model and batches, the three-line loop."""
    model = parts.eval_model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    loader = parts.loader
    batches = []
    while len(batches) < args.warmup + args.steps:
        batches.extend(parts.to_device(b) for b in loader)
    autocast = parts.acc.autocast
    for i, batch in enumerate(batches[: args.warmup + args.steps]):
        if i == args.warmup:
            sync()
            tic = now()
        with autocast():
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    sync()
    return now() - tic


def main(argv=None):
    args = parse(argv)
    torch.set_num_threads(1)
    cuda = args.device.startswith("cuda")
    now = time.perf_counter if cuda else time.process_time
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    cfg = config(args)
    parts, rows, record = bench_runner(cfg, args, now, sync)
    rows["bare"] = bench_bare(parts, args, now, sync)
    us = {k: v / args.steps * 1e6 for k, v in rows.items()}
    print(
        f"\nµs per optimizer step, {args.steps} steps after {args.warmup}; {args.device}, "
        f"{args.layers} layers × hidden {args.hidden}, {args.method}, {args.task} batch {args.batch_size}"
    )
    print(f"{'row':<12}{'µs/step':>10}{'% runner':>10}")
    for k, v in us.items():
        print(f"{k:<12}{v:>10.0f}{100 * v / us['runner']:>9.1f}%")
    print(f"runner / bare: {us['runner'] / us['bare']:.2f}×")
    if args.out:
        info = {
            "args": vars(args),
            "device": torch.cuda.get_device_name() if cuda else "cpu",
            "torch": torch.__version__,
            "fast_path": record["env"].get("fast_path"),
            "us_per_step": us,
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        }
        text = json.dumps(info, indent=1) + "\n"
        atomic_write(Path(args.out), lambda tmp: Path(tmp).write_text(text))
    return us


if __name__ == "__main__":
    main()
