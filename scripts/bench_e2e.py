"""End-to-end wall time: a plain PEFT + eager loop vs this harness's runner, same data, same model.

    python scripts/bench_e2e.py --model tiny_deberta --max-steps 5          # CPU, seconds
    python scripts/bench_e2e.py --runner-overrides "" --runner-overrides "train.compile=false" \\
        --reuse-cache --out results/bench_e2e/h200.json                     # GPU, CoLA 3 epochs

Phases (each a fresh Python process, timed from its start to its exit by this script, so interpreter
start, imports, tokenizer training, model build, tokenization, compile warm-up, training, every
epoch's dev evaluation and the runner's checkpoints / record are all inside the wall time):
  baseline  this file's `baseline()`: a plain loop written the way a PEFT user writes it (HF
            run_glue_no_trainer style): `peft.LoraConfig(r, lora_alpha, target_modules = the model
            YAML's regexes, modules_to_save = its heads)`, torch AdamW (default, not fused; no decay
            on 1-D params), linear warm-up / decay, clip_grad_norm_(1.0), bf16 autocast on CUDA,
            dynamic padding (DataCollatorWithPadding), eval on dev each epoch. No `loss.item()` per
            step: the epoch's loss is summed on the device and read once per epoch.
            Same token ids and same data order as the runner: the task, tokenizer and random model
            come from the repo's builders (tasks/glue.py, models/hf.py) with the same composed
            Hydra config and seed; lr, weight decay, betas, eps, warm-up ratio, batch sizes and
            clipping are read from that config (the task YAML via conf/config.yaml).
  runner    `python run.py model=M task=glue/T method=lora method.rank=R seed=S <overrides>` into a
            fresh results dir, once per `--runner-overrides` string (repeatable; "" = the defaults);
            the record's `timing` is kept beside the outer wall time.
  artifacts with `--reuse-cache`: "cold node, shared artifacts": the first runner variant again with
            seed+1 on an EMPTY TorchInductor cache dir (always a fresh one, even where the user set
            TORCHINDUCTOR_CACHE_DIR), its results dir holding a copy of the first variant's
            `.cache/compile/` (torch's compile-cache artifacts, runners/compile_cache.py; copied before
            the timer starts, as a sweep finds them in its shared results dir): what a job of a
            SLURM array on a fresh node pays once an earlier job saved them.
  warm      with `--reuse-cache`: the first runner variant again with seed+1 on the same
            TorchInductor cache dir (compiled artifacts reused from disk).
Bytecode: every phase runs with PYTHONPYCACHEPREFIX=<work>/pycache (PYTHONDONTWRITEBYTECODE unset), and
an untimed prime (the baseline for one step) fills it first, so the timed baseline imports from
bytecode as the runner phases after it do. A pip-installed environment has its .pyc files; the lent GPU
machine ships torch without them and sets PYTHONDONTWRITEBYTECODE, which there made every phase
compile its imports again (≈ 7 s of a warm runner phase's 44 s). `--no-bytecode-cache`: as the machine is.
TorchInductor caches: TORCHINDUCTOR_CACHE_DIR as the user set it (shared by every phase but the
artifacts one), else a fresh `<work>/inductor_cache/v<i>` per runner variant (a cold start each; the
warm phase reuses v0); the artifacts phase always gets an empty `<work>/inductor_cache/artifacts`.
Output: a table (phase, wall s, train s, samples/s, final dev metric, speed-up = baseline wall /
phase wall) and a JSON file (rewritten atomically after every phase, so a killed run keeps the phases
it finished) with device, versions, date and command. `--max-steps` caps the optimizer steps of every
phase (the last epoch is then partial and still evaluated); `--phase-timeout` kills a phase that runs
too long and records it as timed out.

Random weights (model=deberta_v3_base_random): the science is "same data, same steps", not accuracy;
a dev MCC near 0 is expected for every phase. Timings are measurements of this machine at this
moment: nothing is asserted about them in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import read_json, write_json  # noqa: E402
from tasks.glue import SPECS, tsv_path  # noqa: E402

NOTE = (
    "random weights: the dev metric is near chance (CoLA MCC near 0) for every phase; it shows both "
    "phases trained and evaluated the same task, not model quality"
)


def default_data_dir() -> Path:
    shared = os.environ.get("SHARED_DATA") or str(ROOT.parent / "shared" / "data")
    return Path(shared) / "glue"


def common_overrides(args) -> list[str]:
    """Hydra overrides both phases share (the baseline composes the same config the runner does)."""
    out = [
        f"model={args.model}",
        f"task=glue/{args.task}",
        "method=lora",
        f"method.rank={args.rank}",
        f"task.data_dir={Path(args.data_dir).resolve()}",
        f"train.epochs={args.epochs}",
    ]
    if args.max_steps:
        out.append(f"train.max_steps={args.max_steps}")
    if args.max_train_samples:
        out.append(f"task.max_train_samples={args.max_train_samples}")
    if args.max_eval_samples:
        out.append(f"task.max_eval_samples={args.max_eval_samples}")
    return out


# ---------------------------------------------------------------------------------------------------
# the baseline: a plain PEFT + eager loop (runs in its own process: `--baseline-only OUT`)


def peft_lora_config(resolved: dict, head: dict):
    """Stock PEFT LoRA on the model YAML's target regexes (one alternation; PEFT full-matches module
    names), rank / alpha / dropout from the method config, the model's heads trained in full."""
    from peft import LoraConfig

    from runners.config import heads_for

    model_cfg, method = resolved["model"], resolved["method"]
    heads = [h.replace("\\.", ".") for h in heads_for(model_cfg, head)]  # 'pooler\.dense' -> a name
    return LoraConfig(
        r=method["rank"],
        lora_alpha=method["alpha"],
        lora_dropout=method["dropout"],
        target_modules="|".join(f"(?:{p})" for p in model_cfg["target_modules"]),
        modules_to_save=heads,
    )


def baseline(overrides: list[str], seed: int) -> dict:
    start = time.perf_counter()
    import random

    import numpy as np
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from peft import get_peft_model
    from torch.utils.data import DataLoader
    from transformers import get_linear_schedule_with_warmup

    from models import BUILDERS
    from runners.config import CONF, TRAIN_KEYS, TrainConfig, register_resolvers, typed
    from runners.record import environment
    from tasks import TASKS

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"seed={seed}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    t = typed(TrainConfig, resolved["train"], "train")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"

    # data + model: the repo's builders, so token ids and random weights equal the runner's
    random.seed(seed)  # as runners.train.seed_everything (not imported: it pulls in the runner's stack)
    np.random.seed(seed)
    torch.manual_seed(seed)
    task_mod = TASKS[cfg.task.name]
    task = task_mod.TASK(typed(task_mod.Config, cfg.task, "task", drop=TRAIN_KEYS))
    builder = BUILDERS[cfg.model.builder]
    tokenizer = builder.build_tokenizer(cfg.model, task.texts())
    model = builder.build_model(cfg.model, task.head, tokenizer)
    data = task.build(model, tokenizer)  # tokenizer(..., truncation, max_length) + DataCollatorWithPadding

    model = get_peft_model(model, peft_lora_config(resolved, task.head)).to(device)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for _, p in params if p.ndim > 1], "weight_decay": t.weight_decay},
        {"params": [p for _, p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=t.lr, betas=tuple(t.betas), eps=t.eps
    )
    loader = DataLoader(
        data.train,
        batch_size=t.batch_size,
        shuffle=True,
        collate_fn=data.collate,
        generator=torch.Generator().manual_seed(seed),
    )
    dev_split = next(iter(data.evals))
    dev = DataLoader(data.evals[dev_split], batch_size=t.eval_batch_size, collate_fn=data.collate)
    total_steps = t.max_steps or t.epochs * len(loader)
    epochs = math.ceil(total_steps / len(loader))
    scheduler = get_linear_schedule_with_warmup(optimizer, round(t.warmup_ratio * total_steps), total_steps)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    regression = task.head["num_labels"] == 1

    history, step, seen, train_s, eval_s = [], 0, 0, 0.0, []
    setup_s = time.perf_counter() - start  # imports included (the runner's setup_s starts after them)
    for epoch in range(1, epochs + 1):
        model.train()
        tic = time.perf_counter()
        loss_sum, n = torch.zeros((), device=device), 0
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast():
                loss = model(**batch).loss
            loss.backward()
            if t.max_grad_norm:
                torch.nn.utils.clip_grad_norm_([p for _, p in params], t.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach().float() * len(batch["labels"])
            n += len(batch["labels"])
            step += 1
            if step >= total_steps:
                break
        train_loss = float(loss_sum) / n  # the epoch's one host sync
        train_s += time.perf_counter() - tic
        seen += n

        model.eval()
        eval_tic = time.perf_counter()
        preds, labels = [], []
        with torch.no_grad():
            for batch in dev:
                batch = {k: v.to(device) for k, v in batch.items()}
                with autocast():
                    logits = model(**batch).logits
                preds.append((logits.squeeze(-1) if regression else logits.argmax(-1)).float().cpu())
                labels.append(batch["labels"].cpu())
        scores = task.metrics(torch.cat(preds), torch.cat(labels))
        eval_s.append(time.perf_counter() - eval_tic)
        history.append({"epoch": epoch, "step": step, "train_loss": train_loss, "eval": {dev_split: scores}})
        print(
            f"baseline epoch {epoch}/{epochs} step {step}: train loss {train_loss:.4f} | {scores}", flush=True
        )

    return {
        "steps": step,
        "train_s": train_s,
        "eval_s": eval_s,
        "setup_s": setup_s,
        "samples_per_s": seen / train_s if train_s else None,
        "inner_wall_s": time.perf_counter() - start,
        "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "main_metric": task.main_metric,
        "final_dev": history[-1]["eval"][dev_split],
        "final_train_loss": history[-1]["train_loss"],
        "history": history,
        "trainable": sum(p.numel() for _, p in params),
        "precision": "bf16 autocast" if cuda else "fp32",
        "env": environment(device),
        "tokenizer_size": len(tokenizer),
        "vocab_rows": model.get_input_embeddings().weight.shape[0],
    }


# ---------------------------------------------------------------------------------------------------
# the driver


def plan_phases(args, work: Path) -> list[dict]:
    """What to run, in order: name, kind, seed, overrides, TorchInductor cache dir, results dir."""
    user_cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    variants = args.runner_overrides if args.runner_overrides is not None else [""]
    phases = [{"name": "baseline (PEFT eager)", "kind": "baseline", "seed": args.seed, "overrides": []}]
    for i, text in enumerate(variants):
        over = shlex.split(text)
        phases.append(
            {
                "name": f"runner {' '.join(over) or '(defaults)'}",
                "kind": "runner",
                "seed": args.seed,
                "overrides": over,
                "cache": user_cache or str(work / "inductor_cache" / f"v{i}"),
                "results_dir": str(work / f"results_v{i}"),
            }
        )
    if args.reuse_cache:
        first = phases[1]
        phases.append(
            {
                **first,
                "name": f"{first['name']} cold + shared artifacts (seed {args.seed + 1})",
                "kind": "runner_artifacts",
                "seed": args.seed + 1,
                "cache": str(work / "inductor_cache" / "artifacts"),  # empty: a fresh node
                "results_dir": str(work / "results_v0_artifacts"),
                "artifacts_from": first["results_dir"],
            }
        )
        phases.append(
            {
                **first,
                "name": f"{first['name']} warm cache (seed {args.seed + 1})",
                "kind": "runner_warm",
                "seed": args.seed + 1,
                "results_dir": str(work / "results_v0_warm"),
            }
        )
    return phases


def _files(path: str | None) -> int:
    if not path or not Path(path).is_dir():
        return 0
    return sum(1 for p in Path(path).rglob("*") if p.is_file())


def _run(cmd: list[str], env: dict, log, timeout: float | None) -> int | str:
    """The child's exit code, or "timeout" (SIGUSR1: run.py prints its stacks into the log; then SIGTERM:
    the runner checkpoints and stops; SIGKILL 30 s later)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        if cmd[1].endswith("run.py"):
            proc.send_signal(signal.SIGUSR1)
            time.sleep(2)
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return "timeout"


def child_env(work: Path, bytecode_cache: bool) -> dict:
    """The phases' environment: with `bytecode_cache`, imports read and write <work>/pycache."""
    env = dict(os.environ)
    if bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


def prime(args, work: Path) -> dict:
    """Untimed: the baseline for one step, so its imports are bytecode when the timed phases start."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--baseline-only", str(work / "prime.json")]
    over = [o for o in common_overrides(args) if not o.startswith("train.max_steps=")]
    cmd += ["--seed", str(args.seed), "--", *over, "train.max_steps=1"]
    start = time.perf_counter()
    with open(work / "prime.log", "w") as f:
        rc = _run(cmd, child_env(work, True), f, timeout=600)
    if rc != 0:
        sys.exit(f"error: the bytecode prime failed (rc {rc}); see {work / 'prime.log'}")
    return {"cmd": shlex.join(cmd), "wall_s": time.perf_counter() - start, "pycache": str(work / "pycache")}


def run_phase(phase: dict, args, work: Path, timeout: float | None) -> dict:
    """Runs one phase as a subprocess; returns its row (wall time measured here, from spawn to exit)."""
    slug = phase["kind"] + ("" if phase["kind"] == "baseline" else "_" + Path(phase["results_dir"]).name)
    log = work / f"{slug}.log"
    env = child_env(work, args.bytecode_cache)
    if phase.get("cache"):
        env["TORCHINDUCTOR_CACHE_DIR"] = phase["cache"]
    if phase["kind"] == "baseline":
        inner = work / "baseline.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--baseline-only", str(inner)]
        cmd += ["--seed", str(phase["seed"]), "--", *common_overrides(args)]
    else:
        cmd = [sys.executable, str(ROOT / "run.py"), *common_overrides(args), f"seed={phase['seed']}"]
        cmd += [f"paths.results_dir={phase['results_dir']}", *phase["overrides"]]
    row = {k: v for k, v in phase.items()}
    if phase.get("artifacts_from"):  # untimed: a sweep finds them in its results dir
        source = Path(phase["artifacts_from"], ".cache", "compile")
        files = sorted(p.name for p in source.glob("*.bin"))
        if not files:
            row.update(rc="no_artifacts", wall_s=None, error=f"no compile-cache artifacts in {source}")
            print(f"   SKIPPED: {row['error']}", flush=True)
            return row
        shutil.copytree(source, Path(phase["results_dir"], ".cache", "compile"), dirs_exist_ok=True)
        row["artifacts"] = files
    row.update(cmd=shlex.join(cmd), log=str(log), cache_files_before=_files(phase.get("cache")))
    print(f"== {phase['name']}\n   {row['cmd']}", flush=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        rc = _run(cmd, env, f, timeout)
    row.update(wall_s=time.perf_counter() - start, rc=rc, cache_files_after=_files(phase.get("cache")))
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        row["error"] = " | ".join(tail)
        print(f"   FAILED (rc {rc}): {row['error']}", flush=True)
        return row
    if phase["kind"] == "baseline":
        inner = read_json(work / "baseline.json")
        row.update({k: v for k, v in inner.items() if k != "env"})
        row["_env"] = inner["env"]
        return row
    records = sorted(Path(phase["results_dir"], "runs").glob("*.json"))
    rec = read_json(records[0]) if len(records) == 1 else None
    if rec is None or rec.get("status") != "success":
        row.update(rc="no_record", error=f"expected one success record in {phase['results_dir']}/runs")
        return row
    m, timing = rec["metrics"], rec["timing"]
    row.update(
        steps=timing.get("steps"),
        train_s=timing.get("train_s"),
        samples_per_s=timing.get("samples_per_s"),
        main_metric=m["main_metric"],
        final_dev=m["final"][m["selection_split"]],
        final_train_loss=m["history"][-1]["train_loss"],
        history=m["history"],
        trainable=rec["params"]["trainable"],
        precision=rec["env"].get("precision"),
        timing=timing,
        record=str(records[0]),
        compile_cache=rec["env"].get("fast_path", {}).get("compile_cache"),  # loaded / saved, which file
    )
    row["_env"] = rec["env"]
    return row


def _fmt(x, spec: str) -> str:
    return format(x, spec) if isinstance(x, int | float) else "-"


def table(rows: list[dict]) -> str:
    head = f"{'phase':<52}{'wall s':>9}{'train s':>9}{'samples/s':>11}{'steps':>7}{'dev':>14}{'loss':>8}{'×base':>7}"
    lines = [head]
    base = rows[0].get("wall_s") if rows and rows[0]["kind"] == "baseline" and rows[0]["rc"] == 0 else None
    for r in rows:
        dev = (
            f"{r['main_metric']} {r['final_dev'][r['main_metric']]:.4f}" if "final_dev" in r else str(r["rc"])
        )
        speed = base / r["wall_s"] if base and r["rc"] == 0 else None
        lines.append(
            f"{r['name'][:51]:<52}{_fmt(r['wall_s'], '.1f'):>9}{_fmt(r.get('train_s'), '.1f'):>9}"
            f"{_fmt(r.get('samples_per_s'), '.0f'):>11}{_fmt(r.get('steps'), 'd'):>7}{dev:>14}"
            f"{_fmt(r.get('final_train_loss'), '.4f'):>8}{_fmt(speed, '.2f'):>7}"
        )
    return "\n".join(lines)


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="cola", choices=sorted(SPECS), help="GLUE task (default cola)")
    p.add_argument("--model", default="deberta_v3_base_random", help="conf/model/<name>.yaml")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max-steps", type=int, default=None, help="cap on optimizer steps (every phase)")
    p.add_argument("--max-train-samples", type=int, default=None)
    p.add_argument("--max-eval-samples", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=str(default_data_dir()), help="folder of GLUE TSV dirs")
    p.add_argument(
        "--runner-overrides",
        action="append",
        default=None,
        help='one runner variant, e.g. "train.compile=false" ("" = defaults); repeatable',
    )
    p.add_argument(
        "--reuse-cache",
        action="store_true",
        help="rerun the first variant (seed+1): on an empty inductor dir with its compile artifacts, then on its cache",
    )
    p.add_argument(
        "--no-bytecode-cache",
        dest="bytecode_cache",
        action="store_false",
        help="phases compile their imports as this machine's Python settings say (no prime)",
    )
    p.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the baseline phase")
    p.add_argument("--phase-timeout", type=float, default=None, help="seconds before a phase is stopped")
    p.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="seconds for all phases together: a phase is stopped when it runs out, later ones skipped",
    )
    p.add_argument("--out", type=Path, default=None, help="JSON path (default results/bench_e2e/<date>.json)")
    p.add_argument("--work", type=Path, default=None, help="logs, results, caches (default <out>.work/)")
    p.add_argument("--baseline-only", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)  # --baseline-only's config
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.baseline_only:  # the child process of the baseline phase
        write_json(args.baseline_only, baseline(args.overrides, args.seed))
        return 0
    train_file = tsv_path(args.data_dir, args.task, "train")
    if not train_file.is_file():
        sys.exit(f"error: no {train_file}; set --data-dir to the folder holding the GLUE TSV dirs")
    if not (ROOT / "conf" / "model" / f"{args.model}.yaml").is_file():
        sys.exit(f"error: no conf/model/{args.model}.yaml; pick --model from conf/model/")
    now = dt.datetime.now(dt.timezone.utc)
    out = args.out or ROOT / "results" / "bench_e2e" / f"{now:%Y-%m-%dT%H%M%S}.json"
    out = out.resolve()
    work = (args.work or out.with_suffix(".work")).resolve()  # children run in the repo root
    if work.exists() and any(work.iterdir()):
        sys.exit(f"error: work dir {work} is not empty; remove it or pass --work NEW_DIR")
    work.mkdir(parents=True, exist_ok=True)
    phases = plan_phases(args, work)
    if not args.baseline:
        phases = phases[1:]
    command = [sys.executable, sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    result = {
        "date": now.isoformat(timespec="seconds"),
        "command": shlex.join(command),
        "task": f"glue/{args.task}",
        "model": args.model,
        "common_overrides": common_overrides(args),
        "work": str(work),
        "torchinductor_cache_dir_from_env": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
        "triton_cache_dir_from_env": os.environ.get("TRITON_CACHE_DIR"),  # unset: under the inductor dir
        "budget_s": args.budget_s,
        "speedup": "baseline wall_s / phase wall_s (each phase's process from spawn to exit)",
        "note": NOTE,
        "phases": [],
    }
    # untimed: the first timed phase should not pay for a cold disk cache of the libraries alone
    subprocess.run([sys.executable, "-c", "import torch, transformers, peft, accelerate, hydra"], check=True)
    if args.bytecode_cache:
        result["bytecode_prime"] = prime(args, work)
        print(f"== bytecode prime (untimed): {result['bytecode_prime']['wall_s']:.1f} s", flush=True)
    t0 = time.perf_counter()
    for phase in phases:
        left = None if args.budget_s is None else args.budget_s - (time.perf_counter() - t0)
        if left is not None and left <= 1:
            result["phases"].append({**phase, "rc": "skipped", "wall_s": None, "error": "out of --budget-s"})
            write_json(out, result)
            continue
        limits = [x for x in (args.phase_timeout, left) if x is not None]
        row = run_phase(phase, args, work, min(limits) if limits else None)
        env = row.pop("_env", None)
        if env and "env" not in result:
            result["env"] = env
            result["device"] = env.get("device")
            result["versions"] = {"python": env.get("python"), **(env.get("packages") or {})}
        result["phases"].append(row)
        base = result["phases"][0]
        if base["kind"] == "baseline" and base["rc"] == 0 and row["rc"] == 0:
            row["speedup_vs_baseline"] = base["wall_s"] / row["wall_s"]
        write_json(out, result)
    print(table(result["phases"]))
    print(f"({NOTE})\nwrote {out}")
    return 0 if all(r["rc"] == 0 for r in result["phases"]) else 1


if __name__ == "__main__":
    sys.exit(main())
