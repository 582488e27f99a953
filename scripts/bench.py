"""Training-step benchmark: full FT, PEFT-eager LoRA (the baseline), and this harness's low-rank methods.

    python scripts/bench.py --workload tiny                  # CPU, seconds (CI-sized)
    python scripts/bench.py --workload deberta --workload gpt2 --out results/bench/h100.json   # GPU
    python scripts/bench.py --workload deberta --rows peft_lora,lora,lora@compiled,rm_lora@compiled

A row is `name` or `name@variant`: `@fused` = eager with fused AdamW; `@compiled` = torch.compile of
the model (`--compile-mode`, default "default") and of the method's loss terms, fused AdamW, clipping
and hooks eager; `@graphs` = the same in mode "reduce-overhead" (CUDA graphs), which is the runner's
`train.compile=true train.compile_scope=model`; `@blocks` = CUDA graphs of the repeated layers only
(`fastpath.CompiledBlocks`), the runner's `train.compile=true` default. `--compile` alone compiles
every row (the old switch). `--profile DIR` writes a torch.profiler table (top kernels by device
time, 3 steps) per row into DIR.

Workloads (random-init real shapes, built from transformers config classes: no download):
  deberta  DeBERTa-v3-base, batch 32 × 128, R = 8 on all six linear types (conf/model/deberta_v3_base)
  gpt2     GPT-2 medium, batch 8 × 512, r = 4 on q and v inside c_attn (conf/model/gpt2_medium, qv);
           PEFT LoRA cannot split c_attn and adapts the whole c_attn (r = 4)
  tiny     both architectures at toy widths (hidden 64) but their real depth (12 / 24 layers: the same
           72 / 48 adapted modules, so per-module overheads show), batch 8 × 32: CPU, seconds

Every row times the runner's step sequence in a plain eager loop (autocast bf16 on CUDA):
    loss (+ method.autograd_loss()) → backward → method.add_loss_grads() → clip_grad_norm_(1.0) →
    method.before_step →
    AdamW.step → method.after_step → zero_grad(set_to_none=True)
with no host sync inside the loop; `--warmup` untimed steps (includes compile time with `--compile`,
reported as warmup_s), then `--steps` timed steps between two `torch.cuda.synchronize()` on GPU.
Rows: full_ft, peft_lora (installed `peft`, the baseline of the ratios), dora and pissa (stock PEFT
LoraConfig(use_dora=True) / init_lora_weights="pissa", peft_lora's targets and settings), lora, r_lora, gm_lora,
rm_lora, rm_lora_strict, loda, and `<method>_plain` = the same method with `method.fast=false` (the
per-module reference loops the fast path replaced). Output: a table on stdout and a JSON file
(ms/step, tokens/s, peak memory on CUDA, ratios vs peft_lora and vs our lora, device, versions, date).
Ratios use wall time on CUDA and this process's CPU time on CPU (`cpu_ms_per_step`: robust to other
processes sharing the cores); each row keeps its fastest of `--repeats` interleaved rounds.
Timings are measurements of this machine at this moment: nothing is asserted about them in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from adapters import METHODS  # noqa: E402
from runners import fastpath  # noqa: E402
from runners.config import CONF, register_resolvers, typed  # noqa: E402

ROWS = [
    "full_ft",
    "peft_lora",
    "dora",
    "pissa",
    "lora",
    "r_lora",
    "r_lora_plain",
    "gm_lora",
    "gm_lora_plain",
    "rm_lora",
    "rm_lora_plain",
    "rm_lora_strict",
    "rm_lora_strict_plain",
    "loda",
    "loda_plain",
]

WORKLOADS = {
    "deberta": {
        "arch": "deberta",
        "model": "deberta_v3_base",
        "batch": 32,
        "seq": 128,
        "rank": 8,
        "size": "base",
    },
    "gpt2": {"arch": "gpt2", "model": "gpt2_medium", "batch": 8, "seq": 512, "rank": 4, "size": "medium"},
    "tiny_deberta": {
        "arch": "deberta",
        "model": "deberta_v3_base",
        "batch": 8,
        "seq": 32,
        "rank": 8,
        "size": "tiny",
    },
    "tiny_gpt2": {"arch": "gpt2", "model": "gpt2_medium", "batch": 8, "seq": 32, "rank": 4, "size": "tiny"},
}
ALIASES = {"tiny": ["tiny_deberta", "tiny_gpt2"]}


def model_config(arch: str, size: str):
    from transformers import DebertaV2Config, GPT2Config

    if arch == "deberta":  # microsoft/deberta-v3-base's config.json, written out
        dims = {"base": (768, 12, 12, 3072, 128100), "tiny": (64, 12, 4, 256, 1000)}[size]
        hidden, layers, heads, inter, vocab = dims
        return DebertaV2Config(
            vocab_size=vocab,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=inter,
            max_position_embeddings=512,
            type_vocab_size=0,
            relative_attention=True,
            position_buckets=256,
            norm_rel_ebd="layer_norm",
            share_att_key=True,
            pos_att_type=["p2c", "c2p"],
            layer_norm_eps=1e-7,
            max_relative_positions=-1,
            position_biased_input=False,
            pooler_hidden_size=hidden,
            num_labels=2,
            pad_token_id=0,
        )
    dims = {"medium": (1024, 24, 16, 50257), "tiny": (64, 24, 4, 1000)}[size]
    d, layers, heads, vocab = dims
    return GPT2Config(
        n_embd=d,
        n_layer=layers,
        n_head=heads,
        vocab_size=vocab,
        n_positions=1024,
        num_labels=2,
        pad_token_id=0,
        use_cache=False,  # as models/hf.py: no KV cache while training (it recompiles compiled layers)
    )


def build_model(arch: str, size: str, device: torch.device):
    from transformers import DebertaV2ForSequenceClassification, GPT2ForSequenceClassification

    cls = DebertaV2ForSequenceClassification if arch == "deberta" else GPT2ForSequenceClassification
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: random init of 184M / 355M weights is slow on CPU
        return cls(model_config(arch, size)).train()


def compose_cfg(model: str, method: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"model={model}", f"method={method}", *overrides])


def method_for(row: str, workload: dict, model, device):
    """(model, trainable params, method or None) for one row."""
    if row == "full_ft":
        return model, [p for p in model.parameters() if p.requires_grad], None
    cfg = compose_cfg(workload["model"], "lora", [])
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    heads = model_cfg["head_modules"]
    heads = heads.get("sequence_classification", []) if isinstance(heads, dict) else heads
    if row in PEFT_ROWS:
        return peft_lora(model, workload, model_cfg, heads, **PEFT_ROWS[row])
    name, over = row.removesuffix("_plain"), []
    if row.endswith("_plain"):
        over.append("method.fast=false")
    if name == "rm_lora_strict":
        name, over = "rm_lora", [*over, "method.mask_mode=strict"]
    over.append(f"method.rank={workload['rank']}")
    cfg = compose_cfg(workload["model"], name, over)
    method_cfg = typed(METHODS[cfg.method.name].Config, cfg.method, "method")
    method = METHODS[cfg.method.name].apply(
        model, method_cfg, list(model_cfg["target_modules"]), heads, torch.Generator().manual_seed(0)
    )
    return method.model, [p for _, p in method.optimizer_parameters()], method


# Stock PEFT rows: LoraConfig keyword arguments on top of peft_lora's (same targets, r, alpha, head).
# DoRA (Liu et al. 2024) adds a trained magnitude vector and a column-norm per forward; PiSSA (Meng et
# al. 2024) only changes the init (A, B from the top-r SVD of W, W replaced by its residual), so its
# step should cost what peft_lora's does: a check on the row, not an assumption.
PEFT_ROWS = {
    "peft_lora": {},
    "dora": {"use_dora": True},
    "pissa": {"init_lora_weights": "pissa"},  # exact SVD at setup (untimed); "pissa_niter_K" is the fast one
}


def peft_lora(model, workload, model_cfg, heads, **extra):
    """Stock PEFT LoRA: the same regexes (GPT-2: the whole c_attn), alpha/r as ours, head trained;
    `extra`: more LoraConfig keyword arguments (the dora / pissa rows)."""
    from peft import LoraConfig, get_peft_model

    if workload["arch"] == "gpt2":
        targets = r".*\.attn\.c_attn"
        save = ["score"]
    else:
        targets = "|".join(f"(?:{t})" for t in model_cfg["target_modules"])
        save = ["pooler", "classifier"]
    del heads  # PEFT names modules_to_save by module name, not by regex
    r = workload["rank"]
    config = LoraConfig(
        r=r, lora_alpha=2 * r, target_modules=targets, modules_to_save=save, lora_dropout=0.0, **extra
    )
    peft_model = get_peft_model(model, config)
    return peft_model, [p for p in peft_model.parameters() if p.requires_grad], None


def run_row(row: str, workload: dict, args, device: torch.device) -> dict:
    name, _, variant = row.partition("@")
    model = build_model(workload["arch"], workload["size"], device)
    model, params, method = method_for(name, workload, model, device)
    compiled = variant in ("compiled", "graphs", "blocks") or args.compile
    graphs = "reduce-overhead"
    mode = {"compiled": args.compile_mode, "graphs": graphs, "blocks": graphs}.get(variant, "default")
    # the runner's compile (fastpath: device-less constants on the GPU, tracing_config), static shapes
    forward, scope = model, contextlib.nullcontext
    if compiled:
        # each row builds a new model: without a reset, the layers' code collects one cache entry per
        # row and, past Dynamo's recompile limit (8), runs eager (seen: a third --repeats round at
        # eager speed on the H200), as the runner does per run
        torch._dynamo.reset()
        where = "blocks" if variant == "blocks" else "model"
        forward, scope, _ = fastpath.compile_forward(model, where, mode, device, dynamic=None)
    extra_loss = method.autograd_loss if method is not None else None
    if compiled and method is not None and method.autograd_terms:
        extra_loss = fastpath.compile(method.autograd_loss, mode, device, dynamic=None)
    fused = variant in ("fused", "compiled", "graphs", "blocks") and device.type == "cuda"
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, fused=fused or None)
    cudagraphs = compiled and fastpath.uses_cudagraphs(mode)
    g = torch.Generator().manual_seed(1)
    vocab = model_config(workload["arch"], workload["size"]).vocab_size
    batch = {
        "input_ids": torch.randint(1, vocab, (workload["batch"], workload["seq"]), generator=g).to(device),
        "attention_mask": torch.ones(workload["batch"], workload["seq"], dtype=torch.long, device=device),
        "labels": torch.randint(0, 2, (workload["batch"],), generator=g).to(device),
    }
    cuda = device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext

    def step(i: int) -> torch.Tensor:
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(), scope():
            loss = forward(**batch).loss
            reg = extra_loss() if extra_loss is not None else None
            total = loss if reg is None else loss + reg.to(loss.dtype)
        total.backward()
        analytic = method.add_loss_grads() if method is not None else None
        if analytic is not None:
            total = total.detach() + analytic
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if method is not None:
            method.before_step(optimizer, i)
        optimizer.step()
        if method is not None:
            method.after_step(optimizer, i)
        model.zero_grad(set_to_none=True)
        return total.detach().clone()  # CUDA graphs overwrite their outputs on the next replay

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for i in range(1, args.warmup + 1):
        last = step(i)
    sync()
    warmup_s = time.perf_counter() - start
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(args.warmup + 1, args.warmup + args.steps + 1):
        last = step(i)
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    cpu_seconds = (time.process_time() - cpu_start) / args.steps
    loss = float(last)  # one host read, after timing
    if args.profile is not None:
        profile_row(row, workload, step, args, sync)
    out = {
        "row": row,
        "ms_per_step": 1000 * seconds,
        # this process's CPU time per step: on a shared CPU machine it ignores time spent waiting for a core
        "cpu_ms_per_step": 1000 * cpu_seconds,
        "tokens_per_s": workload["batch"] * workload["seq"] / seconds,
        "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "warmup_s": warmup_s,
        "trainable": sum(p.numel() for p in params),
        "final_loss": loss,
        "compiled": mode if compiled else None,
        "fused_adamw": fused,
    }
    if args.parts and method is not None and row in PARTS:  # eager rows only
        out["parts"] = time_parts(method, optimizer, step, args, sync)
    return out  # the model and optimizer go with this frame (the caller collects)


def profile_row(row: str, workload: dict, step, args, sync) -> None:
    """torch.profiler over 3 steps: the top ops by device (CPU: host) time, as a text table."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available() and args.device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for i in range(3):
            step(10_000 + i)
        sync()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    args.profile.mkdir(parents=True, exist_ok=True)
    text = prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60)
    out = args.profile / f"{workload['model']}_{row.replace('@', '_')}.txt"
    out.write_text(f"{row} on {workload['model']}: 3 steps\n{text}\n")


# GLUE train sizes (official splits; MNLI/QQP/QNLI train are not in ../shared/data, sizes from GLUE)
GLUE_TRAIN = {
    "mnli": 392702,
    "qqp": 363846,
    "qnli": 104743,
    "sst2": 67349,
    "cola": 8551,
    "stsb": 5749,
    "mrpc": 3668,
    "rte": 2490,
    "wnli": 635,
}


def table1_steps() -> dict[str, int]:
    """Optimizer steps per GLUE task for one run: epochs (conf/task/glue/<task>.yaml) × ⌈n / batch⌉."""
    steps = {}
    base = OmegaConf.load(CONF / "task" / "glue" / "_glue.yaml")
    for task, n in GLUE_TRAIN.items():
        cfg = OmegaConf.merge(base, OmegaConf.load(CONF / "task" / "glue" / f"{task}.yaml"))
        steps[task] = int(cfg.epochs) * -(-n // int(cfg.batch_size))
    return steps


def table1_estimate(
    rows: list[dict], seeds: int = 3, table_rows: int = 11, eval_overhead: float = 0.03
) -> dict:
    """H100-hours of RM-LoRA Table 1 (9 GLUE tasks × `table_rows` rows × `seeds` seeds) from ms/step.

    hours = seeds · Σ_rows ms(row) · Σ_tasks steps(task) · (1 + eval_overhead) / 3.6e6. Rows of the table
    that this benchmark does not time (e.g. AdaLoRA, SoRA, adapters) are costed at PEFT LoRA's step;
    every step is costed at the benchmark's fixed 32 × 128 shape (dynamic padding makes real steps
    shorter); eval ≈ 3% (one forward pass over the dev sets per epoch, ~1/3 of a training step per batch).
    """
    steps = table1_steps()
    per_run = sum(steps.values())
    ms = {r["row"]: r["ms_per_step"] for r in rows}
    timed = [m for m in ("full_ft", "lora", "r_lora", "gm_lora", "rm_lora") if m in ms]
    fill = ms.get("peft_lora", max(ms.values()))
    row_ms = [ms[m] for m in timed] + [fill] * (table_rows - len(timed))
    hours = seeds * per_run * sum(row_ms) * (1 + eval_overhead) / 3.6e6
    return {
        "steps_per_run": per_run,
        "steps_by_task": steps,
        "runs": seeds * table_rows * len(steps),
        "rows_timed": timed,
        "rows_at_peft_lora_ms": table_rows - len(timed),
        "assumed_ms_untimed": fill,
        "eval_overhead": eval_overhead,
        "gpu_hours": hours,
    }


VARIANTS = ("", "fused", "compiled", "graphs", "blocks")

PARTS = tuple(r for r in ROWS if r.startswith(("r_lora", "gm_lora", "rm_lora")))  # rows with hooks to time


def time_parts(method, optimizer, step, args, sync) -> dict:
    """ms per call of what the fast path changes: the regularizer (forward + backward) and the mask
    hooks (before_step + after_step), on the live model with real gradients and optimizer state."""
    step(0)  # leaves optimizer state; recompute gradients once, then keep them (no zeroing)
    out = {}
    n = max(args.steps, 5)
    if method.loss_terms:
        sync()
        start = time.perf_counter()
        for _ in range(n):
            reg = method.autograd_loss()
            if reg is not None:
                reg.backward()
            method.add_loss_grads()
        sync()
        out["reg_fwd_bwd_ms"] = 1000 * (time.perf_counter() - start) / n
    if method.hooks:
        for p in method.trainable_parameters():
            p.grad = torch.ones_like(p)
        sync()
        start = time.perf_counter()
        for i in range(n):
            method.before_step(optimizer, i)
            method.after_step(optimizer, i)
        sync()
        out["mask_hooks_ms"] = 1000 * (time.perf_counter() - start) / n
    return out


def versions() -> dict:
    import peft
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "cuda": torch.version.cuda,
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def table(name: str, rows: list[dict]) -> str:
    head = (
        f"{'row':<22}{'ms/step':>10}{'cpu ms':>10}{'tokens/s':>12}{'peak MiB':>10}{'×peft':>8}{'×lora':>8}"
        f"{'warmup s':>10}"
    )
    lines = [f"== {name}", head]
    for r in rows:
        mem = f"{r['peak_memory_mib']:.0f}" if r["peak_memory_mib"] is not None else "n/a"
        vs_peft, vs_lora = (f"{r[k]:.2f}" if r.get(k) is not None else "-" for k in ("vs_peft", "vs_lora"))
        lines.append(
            f"{r['row']:<22}{r['ms_per_step']:>10.2f}{r['cpu_ms_per_step']:>10.2f}{r['tokens_per_s']:>12.0f}{mem:>10}"
            f"{vs_peft:>8}{vs_lora:>8}{r['warmup_s']:>10.2f}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--workload", action="append", choices=[*WORKLOADS, *ALIASES], help="repeatable; default tiny"
    )
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 GPU, 10 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 5 GPU, 3 CPU)")
    p.add_argument(
        "--repeats", type=int, default=1, help="rounds over all rows (interleaved); keep each row's fastest"
    )
    p.add_argument(
        "--no-parts", dest="parts", action="store_false", help="skip the regularizer / mask micro-timings"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model's forward in every row")
    p.add_argument(
        "--compile-mode",
        default="default",
        choices=fastpath.COMPILE_MODES,
        help="torch.compile mode of @compiled rows (reduce-overhead: CUDA graphs)",
    )
    p.add_argument("--rows-log", type=Path, default=None, help="append each row's result to this JSONL file")
    p.add_argument("--profile", type=Path, default=None, help="write a profiler table per row into this dir")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default results/bench/<date>.json)")
    args = p.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in rows if r.partition("@")[0] not in ROWS or r.partition("@")[2] not in VARIANTS]
    if bad:
        p.error(f"unknown rows {bad}; valid: {', '.join(ROWS)}, each optionally @{' / @'.join(VARIANTS[1:])}")
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.steps = args.steps or (20 if gpu else 10)
    args.warmup = args.warmup if args.warmup is not None else (5 if gpu else 3)
    names = [w for spec in (args.workload or ["tiny"]) for w in ALIASES.get(spec, [spec])]
    register_resolvers()
    now = dt.datetime.now(dt.timezone.utc)
    report = {
        "date": now.isoformat(timespec="seconds"),
        "device": device_name(device),
        "versions": versions(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "settings": {
            "steps": args.steps,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "compile": args.compile,
        },
        "command": " ".join(["python", "scripts/bench.py", *(argv if argv is not None else sys.argv[1:])]),
        "workloads": {},
    }
    for name in names:
        w = WORKLOADS[name]
        todo = [r for r in rows if not r.startswith("loda") or w["arch"] == "gpt2"]  # LoDA: GPT-2 placement
        runs: dict[str, list[dict]] = {r: [] for r in todo}
        for k in range(args.repeats):  # interleaved rounds: drift on a shared machine hits every row
            # each round starts one row later: no row is always the first compiled one (on the H200 the
            # first compiled row of a round measured up to 10 % slower than the same row later)
            for row in todo[k % len(todo) :] + todo[: k % len(todo)]:
                runs[row].append(run_row(row, w, args, device))
                if args.rows_log is not None:  # each row as it finishes: survives a killed run
                    with args.rows_log.open("a") as f:
                        f.write(json.dumps({"workload": name, **runs[row][-1]}) + "\n")
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                print(
                    f"  {name} {row}: {runs[row][-1]['ms_per_step']:.2f} ms/step", file=sys.stderr, flush=True
                )
        results = []
        for row in todo:
            key = "ms_per_step" if device.type == "cuda" else "cpu_ms_per_step"
            best = dict(min(runs[row], key=lambda r: r[key]))
            best["all_ms_per_step"] = [r["ms_per_step"] for r in runs[row]]
            if "parts" in best:
                best["parts"] = {k: min(r["parts"][k] for r in runs[row]) for k in best["parts"]}
            results.append(best)
        basis = "ms_per_step" if device.type == "cuda" else "cpu_ms_per_step"
        ref = {r["row"]: r[basis] for r in results}
        for r in results:
            r["ratio_basis"] = basis
            r["vs_peft"] = r[basis] / ref["peft_lora"] if "peft_lora" in ref else None
            r["vs_lora"] = r[basis] / ref["lora"] if "lora" in ref else None
        report["workloads"][name] = {**w, "rows": results}
        if w["arch"] == "deberta":
            est = table1_estimate(results)
            report["workloads"][name]["table1_estimate"] = est
            print(
                f"Table 1 estimate ({est['runs']} runs, {est['steps_per_run']} steps per row and seed): "
                f"{est['gpu_hours']:.1f} device-hours at these step times (meaningful for workload deberta)"
            )
        print(table(f"{name}: batch {w['batch']}×{w['seq']}, rank {w['rank']}, {report['device']}", results))
        parts = [r for r in results if "parts" in r]
        if parts:
            print(f"{'hook cost (ms/call)':<22}{'reg fwd+bwd':>12}{'mask hooks':>12}")
            for r in parts:
                reg, mask = (
                    f"{r['parts'][k]:.3f}" if k in r["parts"] else "-"
                    for k in ("reg_fwd_bwd_ms", "mask_hooks_ms")
                )
                print(f"{r['row']:<22}{reg:>12}{mask:>12}")
    out = args.out or ROOT / "results" / "bench" / f"{now:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    from core import atomic_write

    text = json.dumps(report, indent=1)
    atomic_write(out, lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
