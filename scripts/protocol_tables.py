"""Protocol tables: every setting that changes a paper experiment's numbers, as the harness composes it,
beside what the paper / the authors' code states, with the source (issue 25, "so that this class of
error stays out").

    python scripts/protocol_tables.py                 # writes docs/protocol/<experiment>.md
    python scripts/protocol_tables.py --check         # exit 1 on a DIFFERS / UNREVIEWED row or a stale doc
    python scripts/protocol_tables.py --out DIR --override train.eps=1e-7 loda_table1_e2e

Per experiment the sweep is expanded as the runner does (runners/sweep.py `expand`, seeds grouped by
runners/check_experiments.py `structures`); every arm is composed on the first task, and on each other
task one arm per lr group and per method in BY_TASK (per-task settings: epochs, lr, SoRA's xi, AdaLoRA's
schedule). Each config
goes through `check_config` (the runner's checks and the real plan). A PROBE reads one setting from a
composed run (None: it does not apply to that run); the experiment's reference dict (REFS, below the
code) gives per probe `(expected, source, status[, ours])`:
  expected  a concrete value (compared), a dict keyed by task / arm / method / '*' (compared per run),
            or Says("prose") (not compared: the status is the reviewer's);
  status    'same' or 'deliberate: <reason>'; a deliberate row may pin `ours`, the value the reason
            is about, so that a later change of it is flagged again.
Status written: 'same' where every run matches; the deliberate reason where it does not and `ours`
(if pinned) still holds; otherwise DIFFERS. A probe that applies but has no entry is UNREVIEWED.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python scripts/protocol_tables.py` puts scripts/ first
    sys.path.insert(0, str(ROOT))

OUT = ROOT / "docs" / "protocol"
EXPERIMENTS = (  # experiment -> the paper table(s) its records fill (scripts/paper_numbers.py TABLES)
    ("rm_table1_glue", ["rm_table1_glue"]),
    ("rm_table2_squad_deberta", ["rm_table2_squad_deberta"]),
    ("rm_table3_squad_gpt2", ["rm_table3_squad_gpt2"]),
    ("rm_vit_classifier", ["rm_table5_vit_cifar100", "rm_fig2_vit_food101"]),
    ("loda_table1_e2e", ["loda_table1_e2e"]),
    ("loda_table2_dart", ["loda_table2_dart"]),
    ("minilm_glue", ["minilm_glue"]),
)
FAIL = ("DIFFERS", "UNREVIEWED")
# Methods whose own settings depend on the task: SoRA's xi (method.xi_per_task), AdaLoRA's schedule (the
# run's planned steps). Every other task-dependent setting is in task.* / train.*, which one arm per lr
# group shows; composing only those keeps the generator fast (Hydra spends ~0.1-0.5 s per compose).
BY_TASK = {"sora", "adalora"}


class Says(str):
    """An expected value in words: shown, not compared."""


# ------------------------------------------------------------------------------------------ probes
LORA = {"lora", "r_lora", "gm_lora", "rm_lora"}
LODA = {"loda", "loda_plus", "r_loda", "r_loda_plus", "s_loda", "s_loda_plus"}
LOWRANK = LORA | LODA | {"sora", "adalora"}
METRIC = {  # task name -> the module that scores it, and what it mirrors (its docstring says how)
    "glue": "tasks/metrics/glue.py (scikit-learn / scipy: MCC, Pearson/Spearman, acc, F1)",
    "squad": "tasks/metrics/squad.py (evaluate-v1.1.py EM / F1)",
    "e2e": "tasks/metrics/e2e.py (e2e-metrics measure_scores.py: BLEU, NIST, METEOR, ROUGE-L, CIDEr)",
    "dart": "tasks/metrics/dart.py (GenerationEval eval.py -nr 6: BLEU, METEOR, TER)",
    "vision": "test-split accuracy (tasks/vision.py)",
}


def _m(r, names, key):
    return r.method.get(key) if r.method["name"] in names else None


def _of(name: str, fmt: str):
    """A probe of method `name`'s settings, `fmt` formatted with its method config (None elsewhere)."""
    return lambda r: fmt.format(**r.method) if r.method["name"] == name else None


def _mask(r):
    m = r.method
    if m.get("mask_directions") is None and m.get("mask_fraction") is None:
        return None
    return m["mask_directions"] or max(1, round(m["mask_fraction"] * m["rank"]))


def _data(r):
    t = r.task
    if t.get("data_dir"):
        files = f" {t['files']}" if t.get("files") else ""
        return f"{t.get('format', 'files')}: {r.path(t['data_dir'])}{files}"
    return f"Hub `{t['hub_id'] if 'hub_id' in t else t['name']}`"


def _adalora_schedule(r):
    if r.method["name"] != "adalora" or r.plan is None:
        return None
    from adapters.adalora import schedule_for

    used, _ = schedule_for(SimpleNamespace(**r.method), r.plan.total_steps)
    return "/".join(str(used[k]) for k in ("tinit", "tfinal", "deltaT"))


def _selection(r):
    epochs = r.cfg["train"]["eval_epochs"]
    return f"{r.select} epoch of " + (f"epochs {', '.join(map(str, epochs))}" if epochs else "every epoch")


T = lambda r, k: r.task.get(k)  # noqa: E731
PROBES = {  # key: (setting, value of one run or None where it does not apply)
    "model": ("model", lambda r: r.cfg["model"]["hub_id"]),
    "backbone_dropout": (
        "backbone dropout (model.config)",
        lambda r: (
            ", ".join(f"{k}={v}" for k, v in sorted(r.cfg["model"]["config"].items()) if "drop" in k)
            or "HF config as published"
        ),
    ),
    "targets": (
        "adapted modules",
        lambda r: (
            (r.cfg["model"].get("placement") or r.cfg["model"]["target_modules"])
            if r.method["name"] in LOWRANK
            else None
        ),
    ),
    "data": ("data source", _data),
    "splits": ("train / eval split", lambda r: f"{T(r, 'train_split')} / {', '.join(T(r, 'eval_splits'))}"),
    "max_length": ("max length (tokens)", lambda r: T(r, "max_length")),
    "doc_stride": ("doc stride", lambda r: T(r, "doc_stride")),
    "qa_post": (
        "answer post-processing (n-best, max answer tokens)",
        lambda r: f"{T(r, 'n_best')}, {T(r, 'max_answer_length')}" if "n_best" in r.task else None,
    ),
    "augment": ("training augmentation", lambda r: T(r, "augment")),
    "batch": (
        "batch (per optimizer step)",
        lambda r: r.cfg["train"]["batch_size"] * r.cfg["train"]["grad_accum"],
    ),
    "epochs": ("epochs", lambda r: r.cfg["train"]["epochs"]),
    "lr_ft": (
        "lr, full / partial FT",
        lambda r: r.cfg["train"]["lr"] if r.method["lr_group"] == "ft" else None,
    ),
    "lr_lowrank": (
        "lr, low-rank family",
        lambda r: r.cfg["train"]["lr"] if r.method["lr_group"] == "lowrank" else None,
    ),
    "warmup": (
        "warm-up (linear, then linear decay to 0)",
        lambda r: (
            f"{w} steps"
            if (w := r.cfg["train"]["warmup_steps"]) is not None
            else f"ratio {r.cfg['train']['warmup_ratio']:g}"
        ),
    ),
    "weight_decay": ("AdamW weight decay", lambda r: r.cfg["train"]["weight_decay"]),
    "betas": ("AdamW betas", lambda r: r.cfg["train"]["betas"]),
    "eps": ("AdamW eps", lambda r: r.cfg["train"]["eps"]),
    "clipping": ("gradient clipping (max norm)", lambda r: r.cfg["train"]["max_grad_norm"] or "none"),
    "precision": (
        "training precision",
        lambda r: "bf16 autocast on CUDA" if r.cfg["train"]["bf16"] in ("auto", True) else "fp32",
    ),
    "label_smoothing": ("label smoothing", lambda r: T(r, "label_smoothing")),
    "decoding": (
        "beam search (beams, length penalty, no-repeat n-gram, max new tokens)",
        lambda r: (
            f"{T(r, 'num_beams')}, {T(r, 'length_penalty')}, {T(r, 'no_repeat_ngram_size')}, "
            f"{T(r, 'max_new_tokens')}"
            if "num_beams" in r.task
            else None
        ),
    ),
    "decode_precision": ("decoding precision", lambda r: T(r, "decode_precision")),
    "metric": ("metric script", lambda r: METRIC[r.task["name"]]),
    "selection": ("epoch reported", _selection),
    "seeds": ("seeds", lambda r: r.seeds),
    "lora.rank": ("rank R (LoRA / LoDA family)", lambda r: _m(r, LORA | LODA, "rank")),
    "lora.alpha": ("alpha (scaling alpha/R)", lambda r: _m(r, LORA | LODA, "alpha")),
    "lora.init": ("A init (B = 0)", lambda r: _m(r, LORA | LODA, "init")),
    "lora.dropout": ("adapter input dropout", lambda r: _m(r, LORA | LODA, "dropout")),
    "reg": (
        "orthogonality regularizer (form, lambda)",
        lambda r: (
            f"{r.method['reg_form']}, {r.method['reg_weight']:g}" if r.method.get("reg_weight") else None
        ),
    ),
    "mask.r_hat": ("gradient mask: kept directions r_hat", _mask),
    "mask.shared": (
        "gradient mask: B's columns",
        lambda r: (
            ("same indices as A's rows" if r.method["mask_shared"] else "independent") if _mask(r) else None
        ),
    ),
    "mask.mode": ("gradient mask: mode", lambda r: r.method["mask_mode"] if _mask(r) else None),
    "mask.head": (
        "gradient mask: head masked, from step",
        lambda r: f"{str(r.method['mask_head']).lower()}, {r.method['mask_start']}" if _mask(r) else None,
    ),
    "adalora.budget": (
        "AdaLoRA rank init -> target",
        _of("adalora", "{init_r} -> {target_r}"),
    ),
    "adalora.alpha": ("AdaLoRA alpha", lambda r: _m(r, {"adalora"}, "alpha")),
    "adalora.schedule": ("AdaLoRA tinit / tfinal / deltaT (as run)", _adalora_schedule),
    "adalora.betas": (
        "AdaLoRA beta1 / beta2",
        _of("adalora", "{beta1}, {beta2}"),
    ),
    "adalora.orth": ("AdaLoRA orthogonality weight", lambda r: _m(r, {"adalora"}, "orth_reg_weight")),
    "sora.rank": ("SoRA rank", lambda r: _m(r, {"sora"}, "rank")),
    "sora.alpha": ("SoRA alpha", lambda r: _m(r, {"sora"}, "alpha")),
    "sora.xi": ("SoRA xi (sparse_lambda_2)", lambda r: _m(r, {"sora"}, "sparse_lambda")),
    "sora.gate": (
        "SoRA gate step (rule, lr, eps)",
        _of("sora", "{gate_rule}, {gate_lr:g}, {gate_eps:g}"),
    ),
    "sora.l1": ("SoRA L1 loss weight eta", lambda r: _m(r, {"sora"}, "l1_weight")),
    "loda.f1": (
        "LoDA f1 (order, LeakyReLU slope, init)",
        lambda r: (
            f"{'-'.join(r.method['f1_order'])}, {r.method['f1_slope']}, {r.method['f1_init']}"
            if r.method["name"] in LODA
            else None
        ),
    ),
    "loda.f2": (
        "LoDA+ f2",
        lambda r: "-".join(r.method["f2"]) if r.method["name"] in LODA and r.method["plus"] else None,
    ),
    "loda.base": (
        "W_proj approximation",
        lambda r: (
            {"svd": f"rank {r.method['base_rank']}", "sparse": f"keep {r.method['base_keep']}"}.get(
                r.method["base_approx"], "none"
            )
            if r.method["name"] in LODA
            else None
        ),
    ),
    "bottleneck": ("adapter bottleneck m", lambda r: _m(r, {"adapter_h", "adapter_l"}, "bottleneck")),
    "prefix": ("prefix length p", lambda r: _m(r, {"prefix"}, "num_virtual_tokens")),
}


# ------------------------------------------------------------------------------------------ compose
class Run:
    """One composed run structure (task x arm; seeds share it)."""

    def __init__(self, task, arm, cfg, plan, seeds, select):
        self.task_label, self.arm, self.cfg, self.plan = task, arm, cfg, plan
        self.seeds, self.select = seeds, select
        self.task, self.method = cfg["task"], cfg["method"]
        self.shared, self.root = cfg["paths"]["shared_data"], cfg["paths"]["root"]

    def path(self, p: str) -> str:  # machine-independent: the docs must not depend on where they were made
        return p.replace(self.shared, "${paths.shared_data}").replace(self.root, "${paths.root}")

    def keys(self):  # what a per-key expected dict is looked up by, most specific first
        arm = self.arm.rpartition("/")[2]  # glue/lora_r4 is Table 1's lora_r4 (+ its alpha)
        return (self.task_label.rpartition("/")[2], self.arm, arm, self.method["name"], "*")


def compose_runs(experiment: str, select: str, extra: list[str], compose) -> list[Run]:
    from runners.check_experiments import check_config, structures
    from runners.sweep import expand

    groups = structures(expand([f"experiment={experiment}", *extra]))
    parsed = [(dict(x.split("=", 1) for x in key), key, seeds) for key, seeds in groups.items()]
    first = parsed[0][0].get("task", "")
    parsed.sort(key=lambda p: p[0].get("task", "") != first)  # the first task's arms first: arm -> method
    runs, method_of, seen = [], {}, set()
    for o, key, seeds in parsed:
        task, arm = o.get("task", ""), o.get("arm", "")
        if task != first and (task, *method_of[arm]) in seen:
            continue  # later tasks: one arm per lr group and per task-dependent method
        cfg = compose(list(key) + [f"seed={seeds[0]}"])
        kind = (cfg.method.name,) if cfg.method.name in BY_TASK else ("lr group", cfg.method.lr_group)
        method_of[arm] = kind
        seen.add((task, *kind))
        out = check_config(cfg)
        if out.error:
            raise SystemExit(f"{experiment} {' '.join(key)}: {out.error}")
        runs.append(Run(task or cfg.task.name, arm, out.resolved, out.plan, ", ".join(seeds), select))
    return runs


# ------------------------------------------------------------------------------------------ compare
def fmt(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(x) for x in v)
    return str(v)


def expected_for(exp, run):
    if not isinstance(exp, dict):
        return exp
    return next((exp[k] for k in run.keys() if k in exp), Says("not stated"))


def grouped(values: list[tuple[Run, str]]) -> str:
    """'v' or 'v1 (arms or tasks); v2 (...)': labels by arm where each arm has one value, else by task."""
    by = {}
    for run, v in values:
        by.setdefault(v, []).append(run)
    if len(by) == 1:
        return next(iter(by))
    arm_wise = all(len({v for r, v in values if r.arm == a}) == 1 for a in {r.arm for r, _ in values})
    task_wise = all(
        len({v for r, v in values if r.task_label == t}) == 1 for t in {r.task_label for r, _ in values}
    )
    label = (lambda r: r.arm) if arm_wise or not task_wise else (lambda r: r.task_label.rpartition("/")[2])
    if not arm_wise and not task_wise:
        label = lambda r: f"{r.task_label.rpartition('/')[2]} {r.arm}"  # noqa: E731
    return "; ".join(f"{v} ({', '.join(dict.fromkeys(label(r) for r in rs))})" for v, rs in by.items())


def shown(exp, runs: list[Run]) -> str:
    """The expected value as the runs of this table look it up (grouped as the harness column)."""
    return grouped([(r, fmt(expected_for(exp, r))) for r in runs]) if isinstance(exp, dict) else fmt(exp)


def row(key: str, ref, runs: list[Run]) -> list[str] | None:
    setting, probe = PROBES[key]
    values = [(r, v) for r in runs if (v := probe(r)) is not None]
    if not values:
        return None
    ours = grouped([(r, fmt(v)) for r, v in values])
    if ref is None:
        return [setting, ours, "—", "—", "UNREVIEWED (add it to REFS in scripts/protocol_tables.py)"]
    exp, source, status, *pin = ref
    differs = [r for r, v in values if not isinstance(e := expected_for(exp, r), Says) and fmt(e) != fmt(v)]
    moved = pin and any(fmt(expected_for(pin[0], r)) != fmt(v) for r, v in values)
    if moved:
        status = f"DIFFERS: the reason was given for {shown(pin[0], [r for r, _ in values])}"
    elif differs and not status.startswith("deliberate"):
        status = "DIFFERS"
    elif (
        not differs
        and not isinstance(exp, Says)
        and not any(isinstance(expected_for(exp, r), Says) for r, _ in values)
    ):
        status = "same"
    return [setting, ours, shown(exp, [r for r, _ in values]), source, status]


def table(experiment: str, overrides: list[str] = (), compose=None) -> tuple[str, list[str]]:
    """(markdown, failing rows) for one experiment."""
    from scripts.paper_numbers import TABLES

    names = dict(EXPERIMENTS)[experiment]
    select = "/".join(sorted({TABLES[n].select for n in names}))
    runs = compose_runs(experiment, select, list(overrides), compose or _composer())
    refs, rows = REFS[experiment], []
    for key in PROBES:
        r = row(key, refs.get(key), runs)
        if r is not None:
            rows.append(r)
    unused = sorted(set(refs) - set(PROBES))
    rows += [[k, "—", "—", "—", "DIFFERS: reference entry for no probe"] for k in unused]
    cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = [
        f"# Protocol: `{experiment}`",
        "",
        f"Generated by `python scripts/protocol_tables.py` from the composed configs (do not edit; "
        f"`make protocol` rewrites it, `--check` fails on a DIFFERS row or a stale file). Paper tables: "
        f"{', '.join(f'`{n}`' for n in names)}. Runs composed: "
        + "; ".join(f"{r.task_label.rpartition('/')[2] or r.task['name']} {r.arm}".strip() for r in runs)
        + ".",
        "",
        "| setting | this harness (composed) | paper / authors' code | source | status |",
        "|---|---|---|---|---|",
        *("| " + " | ".join(cell(c) for c in r) + " |" for r in rows),
        "",
    ]
    return "\n".join(lines), [f"{experiment}: {r[0]}: {r[4]}" for r in rows if r[4].startswith(FAIL)]


def _composer():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from runners.config import CONF, register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    initialize_config_dir(config_dir=str(CONF), version_base="1.3").__enter__()  # held for the process
    return lambda overrides: compose("config", overrides=overrides)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiments", nargs="*", help="default: all seven")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 on DIFFERS or a stale doc")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--override", action="append", default=[], help="appended to every run (what-if)")
    args = ap.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore")
    compose, failures = _composer(), []
    for experiment in args.experiments or [e for e, _ in EXPERIMENTS]:
        text, bad = table(experiment, args.override, compose)
        failures += bad
        path = args.out / f"{experiment}.md"
        if args.check:
            if not path.is_file() or path.read_text() != text:
                failures.append(
                    f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: stale; run make protocol"
                )
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for line in failures:
        print(line, file=sys.stderr)
    return 1 if failures else 0


REFS: dict[str, dict] = {}

# ------------------------------------------------------------------------------------------ references
# Per experiment: probe -> (expected, source, status[, ours pinned]). Sources: RM-LoRA / LoDA papers
# (../shared/PAPERS.md), the authors' code (yz-mao/RM-LoRA; microsoft/LoRA examples/NLG, which LoDA
# follows; ../shared/REFERENCE.md), and the conf/ YAML comments that argue each deliberate choice.
RMC = "yz-mao/RM-LoRA "
HF = "HF TrainingArguments default (the authors' run_glue.sh / run_qa.sh pass none)"
SILENT = Says("paper silent")


def silent(ours, why: str, source: str = "paper silent; no code for this setting") -> tuple:
    return (SILENT, source, f"deliberate: {why}", ours)


def ranks(*rs, methods=("lora", "r_lora", "rm_lora")) -> dict:
    return {f"{m}_r{r}": r for r in rs for m in methods}


DEBERTA_TARGETS = [
    r".*\.attention\.self\.(query_proj|key_proj|value_proj)",
    r".*\.attention\.output\.dense",
    r".*\.layer\.\d+\.intermediate\.dense",
    r".*\.layer\.\d+\.output\.dense",
]
HF_OPTIM = {
    "betas": ([0.9, 0.999], HF, "same"),
    "eps": (1e-8, HF, "same"),
    "weight_decay": (0.0, HF, "same"),
    "clipping": (1.0, HF + " (max_grad_norm 1.0)", "same"),
}
WARMUP_6 = (
    "ratio 0",
    HF + " (no warm-up); the paper is silent",
    "deliberate: paper silent; 6% linear warm-up chosen in conf/experiment/rm_table1_glue.yaml, kept in every record",
    "ratio 0.06",
)
BF16 = "deliberate: bf16 autocast on CUDA (runners/train.py), every arm alike; train.bf16=false gives fp32"
SEEDS = (
    Says("3 seeds, not named"),
    "RM-LoRA Sec. 5 ('3 independent seeds')",
    "deliberate: the paper names none",
    "1, 2, 3",
)
RM_METHODS = {  # the RM-LoRA authors' GLUE runs (DeBERTa-v3-base); reused where no other code exists
    "lora.alpha": (
        32,
        RMC + "RM-LoRA/run_glue.sh --lora_alpha 32 (the paper gives none)",
        "deliberate: the paper gives none; lora.yaml's 16 kept where no table is reproduced "
        "(Table 1's arms, conf/arm/glue/, set 32)",
        16,
    ),
    "lora.init": (
        Says("A ~ N(0, 0.02), B = 0"),
        "../shared/REFERENCE.md (RM-LoRA code)",
        "deliberate: PEFT's kaiming; method.init=gaussian gives the authors' N(0, 0.02)",
        "kaiming",
    ),
    "lora.dropout": (
        0.0,
        RMC + "RM-LoRA/loralib/layers.py lora_dropout default 0 (run_glue.sh sets none)",
        "same",
    ),
    "reg": (
        "reference, 0.1",
        RMC + "RM-LoRA/adalora_trainer.py compute_svd_orth_regu (non-squared mean), "
        "run_glue.sh --reg_orth_coef 0.1 (issue 25 #4)",
        "same",
    ),
    "mask.shared": (
        "independent",
        RMC + "RM-LoRA/run_glue.sh --lora_type v2; paper Algorithm 1: one index set",
        "deliberate: the paper's Algorithm 1 (gm_lora.yaml); method.mask_shared=false gives v2",
        "same indices as A's rows",
    ),
    "mask.mode": (
        "grad",
        RMC + "RM-LoRA/adalora_trainer.py: gradients zeroed before optimizer.step()",
        "same",
    ),
    "mask.head": (
        "true, 2",
        RMC + "RM-LoRA/adalora_trainer.py: every non-LoRA gradient zeroed from step 2 (issue 25 #5)",
        "deliberate: Algorithm 1 masks A and B only, every step; method.mask_head=true "
        "method.mask_start=2 gives the code (gm_lora.yaml)",
        "false, 1",
    ),
    "adalora.alpha": (32, RMC + "AdaLoRA/run_glue.sh --lora_alpha 32", "same"),
    "adalora.betas": ("0.85, 0.85", RMC + "AdaLoRA/run_glue.sh --beta1 0.85 --beta2 0.85", "same"),
    "adalora.orth": (
        0,
        RMC + "AdaLoRA/run_glue.sh --reg_orth_coef 0 (AdaLoRA/adalora_trainer.py adds the "
        "P/Q term only if > 0); adalora.yaml and REFERENCE.md say 0.1",
        "same",
    ),
    "sora.alpha": (32, RMC + "SoRA/run_glue.sh --lora_alpha 32", "same"),
    "sora.gate": (
        "official, 0.001, 1e-06",
        "TsinghuaC3I/SoRA src/sparse_optimizer.py SparseAdamW: masks in order, "
        "sparse_lr = lr, HF AdamW eps 1e-6 (issue 25 #2)",
        "same",
    ),
    "sora.l1": (0.0, RMC + "SoRA/run_glue.sh --sparse_lambda 0.000", "same"),
    "seeds": SEEDS,
}
GLUE = {
    "data": (
        "Hub `glue`",
        RMC + "run_glue.sh --dataset_name .../huggingface/datasets/glue/$TASK_NAME",
        "same",
    ),
    "splits": (
        {"mnli": "train / validation_matched, validation_mismatched", "*": "train / validation"},
        "GLUE dev sets, as run_glue.py --do_eval reports them (MNLI: matched and mismatched)",
        "same",
    ),
    "max_length": (128, RMC + "run_glue.sh --max_seq_length 128", "same"),
    "batch": (32, "RM-LoRA Table 4 (run_glue.sh: 32 per device on 2 visible GPUs, REFERENCE.md)", "same"),
    "epochs": (
        {"mrpc": 5, "wnli": 5, "*": 3},
        "RM-LoRA Table 4 (run_glue.sh: 5; the paper wins, REFERENCE.md)",
        "same",
    ),
    "lr_ft": (1e-5, "RM-LoRA Table 4", "same"),
    "lr_lowrank": (1e-3, "RM-LoRA Table 4; run_glue.sh --learning_rate 1e-3", "same"),
    "warmup": WARMUP_6,
    "precision": ("fp32", RMC + "run_glue.sh passes no --fp16", BF16, "bf16 autocast on CUDA"),
    "metric": (
        Says("HF run_glue.py: evaluate's glue metric (sklearn / scipy)"),
        RMC + "RM-LoRA/run_glue.py",
        "same",
    ),
    "selection": (
        Says("final model; paper silent"),
        RMC + "run_glue.sh --evaluation_strategy epoch, no load_best_model_at_end",
        "same",
    ),
    **HF_OPTIM,
}
DEBERTA = {
    "model": (
        "microsoft/deberta-v3-base",
        "RM-LoRA Sec. 5 (184M); " + RMC + "run_glue.sh --model_name_or_path",
        "same",
    ),
    "backbone_dropout": (
        "HF config as published",
        RMC + "RM-LoRA/run_glue.py: DebertaV2Config.from_pretrained, no dropout argument",
        "same",
    ),
    "targets": (
        DEBERTA_TARGETS,
        "RM-LoRA Sec. 5 'all weight matrices'; run_glue.sh --lora_module query,key,"
        "value,intermediate,layer.output,attention.output",
        "same",
    ),
}
REFS["rm_table1_glue"] = {
    **DEBERTA,
    **GLUE,
    **RM_METHODS,
    "warmup": ("ratio 0", HF + " (no warm-up); the paper is silent", "same"),
    "lora.alpha": (32, RMC + "RM-LoRA/run_glue.sh --lora_alpha 32 (the paper gives none)", "same"),
    "lora.rank": (ranks(4, 8), "RM-LoRA Table 1 rows R=4, R=8", "same"),
    "mask.r_hat": (
        {"rm_lora_r4": 2, "rm_lora_r8": 4},
        "REFERENCE.md: R=4 r_hat 2 (README), R=8 r_hat 4 (run_glue.sh --random_rank 4)",
        "same",
    ),
    "adalora.budget": (
        {"adalora_8to4": "8 -> 4", "adalora_16to8": "16 -> 8"},
        "RM-LoRA Table 1 # T/I; AdaLoRA/run_glue.sh --lora_r 16 --target_rank 8",
        "same",
    ),
    "adalora.schedule": (
        "50/50/10",
        RMC + "AdaLoRA/run_glue.sh --init_warmup 50 --final_warmup 50 --mask_interval 10",
        "deliberate: WNLI's 100 steps leave no budgeting phase after 50 + 50 (PEFT refuses): "
        "schedule=fit halves it (adalora.yaml, issue 25 #1)",
        {"wnli": "25/25/10", "*": "50/50/10"},
    ),
    "sora.rank": (
        {"sora_r8": 8, "sora_r16": 16},
        "RM-LoRA Table 1 # T (SoRA/run_glue.sh --lora_r 16 for R=8)",
        "same",
    ),
    "sora.xi": (
        {
            "cola": 0.001,
            "sst2": 0.005,
            "mrpc": 0.001,
            "stsb": 0.001,
            "qqp": 0.005,
            "qnli": 0.0001,
            "mnli": 0.005,
            "wnli": 0.01,
            "rte": 0.005,
        },
        "RM-LoRA Table 4 'SoRA lambda' (SoRA/run_glue.sh example: --sparse_lambda_2 0.005)",
        "same",
    ),
}
SQUAD = {
    "data": ("Hub `squad`", RMC + "Random/run_qa.sh --dataset_name .../data/squad", "same"),
    "splits": ("train / validation", "SQuAD v1.1 dev (the paper's EM / F1)", "same"),
    "max_length": (384, RMC + "Random/run_qa.sh --max_seq_length 384", "same"),
    "doc_stride": (128, RMC + "Random/run_qa.sh --doc_stride 128", "same"),
    "qa_post": (
        "20, 30",
        "HF run_qa.py defaults n_best_size 20, max_answer_length 30 (the authors' run_qa.py)",
        "same",
    ),
    "batch": (16, RMC + "Random/run_qa.sh --per_device_train_batch_size 16", "same"),
    "epochs": (1, RMC + "Random/run_qa.sh --num_train_epochs 1", "same"),
    "lr_ft": silent(1e-5, "Table 4's DeBERTa FT lr, the paper's only one (squad.yaml, issue 25 #11)"),
    "lr_lowrank": (1e-3, RMC + "Random/run_qa.sh --learning_rate 1e-3", "same"),
    "metric": (Says("evaluate-v1.1.py EM / F1 (HF run_qa.py's squad metric)"), RMC + "run_qa.py", "same"),
    "selection": (Says("the one epoch's model"), "1 epoch", "same"),
    "reg": (
        Says("GLUE: reference, 0.1; the one SQuAD script shown passes --reg_orth_coef 0"),
        RMC + "Random/run_qa.sh",
        "deliberate: the GLUE pair, as Table 1 (r_lora.yaml)",
        "reference, 0.1",
    ),
    "mask.r_hat": (
        {"rm_lora_r8": 2},
        RMC + "Random/run_qa.sh --lora_r 8 --random_rank 2",
        "deliberate: r_hat = R/2 as Table 1 (rm_table2 YAML); method.mask_directions=2 gives the script's",
        {"rm_lora_r8": 4, "rm_lora_r4": 2, "rm_lora_r16": 8},
    ),
    "adalora.schedule": silent(
        "50/50/10",
        "the GLUE run's values (no AdaLoRA SQuAD run: AdaLoRA/run_qa.sh sets --apply_adalora False)",
    ),
    "sora.xi": (0.0005, "RM-LoRA Tables 2-3 label SoRA 'lambda2=5e-4' (issue 25 #3)", "same"),
    "warmup": WARMUP_6,
    "precision": ("fp32", RMC + "run_qa.sh passes no --fp16", BF16, "bf16 autocast on CUDA"),
    **HF_OPTIM,
}
REFS["rm_table2_squad_deberta"] = {
    **DEBERTA,
    **RM_METHODS,
    **SQUAD,
    "lora.alpha": (16, RMC + "Random/run_qa.sh --lora_alpha 16", "same"),
    "lora.rank": (ranks(4, 8), "RM-LoRA Table 2 rows R=8, R=4", "same"),
    "adalora.budget": ({"adalora_8to4": "8 -> 4"}, "RM-LoRA Table 2 rank T/I 8/4", "same"),
    "sora.rank": ({"sora_r8": 8, "sora_r16": 16}, "RM-LoRA Table 2 rank T 16 / 8", "same"),
}
REFS["rm_table3_squad_gpt2"] = {
    **RM_METHODS,
    **SQUAD,
    "model": ("gpt2", "RM-LoRA Table 3 (GPT-2 small, '117M')", "same"),
    "backbone_dropout": silent(
        "HF config as published", "HF's GPT-2 as published, as HF run_qa would load it"
    ),
    "targets": silent(
        "all",
        "every Conv1D, the DeBERTa tables' coverage; no placement gives Table 3's 1.69M (gpt2.yaml)",
        "'all weight matrices' said for DeBERTa only",
    ),
    "lora.alpha": (16, RMC + "Random/run_qa.sh --lora_alpha 16 (DeBERTa; no GPT-2 code)", "same"),
    "lora.rank": (ranks(8, 16), "RM-LoRA Table 3 rows R=16, R=8", "same"),
    "adalora.budget": (
        {"adalora_32to16": "32 -> 16", "adalora_16to8": "16 -> 8"},
        "RM-LoRA Table 3 rank T/I",
        "same",
    ),
    "sora.rank": ({"sora_r32": 32, "sora_r16": 16}, "RM-LoRA Table 3 rank T 32 / 16", "same"),
}
VIT_WHY = "no vision code published; the authors' baselines ran in HF Transformers (HF Trainer defaults)"
REFS["rm_vit_classifier"] = {
    **{k: v for k, v in RM_METHODS.items() if not k.startswith(("adalora", "sora"))},
    "model": silent(
        "google/vit-base-patch16-224-in21k",
        "the ImageNet-21k ViT-B/16 base checkpoint (vit_b16.yaml)",
        "RM-LoRA Sec. 5.1: ViT-B/16, 86M, ImageNet-pretrained, no checkpoint named",
    ),
    "backbone_dropout": silent("HF config as published", "the checkpoint's own config"),
    "targets": ("classifier", "RM-LoRA Sec. 5.1: LoRA on 'only the last classification layer'", "same"),
    "data": (Says("CIFAR-100 (Fig. 1, Table 5), Food-101 (Fig. 2)"), "RM-LoRA Sec. 5.1", "same"),
    "splits": (
        Says("train / test"),
        "Figs. 1-2 'test acc' (the Hub names Food-101's test set validation)",
        "same",
    ),
    "augment": silent("none", "one data policy for every arm, no augmentation (_vision.yaml, issue 25 #10)"),
    "batch": silent(128, "chosen (cifar100.yaml)"),
    "epochs": (60, "RM-LoRA Figs. 1-2 (60 epochs)", "same"),
    "lr_ft": silent(1e-5, "Table 4's GLUE value (cifar100.yaml)"),
    "lr_lowrank": silent(0.001, "Table 4's GLUE value (cifar100.yaml)"),
    "warmup": silent("ratio 0.06", "as the GLUE runs", VIT_WHY),
    **{k: (*v[:2], "same") for k, v in HF_OPTIM.items()},
    "precision": silent(
        "bf16 autocast on CUDA",
        "bf16 autocast on CUDA for every arm, cached features too "
        "(rm_vit_classifier.yaml); train.bf16=false gives fp32",
    ),
    "metric": (Says("test accuracy per epoch (Figs. 1-2), Table 5"), "RM-LoRA Sec. 5.1", "same"),
    "selection": (Says("the 60-epoch curves' end (Table 5)"), "RM-LoRA Table 5", "same"),
    "lora.rank": (
        ranks(32, 64, 80, methods=("lora", "gm_lora", "r_lora", "rm_lora")),
        "RM-LoRA Table 5 rows",
        "same",
    ),
    "lora.alpha": silent(16, "lora.yaml's default", VIT_WHY),
    "lora.init": silent("kaiming", "PEFT's init", VIT_WHY),
    "lora.dropout": silent(0.0, "none", VIT_WHY),
    "reg": (
        "reference, 0.1",
        RMC + "RM-LoRA/run_glue.sh --reg_orth_coef 0.1 (GLUE code; none for vision)",
        "same",
    ),
    "mask.r_hat": (
        {f"{m}_r{r}": r // 2 for r in (32, 64, 80) for m in ("gm_lora", "rm_lora")},
        "R/2 as the authors' GLUE scripts (none for vision)",
        "same",
    ),
}
NLG = {  # microsoft/LoRA examples/NLG (README commands, src/), the setting LoDA follows (PAPERS.md)
    "model": ("gpt2-medium", "LoDA Sec. 4 (GPT-2 medium, Hu et al. 2022)", "same"),
    "backbone_dropout": (
        "attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0",
        "microsoft/LoRA examples/NLG/src/model.py: no dropout module (issue 25 #6)",
        "same",
    ),
    "targets": ("qv", "LoDA Sec. 4 / Hu et al. Table 11: Wq, Wv (q, v of the fused c_attn)", "same"),
    "splits": ("train / test", "LoDA / Hu et al. report the test set", "same"),
    "max_length": (512, "microsoft/LoRA README gpt2_ft.py --seq_len 512", "same"),
    "batch": (8, "Hu et al. Table 11; README --train_batch_size 8", "same"),
    "lr_lowrank": (2e-4, "Hu et al. Table 11 (the starred baselines are quoted, not rerun)", "same"),
    "lr_ft": silent(2e-4, "the low-rank lr (loda_table1_e2e.yaml)", "LoDA gives none for FT^{Wq,Wv}"),
    "warmup": ("500 steps", "Hu et al. Table 11; README --warmup_step 500", "same"),
    "betas": ([0.9, 0.999], "README --adam_beta2 0.999 (beta1 0.9)", "same"),
    "eps": (1e-6, "microsoft/LoRA src/optimizer.py AdamW eps 1e-6 (REFERENCE.md)", "same"),
    "clipping": ("none", "README --clip 0.0", "same"),
    "precision": ("fp32", "README's gpt2_ft.py command passes no --fp16", BF16, "bf16 autocast on CUDA"),
    "decode_precision": ("fp32", "microsoft/LoRA gpt2_beam.py: the fp32 model (issue 25 #9)", "same"),
    "seeds": (
        Says("same seeds for all methods, not named"),
        "LoDA Sec. 4 (README: --random_seed 110)",
        "deliberate: the paper names none",
        "1, 2, 3",
    ),
    "lora.rank": (4, "Hu et al. Table 11 (r = 4)", "same"),
    "lora.alpha": (32, "Hu et al. Table 11; README --lora_alpha 32", "same"),
    "lora.init": ("kaiming", "microsoft/LoRA loralib/layers.py: kaiming_uniform_ A, zero B", "same"),
    "loda.f1": silent(
        "norm-linear-act-linear, 0.8, default",
        "pre-norm order, PyTorch Linear init (loda.yaml)",
        "LoDA Sec. 3: two r x r linears, LeakyReLU slope 0.8, LayerNorm without parameters; order open",
    ),
    "loda.f2": silent(
        "act", "LeakyReLU after B (loda.yaml)", "LoDA Fig. 1e: LeakyReLU and/or LayerNorm after B"
    ),
}
REFS["loda_table1_e2e"] = {
    **NLG,
    "data": (
        "lora: ${paths.shared_data}/e2e/lora_format",
        "microsoft/LoRA examples/NLG/data/e2e/{train,valid,test}.txt (issue 25 #7)",
        "same",
    ),
    "epochs": (
        {f"e2e/{a}": 10 for a in ("r_loda_300", "s_loda_40", "r_loda_plus_300", "s_loda_plus_40")} | {"*": 5},
        "Hu et al. Table 11: 5; LoDA: R-/S- variants up to 10",
        "same",
    ),
    "weight_decay": (0.01, "Hu et al. Table 11; README --weight_decay 0.01", "same"),
    "label_smoothing": (0.1, "Hu et al. Table 11; README --label_smooth 0.1", "same"),
    "decoding": (
        "10, 0.9, 4, 64",
        "LoDA Sec. 4 (beam 10, length penalty 0.9, no-repeat 4; README: 0.8); gpt2_beam.py 64 tokens",
        "same",
    ),
    "metric": (Says("e2e-metrics measure_scores.py"), "microsoft/LoRA README (E2E step 3)", "same"),
    "selection": (Says("best epoch; R-/S- variants best of epochs 5 and 10"), "LoDA Sec. 4", "same"),
    "lora.dropout": (0.1, "Hu et al. Table 11; README --lora_dropout 0.1", "same"),
    "loda.base": (
        {
            "e2e/r_loda_300": "rank 300",
            "e2e/r_loda_plus_300": "rank 300",
            "e2e/s_loda_40": "keep 0.4",
            "e2e/s_loda_plus_40": "keep 0.4",
            "*": "none",
        },
        "LoDA Table 1 rows",
        "same",
    ),
    "bottleneck": (
        {"e2e/adapter_l_small": 6, "e2e/adapter_l_large": 224, "e2e/adapter_h": 112},
        "sized to the quoted # trainable 0.37M / 11.09M / 11.09M (adapter_*.yaml)",
        "same",
    ),
    "prefix": silent(
        7, "344,064 parameters; no integer p gives the quoted 0.35M (prefix.yaml)", "LoDA Table 1: 0.35M"
    ),
}
REFS["loda_table2_dart"] = {
    **NLG,
    "data": (
        "Hub `dart`",
        "microsoft/LoRA create_datasets.sh: Yale-LILY dart-v1.1.1-full-*.json, the files datasets' "
        "`dart` loads (GEM's loader lists the same URLs)",
        "same",
    ),
    "epochs": (10, "LoDA Sec. 4: 'DART needed 10 epochs to reproduce LoRA'", "same"),
    "weight_decay": (0.0, "microsoft/LoRA README (DART): no --weight_decay", "same"),
    "label_smoothing": (0.0, "REFERENCE.md: 0 on DART", "same"),
    "decoding": ("10, 0.8, 4, 64", "LoDA Sec. 4 (length penalty 0.8 on DART); gpt2_beam.py", "same"),
    "metric": (
        Says("GenerationEval eval.py -m bleu,meteor,ter -nr 6"),
        "microsoft/LoRA README (DART step 3)",
        "same",
    ),
    "selection": (Says("best of epochs 5 and 10"), "LoDA Sec. 4", "same"),
    "lora.dropout": (0.0, "REFERENCE.md: adapter dropout 0 on DART", "same"),
    "loda.base": (
        {f"dart/{p}{n}": f"rank {n}" for p in ("r_loda_", "r_loda_plus_") for n in (300, 400, 500)}
        | {f"dart/{p}{n}": f"keep {n / 100:g}" for p in ("s_loda_", "s_loda_plus_") for n in (50, 60)}
        | {"*": "none"},
        "LoDA Table 2 rows",
        "same",
    ),
}
NO_PAPER = "no paper: the protocol of RM-LoRA Table 1 on a 22M MiniLM (minilm_glue.yaml)"
REFS["minilm_glue"] = {
    **{k: v for k, v in GLUE.items() if k not in ("data", "lr_ft", "lr_lowrank")},
    **{k: v for k, v in RM_METHODS.items() if not k.startswith(("adalora", "sora"))},
    "model": (Says("no paper table"), NO_PAPER, "same"),
    "backbone_dropout": (Says("HF config as published"), NO_PAPER, "same"),
    "targets": (Says("all attention and FFN linears, as RM-LoRA's DeBERTa setting"), NO_PAPER, "same"),
    "data": (
        Says("GLUE train / dev"),
        "offline TSVs (../shared/data/glue): the tasks with both files",
        "same",
    ),
    "lr_ft": (
        1e-5,
        "RM-LoRA Table 4 (DeBERTa-v3-base)",
        "deliberate: chosen on dev with seed 0 (scripts/lr_sweep.py, "
        "docs/results/minilm_glue/lr_choice.json, issue 25 #12)",
        1e-4,
    ),
    "lr_lowrank": (
        1e-3,
        "RM-LoRA Table 4 (DeBERTa-v3-base)",
        "deliberate: chosen on dev with seed 0 (scripts/lr_sweep.py, "
        "docs/results/minilm_glue/lr_choice.json)",
        5e-4,
    ),
    "lora.rank": (
        ranks(8, methods=("lora", "r_lora", "gm_lora", "rm_lora")),
        "RM-LoRA Table 1 R=8 rows",
        "same",
    ),
    "mask.r_hat": ({"gm_lora_r8": 4, "rm_lora_r8": 4}, "REFERENCE.md: R=8 r_hat 4", "same"),
}

if __name__ == "__main__":
    sys.exit(main())
