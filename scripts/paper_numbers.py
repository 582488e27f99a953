"""The papers' tables as data: layout (rows, columns), how records map to cells, and the printed numbers.

Typed in from `../shared/PAPERS.md` (RM-LoRA Tables 1, 2, 3, 5; LoDA Tables 1, 2). `scripts/make_tables.py`
reads only this module and `results/runs/*.json`.

A **row** selects records by `match`: dotted paths into the record's resolved `config` and the values
they must equal (e.g. `{"method.name": "lora", "method.rank": 4}`); a **column** names the task (the
record's `task` label), the metric (alternative names: the first one present is used), the eval split
(`None`: the record's own selection split, i.e. its first eval split) and a `scale` that puts our value
in the paper's units (GLUE fractions as printed; SQuAD EM/F1 0-100 in both; E2E BLEU/METEOR/ROUGE-L are
0-1 from `tasks.metrics.e2e` and percent in the paper; DART METEOR 0-1 vs percent). A table has a
`full` model (the paper's) and a `smoke` model (the tiny CPU stand-in); the same layout is filled from
either.

Names of methods/keys that other branches add (adalora, sora, ft_qv, loda*, adapter_*, prefix, squad, e2e,
dart, cifar100, food101) are what those branches' issues ask for; a record that does not exist yet is a
missing cell, never an error. Rows are told apart by: AdaLoRA `method.target_r` (the inference budget),
SoRA `method.rank` (its training rank), R-LoDA `method.base_rank`, S-LoDA `method.base_keep`, Adapter^L
`method.bottleneck`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    task: str  # the record's `task` label, e.g. "glue/cola"
    metric: tuple[str, ...]  # alternative metric names (first present wins)
    scale: float = 1.0  # ours × scale = the paper's units
    source: str = "metrics"  # metrics | diagnostics (mean over adapted modules)
    higher_is_better: bool = True
    split: str | None = None  # None: the record's selection split (its first eval split)
    digits: int = 3


@dataclass(frozen=True)
class Row:
    label: str
    match: dict
    paper: dict  # column key -> (value, std or None)
    paper_params: str = ""
    vs: str | None = None  # label of the baseline row for the significance test (LoRA, same rank)


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    models: dict  # variant -> model name in records: {"full": ..., "smoke": ...}
    params_head: bool = True  # True: # T / I include the task head (the paper's convention)
    param_unit: float = 1e6
    param_unit_name: str = "M"
    select: str = "final"  # final | best: which epoch of each run fills a cell
    std_bound: float | None = None  # a table-wide "std <= x" when no per-cell std is printed
    notes: tuple[str, ...] = field(default_factory=tuple)


def _rows(columns, spec) -> tuple[Row, ...]:
    """spec: (label, match, params, vs, values in column order; a value is x or (x, std))."""
    rows = []
    for label, match, params, vs, values in spec:
        assert len(values) == len(columns), label
        paper = {}
        for col, v in zip(columns, values):
            if v is None:
                continue
            paper[col.key] = v if isinstance(v, tuple) else (v, None)
        rows.append(Row(label, match, paper, params, vs))
    return tuple(rows)


def _m(name, **kw) -> dict:
    return {"method.name": name, **{f"method.{k}": v for k, v in kw.items()}}


def _lora(**kw) -> dict:
    """Plain LoRA only: `method=lora` with the regularizer or mask switched on is R/GM/RM-LoRA."""
    return _m("lora", reg_weight=0.0, mask_fraction=None, mask_directions=None, **kw)


# ---------------------------------------------------------------- RM-LoRA Table 1: GLUE, DeBERTa-v3-base
def _glue(key, title, task, metric):
    return Column(key, title, f"glue/{task}", (metric,))


GLUE_COLS = (
    _glue("cola", "CoLA", "cola", "mcc"),
    _glue("stsb_p", "STS-B P", "stsb", "pearson"),
    _glue("stsb_s", "STS-B S", "stsb", "spearman"),
    _glue("qnli", "QNLI", "qnli", "acc"),
    _glue("mnli", "MNLI", "mnli", "acc"),
    _glue("wnli", "WNLI", "wnli", "acc"),
    _glue("rte", "RTE", "rte", "acc"),
    _glue("mrpc_acc", "MRPC acc", "mrpc", "acc"),
    _glue("mrpc_f1", "MRPC F1", "mrpc", "f1"),
    _glue("qqp_acc", "QQP acc", "qqp", "acc"),
    _glue("qqp_f1", "QQP F1", "qqp", "f1"),
    _glue("sst2", "SST-2", "sst2", "acc"),
)
L4, L8 = "LoRA R=4", "LoRA R=8"
RM_TABLE1 = Table(
    name="rm_table1_glue",
    title="RM-LoRA Table 1: DeBERTa-v3-base on GLUE (dev sets)",
    columns=GLUE_COLS,
    rows=_rows(
        GLUE_COLS,
        [
            (
                "Full FT",
                _m("ft"),
                "184M/184M",
                None,
                [0.668, 0.892, 0.890, 0.940, 0.907, 0.563, 0.852, 0.853, 0.891, 0.918, 0.891, 0.934],
            ),
            (
                L4,
                _lora(rank=4),
                "1.26M/1.26M",
                None,
                [0.680, 0.912, 0.912, 0.939, 0.901, 0.718, 0.856, 0.892, 0.922, 0.912, 0.883, 0.934],
            ),
            (
                "AdaLoRA (8→4)",
                _m("adalora", target_r=4),
                "1.92M/1.26M",
                L4,
                [0.663, 0.905, 0.909, 0.934, 0.904, 0.563, 0.845, 0.880, 0.911, 0.912, 0.884, 0.955],
            ),
            (
                "SoRA (r=8)",
                _m("sora", rank=8),
                "1.92M/1.38M",
                L4,
                [0.655, 0.905, 0.907, 0.926, 0.889, 0.690, 0.848, 0.895, 0.924, 0.820, 0.762, 0.820],
            ),
            (
                "R-LoRA R=4",
                _m("r_lora", rank=4),
                "1.26M/1.26M",
                L4,
                [0.685, 0.914, 0.914, 0.941, 0.903, 0.718, 0.863, 0.897, 0.925, 0.917, 0.889, 0.943],
            ),
            (
                "RM-LoRA R=4",
                _m("rm_lora", rank=4),
                "1.26M/1.26M",
                L4,
                [0.689, 0.915, 0.915, 0.942, 0.906, 0.732, 0.866, 0.892, 0.922, 0.913, 0.884, 0.943],
            ),
            (
                L8,
                _lora(rank=8),
                "1.92M/1.92M",
                None,
                [0.672, 0.913, 0.914, 0.938, 0.900, 0.718, 0.856, 0.900, 0.928, 0.916, 0.889, 0.936],
            ),
            (
                "AdaLoRA (16→8)",
                _m("adalora", target_r=8),
                "3.25M/1.92M",
                L8,
                [0.664, 0.912, 0.913, 0.942, 0.906, 0.578, 0.841, 0.897, 0.924, 0.912, 0.885, 0.948],
            ),
            (
                "SoRA (r=16)",
                _m("sora", rank=16),
                "3.25M/2.24M",
                L8,
                [0.665, 0.907, 0.910, 0.930, 0.895, 0.690, 0.841, 0.897, 0.927, 0.819, 0.761, 0.826],
            ),
            (
                "R-LoRA R=8",
                _m("r_lora", rank=8),
                "1.92M/1.92M",
                L8,
                [0.694, 0.914, 0.914, 0.943, 0.904, 0.732, 0.863, 0.907, 0.933, 0.917, 0.890, 0.940],
            ),
            (
                "RM-LoRA R=8",
                _m("rm_lora", rank=8),
                "1.92M/1.92M",
                L8,
                [0.688, 0.915, 0.915, 0.944, 0.907, 0.747, 0.870, 0.914, 0.938, 0.913, 0.885, 0.948],
            ),
        ],
    ),  # fmt: skip
    models={"full": "deberta_v3_base", "smoke": "tiny_deberta"},
    std_bound=0.01,
    notes=(
        "The paper prints no per-cell std, only 'std over 3 seeds <= 0.01': that bound is the +-std here.",
        "Cells are the final epoch's dev score (the paper does not say best or last; the dev set is its "
        "test set, so no selection on it).",
    ),
)


# RM-LoRA Table 4's SoRA columns (shown beside Table 1's SoRA rows by make_tables): task -> (λ, i.e.
# ξ = official sparse_lambda_2; "Sparsity" in %; epochs). The same row sets lr 1e-3 and batch 32. The
# paper does not define "Sparsity" (zero gates, or the kept share the official counter logs).
SORA_TABLE4 = {
    "glue/cola": (0.001, 68.96, 3),
    "glue/sst2": (0.005, 53.90, 3),
    "glue/mrpc": (0.001, 79.27, 5),
    "glue/stsb": (0.001, 80.62, 3),
    "glue/qqp": (0.005, 53.90, 3),
    "glue/qnli": (0.0001, 58.06, 3),
    "glue/mnli": (0.005, 64.77, 3),
    "glue/wnli": (0.01, 62.53, 5),
    "glue/rte": (0.005, 64.23, 3),
}
SORA_TABLE4_LR = 1e-3
# Batches the authors' step count may have used: Table 4's 32, and the 128 that their multi-GPU
# DataParallel launch gave (REFERENCE.md, RM-LoRA code): fewer steps, the case most favourable to gates.
SORA_TABLE4_BATCHES = (32, 128)
# GLUE train sizes (as tasks/sizes.py GLUE_TRAIN): the step counts of Table 4's setting.
SORA_TABLE4_TRAIN = {"glue/cola": 8551, "glue/sst2": 67349, "glue/mrpc": 3668, "glue/stsb": 5749, "glue/qqp": 363846,
                     "glue/qnli": 104743, "glue/mnli": 392702, "glue/wnli": 635, "glue/rte": 2490}  # fmt: skip
SORA_SPARSITY_TABLE = "rm_table1_glue"


# ---------------------------------------------------------------- RM-LoRA Tables 2, 3: SQuAD v1.1
def _squad_cols():
    return (
        Column("em", "EM", "squad", ("exact_match", "em"), digits=2),
        Column("f1", "F1", "squad", ("f1",), digits=2),
    )


SQ = _squad_cols()
RM_TABLE2 = Table(
    name="rm_table2_squad_deberta",
    title="RM-LoRA Table 2: DeBERTa-v3-base on SQuAD v1.1 (dev)",
    columns=SQ,
    rows=_rows(
        SQ,
        [
            ("Full FT", _m("ft"), "184M/184M", None, [(87.83, 0.01), (93.62, 0.01)]),
            ("LoRA R=8", _lora(rank=8), "1.33M/1.33M", None, [(87.47, 0.01), (93.33, 0.01)]),
            ("SoRA r=16", _m("sora", rank=16), "2.66M/1.28M", "LoRA R=8", [(82.73, 0.02), (90.49, 0.01)]),
            ("RM-LoRA R=8", _m("rm_lora", rank=8), "1.33M/1.33M", "LoRA R=8", [(87.87, 0.03), (93.67, 0.01)]),
            ("LoRA R=4", _lora(rank=4), "0.67M/0.67M", None, [(87.43, 0.02), (93.35, 0.02)]),
            (
                "AdaLoRA 8→4",
                _m("adalora", target_r=4),
                "1.33M/0.67M",
                "LoRA R=4",
                [(86.48, 0.02), (92.83, 0.01)],
            ),
            ("SoRA r=8", _m("sora", rank=8), "1.33M/0.61M", "LoRA R=4", [(79.64, 0.02), (88.01, 0.02)]),
            ("RM-LoRA R=4", _m("rm_lora", rank=4), "0.67M/0.67M", "LoRA R=4", [(87.57, 0.03), (93.51, 0.02)]),
        ],
    ),  # fmt: skip
    models={"full": "deberta_v3_base", "smoke": "tiny_deberta"},
    notes=("Paper's # T / I here count the adapters and qa_outputs head.",),
)
RM_TABLE3 = Table(
    name="rm_table3_squad_gpt2",
    title="RM-LoRA Table 3: GPT-2 small on SQuAD v1.1 (dev)",
    columns=SQ,
    rows=_rows(
        SQ,
        [
            ("Full FT", _m("ft"), "117M/117M", None, [(63.30, 0.01), (74.41, 0.02)]),
            ("LoRA R=16", _lora(rank=16), "1.69M/1.69M", None, [(61.41, 0.02), (72.76, 0.03)]),
            (
                "AdaLoRA 32→16",
                _m("adalora", target_r=16),
                "3.39M/1.69M",
                "LoRA R=16",
                [(61.70, 0.01), (72.30, 0.03)],
            ),
            ("SoRA r=32", _m("sora", rank=32), "3.39M/1.62M", "LoRA R=16", [(60.80, 0.02), (71.80, 0.04)]),
            (
                "RM-LoRA R=16",
                _m("rm_lora", rank=16),
                "1.69M/1.69M",
                "LoRA R=16",
                [(62.80, 0.01), (73.50, 0.02)],
            ),
            ("LoRA R=8", _lora(rank=8), "0.85M/0.85M", None, [(60.34, 0.02), (71.92, 0.02)]),
            (
                "AdaLoRA 16→8",
                _m("adalora", target_r=8),
                "1.69M/0.85M",
                "LoRA R=8",
                [(60.20, 0.02), (71.40, 0.02)],
            ),
            ("SoRA r=16", _m("sora", rank=16), "1.69M/0.81M", "LoRA R=8", [(59.80, 0.02), (70.90, 0.03)]),
            ("RM-LoRA R=8", _m("rm_lora", rank=8), "0.85M/0.85M", "LoRA R=8", [(61.00, 0.01), (72.20, 0.01)]),
        ],
    ),  # fmt: skip
    models={"full": "gpt2", "smoke": "tiny_gpt2"},
)


# ---------------------------------------------------------------- RM-LoRA Table 5: ViT-B/16 classifier layer
def _vit_cols(task):
    return (
        Column("rank", "rank(ΔW)", task, ("mean_rank",), source="diagnostics", digits=1),
        Column("orth", "‖ΔWΔWᵀ−I‖²_F", task, ("mean_orth_loss",), source="diagnostics",
               higher_is_better=False, digits=3),
        Column("acc", "test acc", task, ("acc", "accuracy"), scale=100.0, digits=2),
    )  # fmt: skip


def _vit_rows(cols, with_paper: bool):
    spec = []
    paper = {
        32: [(29, 585.835, (76.97, .02)), (29, 277.919, (77.72, .02)), (30, 122.079, (77.99, .03)),
             (30, 95.240, (78.05, .02))],
        64: [(55, 410.154, (78.41, .03)), (52, 175.010, (79.60, .05)), (59, 79.876, (79.66, .06)),
             (57, 58.010, (80.07, .04))],
        80: [(64, 342.197, (78.13, .03)), (59, 155.010, (79.68, .02)), (72, 68.970, (79.63, .05)),
             (69, 48.832, (80.20, .02))],
    }  # fmt: skip
    for rank, values in paper.items():
        for (name, label), vals in zip(
            [("lora", "LoRA"), ("gm_lora", "GM-LoRA"), ("r_lora", "R-LoRA"), ("rm_lora", "RM-LoRA")], values
        ):
            vs = None if name == "lora" else f"LoRA R={rank}"
            match = _lora(rank=rank) if name == "lora" else _m(name, rank=rank)
            spec.append((f"{label} R={rank}", match, "", vs, list(vals) if with_paper else [None] * 3))
    spec.insert(0, ("Full FT", _m("ft"), "", None, [None] * 3))
    return _rows(cols, spec)


VIT5 = _vit_cols("cifar100")
RM_TABLE5 = Table(
    name="rm_table5_vit_cifar100",
    title="RM-LoRA Table 5: ViT-B/16 on CIFAR-100, LoRA on the classifier layer only",
    columns=VIT5,
    rows=_vit_rows(VIT5, with_paper=True),
    models={"full": "vit_b16", "smoke": "tiny_vit"},
    params_head=False,
    notes=(
        "rank(ΔW): numerical rank (tolerance in each record's diagnostics); orth. loss: ‖ΔWΔWᵀ−I‖²_F, whose "
        "floor is d_out − R (the null space), so it is large for every method.",
        "Full FT is not in the paper's Table 5 (it is in Figures 1–2); no paper value.",
    ),
)
VIT_FOOD = _vit_cols("food101")
RM_VIT_FOOD = Table(
    name="rm_fig2_vit_food101",
    title="RM-LoRA Figure 2 runs: ViT-B/16 on Food-101, classifier layer (final epoch; no paper table)",
    columns=VIT_FOOD,
    rows=_vit_rows(VIT_FOOD, with_paper=False),
    models={"full": "vit_b16", "smoke": "tiny_vit"},
    params_head=False,
    notes=("The paper shows Food-101 only as curves (Figure 2): no printed numbers to compare.",),
)


# ---------------------------------------------------------------- LoDA Tables 1, 2: GPT-2 medium E2E / DART
E2E = (
    Column("bleu", "BLEU", "e2e", ("BLEU", "bleu"), scale=100.0, digits=1),
    Column("nist", "NIST", "e2e", ("NIST", "nist"), digits=2),
    Column("meteor", "MET", "e2e", ("METEOR", "meteor"), scale=100.0, digits=1),
    Column("rouge", "ROUGE-L", "e2e", ("ROUGE_L", "rouge_l", "ROUGE-L"), scale=100.0, digits=1),
    Column("cider", "CIDEr", "e2e", ("CIDEr", "cider"), digits=2),
)


def _loda_rows(cols, spec):
    return _rows(
        cols, [(lab, match, params, "LoRA" if vs else None, vals) for lab, match, params, vs, vals in spec]
    )


LODA_TABLE1 = Table(
    name="loda_table1_e2e",
    title="LoDA Table 1: GPT-2 medium on E2E (test set)",
    columns=E2E,
    rows=_loda_rows(
        E2E,
        [
            ("FT*", _m("ft"), "354.92M", False, [68.2, 8.62, 46.2, 71.0, 2.47]),
            (
                "Adapter^L* (0.37M)",
                _m("adapter_l", bottleneck=6),
                "0.37M",
                True,
                [66.3, 8.41, 45.0, 69.8, 2.40],
            ),
            (
                "Adapter^L* (11.09M)",
                _m("adapter_l", bottleneck=224),
                "11.09M",
                True,
                [68.9, 8.71, 46.1, 71.3, 2.47],
            ),
            (
                "Adapter^H*",
                _m("adapter_h"),
                "11.09M",
                True,
                [(67.3, 0.6), (8.50, 0.07), (46.0, 0.2), (70.7, 0.2), (2.44, 0.01)],
            ),
            ("PreLayer*", _m("prefix"), "0.35M", True, [69.7, 8.81, 46.1, 71.4, 2.49]),
            ("FT^Top2*", _m("ft_top2"), "25.19M", True, [68.1, 8.59, 46.0, 70.8, 2.41]),
            (
                "FT^{Wq,Wv}",
                _m("ft_qv"),
                "48.00M",
                True,
                [(69.4, 0.1), (8.74, 0.02), (46.0, 0.0), (71.0, 0.1), (2.48, 0.01)],
            ),
            (
                "LoRA",
                _lora(rank=4),
                "0.38M",
                False,
                [(69.0, 0.7), (8.69, 0.07), (46.5, 0.2), (71.3, 0.4), (2.51, 0.00)],
            ),
            (
                "LoDA",
                _m("loda", rank=4),
                "0.38M",
                True,
                [(70.2, 0.3), (8.83, 0.03), (46.6, 0.1), (71.6, 0.1), (2.53, 0.01)],
            ),
            (
                "S-LoDA keep 40%",
                _m("s_loda", rank=4, base_keep=0.4),
                "0.38M",
                True,
                [(70.2, 0.3), (8.83, 0.03), (46.6, 0.1), (71.6, 0.1), (2.53, 0.01)],
            ),
            (
                "R-LoDA rank 300",
                _m("r_loda", rank=4, base_rank=300),
                "0.38M",
                True,
                [(69.7, 0.2), (8.79, 0.03), (46.7, 0.0), (71.5, 0.3), (2.52, 0.00)],
            ),
            (
                "LoDA+",
                _m("loda_plus", rank=4),
                "0.38M",
                True,
                [(69.9, 0.3), (8.81, 0.04), (46.5, 0.0), (71.4, 0.0), (2.52, 0.00)],
            ),
            (
                "S-LoDA+ keep 40%",
                _m("s_loda_plus", rank=4, base_keep=0.4),
                "0.38M",
                True,
                [(69.6, 0.5), (8.77, 0.06), (46.7, 0.1), (71.6, 0.2), (2.50, 0.01)],
            ),
            (
                "R-LoDA+ rank 300",
                _m("r_loda_plus", rank=4, base_rank=300),
                "0.38M",
                True,
                [(70.1, 0.4), (8.81, 0.05), (46.4, 0.1), (71.6, 0.3), (2.52, 0.01)],
            ),
        ],
    ),  # fmt: skip
    models={"full": "gpt2_medium", "smoke": "tiny_gpt2"},
    params_head=False,
    param_unit=2**20,
    param_unit_name="Mi",
    select="best",
    notes=(
        "Rows marked * are quoted by LoDA from Hu et al. 2022.",
        "# trainable in units of 2^20 (the paper's 48.00M for FT^{Wq,Wv} is 50,331,648 / 2^20).",
        "Cells: best epoch per run (LoDA reports the best of the evaluated epochs).",
        "Adapter^L rows are told apart by `method.bottleneck`: 6 gives 368,784 (0.37M), 224 gives 11,089,152 "
        "(11.09M) on GPT-2 medium (conf/method/adapter_l.yaml).",
    ),
)
DART = (
    Column("bleu", "BLEU", "dart", ("BLEU", "bleu"), digits=1),
    Column("meteor", "MET", "dart", ("METEOR", "meteor"), scale=100.0, digits=1),
    Column("ter", "TER", "dart", ("TER", "ter"), higher_is_better=False, digits=3),
)


def _dart_row(label, match, vs, b, m, t):
    return (label, match, "0.38M" if label != "FT^{Wq,Wv}" else "48.00M", vs, [b, m, t])


LODA_TABLE2 = Table(
    name="loda_table2_dart",
    title="LoDA Table 2: GPT-2 medium on DART (test set)",
    columns=DART,
    rows=_loda_rows(
        DART,
        [
            _dart_row("FT^{Wq,Wv}", _m("ft_qv"), True, (47.1, 0.1), (36.0, 0.0), (0.480, 0.000)),
            _dart_row("LoRA", _lora(rank=4), False, (47.2, 0.1), (36.0, 0.0), (0.480, 0.000)),
            _dart_row("LoDA", _m("loda", rank=4), True, (47.3, 0.1), (36.0, 0.0), (0.480, 0.000)),
            _dart_row(
                "S-LoDA keep 60%",
                _m("s_loda", rank=4, base_keep=0.6),
                True,
                (47.3, 0.2),
                (36.0, 0.0),
                (0.477, 0.006),
            ),
            _dart_row(
                "S-LoDA keep 50%",
                _m("s_loda", rank=4, base_keep=0.5),
                True,
                (47.1, 0.2),
                (36.0, 0.0),
                (0.480, 0.000),
            ),
            _dart_row(
                "R-LoDA rank 500",
                _m("r_loda", rank=4, base_rank=500),
                True,
                (46.8, 0.7),
                (35.9, 0.1),
                (0.483, 0.006),
            ),
            _dart_row(
                "R-LoDA rank 400",
                _m("r_loda", rank=4, base_rank=400),
                True,
                (46.6, 0.2),
                (35.9, 0.1),
                (0.483, 0.006),
            ),
            _dart_row(
                "R-LoDA rank 300",
                _m("r_loda", rank=4, base_rank=300),
                True,
                (46.5, 0.2),
                (35.5, 0.4),
                (0.487, 0.006),
            ),
            _dart_row("LoDA+", _m("loda_plus", rank=4), True, (47.3, 0.2), (36.0, 0.0), (0.477, 0.006)),
            _dart_row(
                "S-LoDA+ keep 60%",
                _m("s_loda_plus", rank=4, base_keep=0.6),
                True,
                (47.3, 0.1),
                (36.0, 0.0),
                (0.473, 0.006),
            ),
            _dart_row(
                "S-LoDA+ keep 50%",
                _m("s_loda_plus", rank=4, base_keep=0.5),
                True,
                (47.1, 0.2),
                (36.0, 0.0),
                (0.480, 0.000),
            ),
            _dart_row(
                "R-LoDA+ rank 500",
                _m("r_loda_plus", rank=4, base_rank=500),
                True,
                (47.1, 0.5),
                (35.9, 0.1),
                (0.480, 0.000),
            ),
            _dart_row(
                "R-LoDA+ rank 400",
                _m("r_loda_plus", rank=4, base_rank=400),
                True,
                (46.7, 0.2),
                (35.9, 0.1),
                (0.483, 0.006),
            ),
            _dart_row(
                "R-LoDA+ rank 300",
                _m("r_loda_plus", rank=4, base_rank=300),
                True,
                (46.3, 0.6),
                (35.6, 0.5),
                (0.483, 0.006),
            ),
        ],
    ),  # fmt: skip
    models={"full": "gpt2_medium", "smoke": "tiny_gpt2"},
    params_head=False,
    param_unit=2**20,
    param_unit_name="Mi",
    select="best",
    notes=("# trainable in units of 2^20.", "Cells: best epoch per run."),
)


# ---------------------------------------------------------------- our own: real MiniLM-L6 on offline GLUE
MINILM_COLS = tuple(
    c for c in GLUE_COLS if c.task.split("/")[1] in ("cola", "stsb", "mrpc", "rte", "sst2", "wnli")
)
MINILM = Table(
    name="minilm_glue",
    title="MiniLM-L6 (real weights) on the GLUE tasks available offline (no paper numbers)",
    columns=MINILM_COLS,
    rows=_rows(
        MINILM_COLS,
        [
            ("Full FT", _m("ft"), "", None, [None] * len(MINILM_COLS)),
            ("LoRA R=8", _lora(rank=8), "", None, [None] * len(MINILM_COLS)),
            ("R-LoRA R=8", _m("r_lora", rank=8), "", "LoRA R=8", [None] * len(MINILM_COLS)),
            ("GM-LoRA R=8", _m("gm_lora", rank=8), "", "LoRA R=8", [None] * len(MINILM_COLS)),
            ("RM-LoRA R=8", _m("rm_lora", rank=8), "", "LoRA R=8", [None] * len(MINILM_COLS)),
        ],
    ),
    models={"full": "minilm_l6"},
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (RM_TABLE1, RM_TABLE2, RM_TABLE3, RM_TABLE5, RM_VIT_FOOD, LODA_TABLE1, LODA_TABLE2, MINILM)
}
