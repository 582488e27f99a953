"""The papers' tables: layout (rows, columns), how records map to cells, and the printed numbers.

The numbers are data, typed in from `../shared/PAPERS.md` (RM-LoRA Tables 1-5, LoDA Tables 1-2) into
`scripts/paper_tables/<table>.yaml`, one file per table; this module reads them into `Table`s.
`scripts/make_tables.py` reads only these and `results/runs/*.json`.

A table file holds the `Table` fields below (`name` = the file's name) with its `columns` and `rows`:

* a **column** names the task (the record's `task` label), the metric (alternative names: the first one
  present is used), the eval split (absent: the record's own selection split, i.e. its first eval split)
  and a `scale` that puts our value in the paper's units (GLUE fractions as printed; SQuAD EM/F1 0-100
  in both; E2E BLEU/METEOR/ROUGE-L are 0-1 from `tasks.metrics.e2e` and percent in the paper; DART
  METEOR 0-1 vs percent). Fields left out take the `Column` defaults.
* a **row** has a `label`, the `method` fields a record's resolved config must equal to fill it (each
  becomes a `method.<field>` key of `Row.match`), the paper's `params` ("# T / I"), `vs` (the label of
  the baseline row for the significance test: LoRA at the same rank) and `paper`: the printed values
  in column order, each `x`, `"x ± std"`, or `null` where the paper prints nothing; no `paper` at all
  for a row the paper does not have.

A table has a `full` model (the paper's) and a `smoke` model (the tiny CPU stand-in); the same layout is
filled from either. Names of methods/keys that other branches add (adalora, sora, ft_qv, loda*,
adapter_*, prefix, squad, e2e, dart, cifar100, food101) are what those branches' issues ask for; a
record that does not exist yet is a missing cell, never an error.

`rm_table4_sora.yaml` is not a results table: Table 4's SoRA hyper-parameters and reported sparsity,
shown beside Table 1's SoRA rows (`SORA_*` below).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from tasks.sizes import GLUE_TRAIN

DATA = Path(__file__).resolve().with_name("paper_tables")
# The order make_tables writes them in (and lists them in SUMMARY.md and --help).
TABLE_NAMES = (
    "rm_table1_glue",
    "rm_table2_squad_deberta",
    "rm_table3_squad_gpt2",
    "rm_table5_vit_cifar100",
    "rm_fig2_vit_food101",
    "loda_table1_e2e",
    "loda_table2_dart",
    "minilm_glue",
    "peft_variants_glue",
)
SORA_FILE = "rm_table4_sora"


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


def _read(name: str) -> dict:
    path = DATA / f"{name}.yaml"
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: expected a mapping at the top")
    return spec


def _check_keys(spec: dict, allowed: set[str], required: set[str], where: str) -> None:
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: expected a mapping, got {spec!r}")
    if unknown := set(spec) - allowed:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; valid: {sorted(allowed)}")
    if missing := required - set(spec):
        raise ValueError(f"{where}: missing key(s) {sorted(missing)}")


def parse_value(v, where: str) -> tuple[float, float | None]:
    """A printed cell: `x` -> (x, None); `"x ± std"` -> (x, std), both in the paper's units."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v, None
    if isinstance(v, str) and v.count("±") == 1:
        x, std = v.split("±")
        try:
            return float(x), float(std)
        except ValueError:
            pass
    raise ValueError(f"{where}: {v!r} is not a number or 'x ± std'")


def _column(spec: dict, where: str) -> Column:
    _check_keys(spec, {f.name for f in fields(Column)}, {"key", "title", "task", "metric"}, where)
    return Column(**{**spec, "metric": tuple(spec["metric"])})


def _row(spec: dict, columns: tuple[Column, ...], where: str) -> Row:
    _check_keys(spec, {"label", "method", "params", "vs", "paper"}, {"label", "method"}, where)
    where = f"{where} ({spec['label']})"
    values = spec.get("paper", [None] * len(columns))
    if len(values) != len(columns):
        raise ValueError(f"{where}: {len(values)} paper values for {len(columns)} columns")
    paper = {c.key: parse_value(v, f"{where} {c.key}") for c, v in zip(columns, values) if v is not None}
    match = {f"method.{k}": v for k, v in spec["method"].items()}
    return Row(spec["label"], match, paper, spec.get("params", ""), spec.get("vs"))


def load_table(name: str) -> Table:
    spec = _read(name)
    where = f"{DATA / name}.yaml"
    _check_keys(spec, {f.name for f in fields(Table)}, {"name", "title", "columns", "rows", "models"}, where)
    if spec["name"] != name:
        raise ValueError(f"{where}: name {spec['name']!r} differs from the file's name")
    columns = tuple(_column(c, f"{where} column {i}") for i, c in enumerate(spec["columns"]))
    rows = tuple(_row(r, columns, f"{where} row {i}") for i, r in enumerate(spec["rows"]))
    labels = {r.label for r in rows}
    for r in rows:
        if r.vs is not None and r.vs not in labels:
            raise ValueError(f"{where}: row {r.label!r} is compared with {r.vs!r}, which is no row")
    return Table(**{**spec, "columns": columns, "rows": rows, "notes": tuple(spec.get("notes", ()))})


TABLES: dict[str, Table] = {name: load_table(name) for name in TABLE_NAMES}
RM_TABLE1, RM_TABLE2, RM_TABLE3, RM_TABLE5, RM_VIT_FOOD, LODA_TABLE1, LODA_TABLE2, MINILM, PEFT_VARIANTS = (
    TABLES.values()
)

# RM-LoRA Table 4's SoRA columns, shown beside Table 1's SoRA rows by make_tables.
_sora = _read(SORA_FILE)
_SORA_KEYS = {"beside", "lr", "batches", "tasks"}
_check_keys(_sora, _SORA_KEYS, _SORA_KEYS, f"{DATA / SORA_FILE}.yaml")
SORA_SPARSITY_TABLE: str = _sora["beside"]
# task -> (λ, "Sparsity" in %, epochs)
SORA_TABLE4: dict[str, tuple] = {task: tuple(v) for task, v in _sora["tasks"].items()}
SORA_TABLE4_LR: float = _sora["lr"]
SORA_TABLE4_BATCHES: tuple[int, ...] = tuple(_sora["batches"])
# GLUE train examples per task: the step counts of Table 4's setting (tasks/sizes.py holds the sizes)
SORA_TABLE4_TRAIN: dict[str, int] = {task: GLUE_TRAIN[task.partition("/")[2]] for task in SORA_TABLE4}
