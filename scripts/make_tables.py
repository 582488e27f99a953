"""`make tables`: the papers' tables from `results/runs/*.json` alone, our numbers beside the paper's.

For every table in `scripts/paper_numbers.py` and each model variant (`full` = the paper's model,
`smoke` = its tiny CPU stand-in) this writes `results/tables/<table>[_smoke].{md,tex,csv}` in the paper's
layout (same rows and columns). Each method row has three sub-rows: ours (mean ± std over seeds, with n),
the paper's value, and Δ = ours − paper. Per column the best of our means is bold (direction per metric).

* Only records with `status == "success"` are used; every other record that would fill a cell is
  counted and listed as excluded (in the table's footer and in `SUMMARY.md`).
* No record is dropped silently: every record read and not used is printed with its reason (and listed
  in `SUMMARY.md` and in the footer of the table it would have filled): an unreadable (truncated) file
  (its table cannot be told: every table's footer names it), a non-success status, a non-finite or
  missing metric (the cell shows it: "n=2 of 3, 1 NaN"; its mean is over the finite seeds), a config
  group with fewer seeds, and a model / task / method that no table row selects.
* A cell = the records matching the row's config selection, the column's task and the variant's model.
  Records of one cell must share a `group_id` (same config but the seed); if several groups match
  (e.g. smoke runs with different sample caps), the one with the most seeds is used and the others are
  named in the footer.
* std: sample std (ddof = 1) over seeds; with n = 1 it is not defined and shown as "n=1".
* Significance vs LoRA at the same rank (a table whose rows name other baselines says which in its notes,
  e.g. RM-DoRA vs DoRA): Welch's two-sample t-test (`scipy.stats.ttest_ind`,
  `equal_var=False`), two-sided; assumes independent seeds and roughly normal scores. `†` p < 0.05,
  `‡` p < 0.01 (not `*`, which Markdown reads as emphasis). With 3 seeds per side (df ≈ 2–4) only differences of several stds register: a missing
  mark means "not shown", never "equal". No correction for the many cells tested.
* "Within the paper's ±std": |ours − paper| ≤ paper std + half a unit of the column's printed precision
  (the paper's std is rounded, ±.0 means < .05); tables that print only a bound (RM-LoRA Table 1:
  std ≤ 0.01) use it. `SUMMARY.md` lists every comparable cell.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import math
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python scripts/make_tables.py` puts scripts/ first, not the repo root
    sys.path.insert(0, str(ROOT))

from scripts.paper_numbers import (  # noqa: E402
    SORA_SPARSITY_TABLE,
    SORA_TABLE4,
    SORA_TABLE4_BATCHES,
    SORA_TABLE4_LR,
    SORA_TABLE4_TRAIN,
    TABLES,
    Column,
    Row,
    Table,
)

MISSING = object()
TEST_NAME = "Welch's t-test (two-sided, unequal variances; scipy.stats.ttest_ind equal_var=False)"


# ---------------------------------------------------------------------------------------------- records
def load_records(runs_dir: Path) -> tuple[list[dict], list[dict]]:
    """(successful records, excluded entries); an unreadable file is an excluded entry, not a crash."""
    ok, excluded = [], []
    for path in sorted(Path(runs_dir).glob("*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:  # a run killed while writing, a full disk, a bad copy
            reason = f"{path.name}: truncated or invalid JSON ({e.msg}; line {e.lineno}, column {e.colno})"
            excluded.append({"run_id": path.stem, "status": "unreadable", "reason": reason, "record": None})
            continue
        except (OSError, UnicodeDecodeError) as e:
            reason = f"{path.name}: cannot read ({e})"
            excluded.append({"run_id": path.stem, "status": "unreadable", "reason": reason, "record": None})
            continue
        if not isinstance(rec, dict):
            excluded.append(
                {"run_id": path.stem, "status": "unreadable", "reason": "not an object", "record": None}
            )
        elif rec.get("status") == "success":
            ok.append(rec)
        else:
            reason = rec.get("error") or rec.get("reason") or ""
            excluded.append({"run_id": rec.get("run_id", path.stem), "status": rec.get("status"),
                             "reason": str(reason)[:200], "record": rec})  # fmt: skip
    return ok, excluded


def get(tree, dotted: str):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return MISSING
        tree = tree[part]
    return tree


def matches(rec: dict, model: str, col: Column, row: Row) -> bool:
    if rec.get("model") != model or rec.get("task") != col.task:
        return False
    config = rec.get("config") or {}
    return all(get(config, k) == v for k, v in row.match.items())


def value(rec: dict, col: Column, select: str) -> tuple[float | None, str]:
    """(the record's number for this column in the paper's units, "") or (None, why it has none)."""
    if col.source == "diagnostics":
        source, where = rec.get("diagnostics") or {}, "diagnostics"
    else:
        metrics = rec.get("metrics") or {}
        evals = (metrics.get("best") or {}).get("eval") if select == "best" else metrics.get("final")
        split = col.split or metrics.get("selection_split")
        if not isinstance(evals, dict):
            return None, f"no {select} eval metrics"
        source = (
            evals.get(split) if split in evals else (next(iter(evals.values())) if len(evals) == 1 else None)
        )
        source, where = source or {}, f"{select} eval {split}"
    for name in col.metric:
        v = source.get(name) if isinstance(source, dict) else None
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if math.isfinite(v):
                return float(v) * col.scale, ""
            return None, f"{name} = {v!r} ({where})"  # a diverged seed: shown, never averaged or hidden
    return None, f"no {'/'.join(col.metric)} in its {where}"


def dropped_kind(reason: str) -> str:
    """How a cell counts a record without a value: NaN, inf or no value."""
    return "NaN" if "= nan" in reason else "inf" if "= inf" in reason or "= -inf" in reason else "no value"


# ---------------------------------------------------------------------------------------------- cells
@dataclass
class Cell:
    values: list[float] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    group_id: str | None = None
    other_groups: list[str] = field(default_factory=list)
    other_runs: list[str] = field(default_factory=list)  # run ids of the other groups
    excluded: list[dict] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (run id, why): successful, no value
    paper: float | None = None
    paper_std: float | None = None
    p_value: float | None = None
    best: bool = False

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n >= 2 else None

    @property
    def diff(self) -> float | None:
        return None if self.mean is None or self.paper is None else self.mean - self.paper


def pick_group(recs: list[dict]) -> tuple[str | None, list[dict], list[str]]:
    """The group with the most seeds (ties: the newest); the other groups' ids."""
    groups: dict[str, list[dict]] = {}
    for r in recs:
        groups.setdefault(r.get("group_id") or r.get("run_id"), []).append(r)
    if not groups:
        return None, [], []
    best = max(groups, key=lambda g: (len(groups[g]), max(str(r.get("started_at", "")) for r in groups[g])))
    return best, groups[best], sorted(g for g in groups if g != best)


def welch(a: list[float], b: list[float]) -> float | None:
    """Two-sided p of Welch's t-test; None when either side has n < 2 or both have zero variance."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy.stats import ttest_ind

    if statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0:
        return None if statistics.fmean(a) == statistics.fmean(b) else 0.0
    return float(ttest_ind(a, b, equal_var=False).pvalue)


def build(table: Table, model: str, records: list[dict], excluded: list[dict], select: str) -> dict:
    """{row label: {column key: Cell}} plus per-row params."""
    cells: dict[str, dict[str, Cell]] = {}
    params: dict[str, str] = {}
    for row in table.rows:
        cells[row.label] = {}
        row_recs = []
        for col in table.columns:
            hits = [r for r in records if matches(r, model, col, row)]
            group, used, others = pick_group(hits)
            other_runs = sorted(r.get("run_id", "?") for r in hits if r not in used)
            cell = Cell(group_id=group, other_groups=others, other_runs=other_runs)
            for r in used:
                v, why = value(r, col, select)
                if v is not None:
                    cell.values.append(v)
                    cell.run_ids.append(r.get("run_id", "?"))
                else:
                    cell.dropped.append((r.get("run_id", "?"), why))
            row_recs += used
            cell.excluded = [e for e in excluded if e["record"] and matches(e["record"], model, col, row)]
            if col.key in row.paper:
                cell.paper, cell.paper_std = row.paper[col.key]
            cells[row.label][col.key] = cell
        # a metric a record lacks in one column while it fills another of the row is no fault (Full FT
        # has no rank(ΔW)); a non-finite value always is, and so is a record that fills nothing
        filled = {run for c in cells[row.label].values() for run in c.run_ids}
        for c in cells[row.label].values():
            c.dropped = [
                (run, why) for run, why in c.dropped if run not in filled or dropped_kind(why) != "no value"
            ]
        params[row.label] = _params(row_recs, table)
    for row in table.rows:
        if row.vs and row.vs in cells:
            for key, cell in cells[row.label].items():
                cell.p_value = welch(cell.values, cells[row.vs][key].values)
    for col in table.columns:
        means = [(lab, c[col.key].mean) for lab, c in cells.items() if c[col.key].mean is not None]
        if means:
            target = (max if col.higher_is_better else min)(m for _, m in means)
            for lab, m in means:
                cells[lab][col.key].best = m == target
    return {"cells": cells, "params": params, "sora_sparsity": sora_sparsity(table, model, records)}


# ---------------------------------------------------------------------------------------------- SoRA
def sora_sparsity(table: Table, model: str, records: list[dict]) -> dict | None:
    """{SoRA row label: {task: [% of zero gates per seed]}} beside Table 4's column; None elsewhere.

    A record's `params.gate_sparsity` is the fraction of its gates (= ranks) that ended exactly zero."""
    if table.name != SORA_SPARSITY_TABLE:
        return None
    out = {}
    for row in table.rows:
        if row.match.get("method.name") != "sora":
            continue
        out[row.label] = {}
        for task in SORA_TABLE4:
            col = next(c for c in table.columns if c.task == task)
            _, used, _ = pick_group([r for r in records if matches(r, model, col, row)])
            vals = [(r.get("params") or {}).get("gate_sparsity") for r in used]
            out[row.label][task] = [
                100 * v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)
            ]
    return out


@functools.cache
def sora_table4_bounds() -> dict:
    """task -> (steps, `adapters.sora.Survival`) for Table 4's own setting, in the case most favourable
    to the gates: the fewest steps of SORA_TABLE4_BATCHES, no warm-up (the authors' scripts pass no
    warmup_ratio: HF's 0, the largest Σ lr_t), every Adam step pushing the gate outward."""
    from adapters.sora import Config, survival  # late: torch, only for the SoRA table

    out = {}
    for task, (xi, _, epochs) in SORA_TABLE4.items():
        steps = min(math.ceil(SORA_TABLE4_TRAIN[task] / b) * epochs for b in SORA_TABLE4_BATCHES)
        out[task] = (steps, survival(Config(sparse_lambda=xi, gate_lr=SORA_TABLE4_LR), steps))
    return out


def sora_markdown(table: Table, built: dict) -> list[str]:
    data = built.get("sora_sparsity")
    if not data:
        return []
    bounds = sora_table4_bounds()
    labels = list(data)
    lines = [
        "",
        "## SoRA sparsity beside RM-LoRA Table 4",
        "",
        "| task | Table 4 λ (ξ) | Table 4 sparsity | "
        + " | ".join(f"ours {lab}: zero gates" for lab in labels)
        + " | zero for sure (Table 4's setting, worst case) |",
        "|" + "---|" * (4 + len(labels)),
    ]
    for task, (xi, paper, _) in SORA_TABLE4.items():
        ours = []
        for lab in labels:
            v = data[lab][task]
            ours.append(f"{statistics.fmean(v):.2f}% (n={len(v)})" if v else "—")
        steps, s = bounds[task]
        if s.worst_case is None:
            sure = "no guarantee"
        elif s.kept_fraction < 1e-6:
            sure = f"all ({steps} steps: |g0| < {s.worst_case:.3g})"
        else:
            sure = f"≥ {100 * (1 - s.kept_fraction):.2f}% ({steps} steps: |g0| < {s.worst_case:.3g})"
        lines.append(f"| {task} | {xi:g} | {paper:.2f}% | " + " | ".join(ours) + f" | {sure} |")
    return lines


def sora_footer(table: Table) -> list[str]:
    """One line when Table 4's own setting provably cannot reach the sparsity it reports."""
    if table.name != SORA_SPARSITY_TABLE:
        return []
    bounds = sora_table4_bounds()
    dead = [t for t, (_, s) in bounds.items() if s.kept_fraction is not None and s.kept_fraction < 1e-6]
    if not dead:
        return []
    names = ", ".join(next(c.title for c in table.columns if c.task == t).split()[0] for t in dead)
    need = ", ".join(f"{bounds[t][1].worst_case:.3g}" for t in dead)
    reported = ", ".join(f"{SORA_TABLE4[t][1]:.2f}%" for t in dead)
    return [
        f"SoRA: Table 4's own setting provably zeroes every gate on {names} (ξ > gate lr {SORA_TABLE4_LR:g}: "
        f"even pushed outward every step, a gate must start at |g| ≥ {need} to survive, at the fewest steps "
        f"of batch {max(SORA_TABLE4_BATCHES)} and no warm-up), so the sparsity Table 4 reports there "
        f"({reported}) cannot be reached (adapters/sora.py `survival`)."
    ]


def _params(recs: list[dict], table: Table) -> str:
    """'T/I' in the table's unit; a min–max range where runs differ (task heads, vocabularies, AdaLoRA's # I)."""
    t_key, i_key = (
        ("trainable", "inference") if table.params_head else ("method_trainable", "method_inference")
    )
    ts, is_ = [], []
    for r in recs:
        p = r.get("params") or {}
        if isinstance(p.get(t_key), (int, float)) and isinstance(p.get(i_key), (int, float)):
            ts.append(p[t_key])
            is_.append(p[i_key])
    if not ts:
        return ""

    def span(xs):
        lo, hi = _count(min(xs), table), _count(max(xs), table)
        return lo if lo == hi else f"{lo.removesuffix(table.param_unit_name)}–{hi}"

    return f"{span(ts)}/{span(is_)}"


def _count(n: float, table: Table) -> str:
    x = n / table.param_unit
    text = f"{x:.3g}" if x < 0.1 else f"{x:.2f}" if x < 100 else f"{x:.1f}"
    return text + table.param_unit_name


# ---------------------------------------------------------------------------------------------- format
def fnum(x: float | None, digits: int, signed: bool = False) -> str:
    if x is None:
        return ""
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def mark(p: float | None) -> str:
    if p is None:
        return ""
    return "‡" if p < 0.01 else "†" if p < 0.05 else ""


def within(cell: Cell, col: Column, table: Table) -> bool | None:
    std = cell.paper_std if cell.paper_std is not None else table.std_bound
    if cell.diff is None or std is None:
        return None
    return abs(cell.diff) <= std + 0.5 * 10 ** (-col.digits) + 1e-12


def ours_text(cell: Cell, col: Column) -> str:
    n = f"n={cell.n}"
    if cell.dropped:  # seeds without a value are counted in the cell, not left out of it
        kinds = Counter(dropped_kind(why) for _, why in cell.dropped)
        n += f" of {cell.n + len(cell.dropped)}, " + ", ".join(
            f"{k} {kind}" for kind, k in sorted(kinds.items())
        )
    if cell.mean is None:
        return f"— ({n})" if cell.dropped else "—"
    s = fnum(cell.mean, col.digits)
    s += f" ± {fnum(cell.std, col.digits)}" if cell.std is not None else ""
    return f"{s} ({n}){mark(cell.p_value)}"


def paper_text(cell: Cell, col: Column) -> str:
    if cell.paper is None:
        return "—"
    return fnum(cell.paper, col.digits) + (
        f" ± {fnum(cell.paper_std, col.digits)}" if cell.paper_std is not None else ""
    )


def grid(table: Table, built: dict) -> list[tuple[list[str], list[bool]]]:
    """Text rows (with a bold flag per cell) in the paper's layout: ours / paper / Δ per method."""
    out = []
    for row in table.rows:
        c = built["cells"][row.label]
        ours = [ours_text(c[col.key], col) for col in table.columns]
        bold = [c[col.key].best for col in table.columns]
        out.append(([row.label, built["params"][row.label] or "—", *ours], [False, False, *bold]))
        paper = [paper_text(c[col.key], col) for col in table.columns]
        out.append((["↳ paper", row.paper_params or "—", *paper], [False] * (2 + len(paper))))
        diffs = [fnum(c[col.key].diff, col.digits, signed=True) or "—" for col in table.columns]
        out.append((["↳ Δ ours − paper", "", *diffs], [False] * (2 + len(diffs))))
    return out


def header(table: Table) -> list[str]:
    unit = "2^20" if table.param_unit == 2**20 else "10^6"
    head = "with head" if table.params_head else "without head"
    return ["method", f"# T / I ({unit}, {head})", *(c.title for c in table.columns)]


def baseline_text(table: Table) -> str:
    """What † / ‡ compare with: the papers' tables test against plain LoRA at the same rank; a table
    whose rows name other baselines (peft_variants_glue: RM-DoRA vs DoRA) says so in its notes."""
    bases = {b.match.get("method.name") for r in table.rows for b in table.rows if b.label == r.vs}
    return "LoRA at the same rank" if bases <= {"lora"} else "each row's baseline row (see the notes)"


def footer(table: Table, built: dict, model: str, select: str) -> list[str]:
    cells = [c for row in built["cells"].values() for c in row.values()]
    used = sorted({r for c in cells for r in c.run_ids})
    lines = [
        f"Model: `{model}`. Cells: {'best' if select == 'best' else 'final'} epoch of each run, mean ± sample "
        f"std over seeds (n = number of seeds). Bold: best of our means per column.",
        f"Significance vs {baseline_text(table)}: {TEST_NAME}; † p < 0.05, ‡ p < 0.01. With 3 seeds per side "
        "the test detects only differences of several standard deviations; no mark does not mean no difference.",
        f"Records used: {len(used)} runs; filled cells: {sum(c.n > 0 for c in cells)} of {len(cells)}.",
        *table.notes,
        *sora_footer(table),
    ]
    excl = {e["run_id"]: e for c in cells for e in c.excluded}
    if excl:
        lines.append(f"Excluded (status != success): {len(excl)}: " + ", ".join(
            f"{k} ({e['status']}{': ' + e['reason'] if e['reason'] else ''})" for k, e in sorted(excl.items())))  # fmt: skip
    amb = sorted({g for c in cells for g in c.other_groups})
    if amb:
        lines.append(f"Other config groups matching a cell, not used (fewer seeds): {', '.join(amb)}")
    dropped = sorted({(run, why) for c in cells for run, why in c.dropped})
    if dropped:
        lines.append(f"Successful records without a value for their cell (counted in its n, not averaged): "
                     f"{len(dropped)}: " + ", ".join(f"{run} ({why})" for run, why in dropped))  # fmt: skip
    for title, entries in (
        ("Records of this table's model and tasks that match no row", built.get("unmatched", [])),
        ("Unreadable record files (which table they belong to cannot be told)", built.get("unreadable", [])),
    ):
        if entries:
            lines.append(
                f"{title}: {len(entries)}: " + ", ".join(f"{e['run_id']} ({e['reason']})" for e in entries)
            )
    return lines


def _bold_md(text: str) -> str:
    """Bold the value, not the significance mark after it (else '**...****')."""
    core = text.rstrip("†‡")
    return f"**{core}**{text[len(core) :]}"


def markdown(table: Table, built: dict, model: str, select: str) -> str:
    h = header(table)
    lines = [f"# {table.title}", "", "| " + " | ".join(h) + " |", "|" + "---|" * len(h)]
    for texts, bold in grid(table, built):
        texts = [t.replace("|", "\\|") for t in texts]  # a literal | would split the cell
        lines.append(
            "| " + " | ".join(_bold_md(t) if b and t != "—" else t for t, b in zip(texts, bold)) + " |"
        )
    lines += sora_markdown(table, built)
    lines += [""] + [f"- {line}" for line in footer(table, built, model, select)]
    return "\n".join(lines) + "\n"


TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
       "{": r"\{", "}": r"\}", "^": r"\^{}", "~": r"\~{}"}  # fmt: skip
TEX_UNI = {"Δ": r"$\Delta$", "‖": r"$\|$", "ᵀ": r"$^\top$", "−": "-", "²": r"$^2$", "→": r"$\to$",
           "±": r"$\pm$", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "↳": r"$\hookrightarrow$", "—": "--", "≤": r"$\leq$"}  # fmt: skip


def tex(s: str) -> str:
    s = "".join(TEX.get(ch, ch) for ch in s)
    return "".join(TEX_UNI.get(ch, ch) for ch in s)


def latex(table: Table, built: dict, model: str, select: str) -> str:
    h = header(table)
    lines = [
        f"% {table.title} -- generated by scripts/make_tables.py from results/runs; do not edit",
        r"\begin{table}[t]\centering\small",
        rf"\caption{{{tex(table.title)} (model \texttt{{{tex(model)}}})}}",
        r"\begin{tabular}{ll" + "r" * len(table.columns) + "}",
        r"\toprule",
        " & ".join(tex(x) for x in h) + r" \\",
        r"\midrule",
    ]
    for i, (texts, bold) in enumerate(grid(table, built)):
        cells = [rf"\textbf{{{tex(t)}}}" if b and t != "—" else tex(t) for t, b in zip(texts, bold)]
        lines.append(
            " & ".join(cells) + r" \\" + (r" \midrule" if i % 3 == 2 and i + 1 < 3 * len(table.rows) else "")
        )
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    lines += [r"\par\footnotesize " + tex(line) for line in footer(table, built, model, select)]
    lines += [r"\end{table}", ""]
    return "\n".join(lines)


CSV_STATS = (
    "mean",
    "std",
    "n",
    "paper",
    "paper_std",
    "diff",
    "within_paper_std",
    "p_vs_lora",
    "best",
    "run_ids",
    "not_used",
)


def to_csv(table: Table, built: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "stat", "params_T/I", *(c.key for c in table.columns)])
    for row in table.rows:
        c = built["cells"][row.label]
        for stat in CSV_STATS:
            vals = []
            for col in table.columns:
                cell = c[col.key]
                v = {
                    "mean": cell.mean, "std": cell.std, "n": cell.n, "paper": cell.paper,
                    "paper_std": cell.paper_std, "diff": cell.diff, "within_paper_std": within(cell, col, table),
                    "p_vs_lora": cell.p_value, "best": cell.best, "run_ids": ";".join(cell.run_ids),
                    "not_used": ";".join(f"{run}: {why}" for run, why in cell.dropped),
                }[stat]  # fmt: skip
                vals.append("" if v is None else repr(v) if isinstance(v, float) else v)
            params = (
                built["params"][row.label] if stat == "mean" else row.paper_params if stat == "paper" else ""
            )
            w.writerow([row.label, stat, params, *vals])
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- main
def summarize(
    results: list[tuple[Table, str, dict]], excluded: list[dict], n_ok: int, unused: list[str] = ()
) -> str:
    lines = ["# Summary: our cells vs the paper's ±std", ""]
    if unused:
        lines += [f"Records read but not used: {len(unused)}", *(f"- {line}" for line in unused), ""]
    lines.append(f"Records: {n_ok} successful used as input, {len(excluded)} excluded (status != success):")
    for status, k in sorted(Counter(str(e["status"]) for e in excluded).items()):
        lines.append(f"- {status}: {k}")
    for e in excluded:
        lines.append(f"  - `{e['run_id']}` {e['status']}: {e['reason']}")
    for table, variant, built in results:
        rows, within_n, outside_n = [], 0, 0
        for row in table.rows:
            for col in table.columns:
                cell = built["cells"][row.label][col.key]
                w = within(cell, col, table)
                if w is None:
                    continue
                within_n += w
                outside_n += not w
                std = cell.paper_std if cell.paper_std is not None else table.std_bound
                rows.append(f"| {row.label} | {col.title} | {fnum(cell.mean, col.digits)} (n={cell.n}) | "
                            f"{fnum(cell.paper, col.digits)} ± {fnum(std, col.digits)} | "
                            f"{fnum(cell.diff, col.digits, True)} | {'yes' if w else 'no'} |")  # fmt: skip
        lines += ["", f"## {table.name} ({variant})", ""]
        if not rows:
            lines.append("No cell has both our value and a paper value with a std.")
            continue
        lines.append(f"{within_n} of {within_n + outside_n} comparable cells within the paper's ±std.")
        lines += [
            "",
            "| method | column | ours | paper ± std | Δ | within |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    return "\n".join(lines) + "\n"


def make_tables(
    runs_dir: Path, out_dir: Path, names=None, select: str | None = None, report=print
) -> list[Path]:
    from core import atomic_write

    records, excluded = load_records(runs_dir)
    unmatched = [{"run_id": r.get("run_id", "?"), "reason": why, "record": r}
                 for r in records if (why := no_cell_reason(r)) is not None]  # fmt: skip
    unreadable = [e for e in excluded if e["status"] == "unreadable"]
    written, results = [], []
    for name, table in TABLES.items():
        if names and name not in names:
            continue
        for variant, model in table.models.items():
            # the paper's variant always (its numbers beside empty cells); smoke variants once they have runs
            if variant != "full" and not any(r.get("model") == model for r in records):
                continue
            sel = select or table.select
            built = build(table, model, records, excluded, sel)
            built["unmatched"] = [
                e for e in unmatched
                if e["record"].get("model") == model and e["record"].get("task") in {c.task for c in table.columns}
            ]  # fmt: skip
            built["unreadable"] = unreadable
            results.append((table, variant, built))
            stem = table.name if variant == "full" else f"{table.name}_{variant}"
            for ext, text in (
                ("md", markdown(table, built, model, sel)),
                ("tex", latex(table, built, model, sel)),
                ("csv", to_csv(table, built)),
            ):
                path = out_dir / f"{stem}.{ext}"
                atomic_write(path, lambda tmp, text=text: Path(tmp).write_text(text))
                written.append(path)
    unused = unused_lines(results, excluded, unmatched)
    if unused:  # on stdout too: a record that fills nothing must not pass unnoticed
        report(f"Records read but not used: {len(unused)}")
        for line in unused:
            report(f"  {line}")
    path = out_dir / "SUMMARY.md"
    text = summarize(results, excluded, len(records), unused)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    written.append(path)
    return written


def no_cell_reason(rec: dict) -> str | None:
    """Why a successful record fills no cell of any table (every table, every variant); None if it does."""
    model, task = rec.get("model"), rec.get("task")
    tables = [t for t in TABLES.values() if model in t.models.values()]
    if not tables:
        return f"model {model!r} is in no table"
    cols = [(t, c) for t in tables for c in t.columns if c.task == task]
    if not cols:
        return f"task {task!r} is no column of a table for model {model!r}"
    if any(matches(rec, model, c, row) for t, c in cols for row in t.rows):
        return None
    method = get(rec.get("config") or {}, "method")
    shown = ", ".join(f"method.{k}={v}" for k, v in sorted(method.items()) if not isinstance(v, (dict, list))) \
        if isinstance(method, dict) else "no method config"  # fmt: skip
    names = ", ".join(sorted({t.name for t, _ in cols}))
    return f"its config matches no row of {names} ({shown})"


def unused_lines(results, excluded: list[dict], unmatched: list[dict]) -> list[str]:
    """One line per record read and not used, with its reason and the table(s) it would have filled."""
    lines = {}
    for e in excluded:
        where = sorted({f"{t.name}{'' if v == 'full' else '_' + v}" for t, v, b in results
                        for c in (x for row in b["cells"].values() for x in row.values())
                        if any(x["run_id"] == e["run_id"] for x in c.excluded)})  # fmt: skip
        lines[e["run_id"]] = (
            f"{e['run_id']}: {e['status']}"
            + (f": {e['reason']}" if e["reason"] else "")
            + (f" (would fill {', '.join(where)})" if where else "")
        )
    for table, variant, built in results:
        stem = table.name if variant == "full" else f"{table.name}_{variant}"
        for row, cells in built["cells"].items():
            for key, cell in cells.items():
                for run, why in cell.dropped:
                    lines.setdefault(run, f"{run}: no value for {stem} {row} / {key}: {why}")
                for run in cell.other_runs:
                    lines.setdefault(run, f"{run}: {stem} {row} / {key} uses config group {cell.group_id} "
                                          f"(more seeds); this record's group is not shown")  # fmt: skip
    for e in unmatched:
        lines.setdefault(e["run_id"], f"{e['run_id']}: fills no table: {e['reason']}")
    return [lines[k] for k in sorted(lines)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=Path, default=ROOT / "results" / "runs", help="folder of run records")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "tables")
    ap.add_argument("--tables", default=None, help=f"comma-separated subset of: {', '.join(TABLES)}")
    ap.add_argument("--select", choices=("final", "best"), default=None, help="override each table's epoch")
    args = ap.parse_args(argv)
    names = set(args.tables.split(",")) if args.tables else None
    if names and names - set(TABLES):
        sys.exit(
            f"error: unknown table(s) {', '.join(sorted(names - set(TABLES)))}; valid: {', '.join(TABLES)}"
        )
    if not args.runs.is_dir():
        print(f"note: {args.runs} does not exist: every cell is missing")
    for path in make_tables(args.runs, args.out, names, args.select):
        print(path)


if __name__ == "__main__":
    main()
