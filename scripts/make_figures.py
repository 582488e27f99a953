"""`make figures`: RM-LoRA Figures 1–2 from run records and LoDA Appendix A.1 from energy-curve JSON.

Figures 1–2 (`results/figures/rm_fig{1,2}_<task>[_smoke].png`): four panels vs epoch — test loss, test
accuracy, train accuracy, generalization error (train acc − test acc) — one line per method × rank
(mean over seeds, band = ± one sample std when n ≥ 2). Read from each successful record's
`metrics.history`; the fields expected per epoch entry (tolerant: any may be missing, then that
point is skipped):

    entry["epoch"]                                  # x axis (else its position + 1)
    entry["eval"][split]["loss"]                    # test loss
    entry["eval"][split]["acc" | "accuracy"]        # test accuracy (fraction; plotted in %)
    entry["train"]["acc" | "accuracy"]              # train accuracy (the epoch's running mean)
    entry["generalization_gap"][split]              # generalization error (the runner writes it),
                                                    # else eval[split]["gen_error"], else train − test acc

`split` = `--split` if given, else "test" when present, else the record's `metrics.selection_split`.
Records are grouped by (method name, `method.rank`); within one such line the config group with the
most seeds is used (as the tables do).

A.1 (`results/figures/a1_energy_<name>.png`): for every `results/energy/*.json` that
`scripts/energy_curves.py` writes, shaped

    {"svd": {"R": [...], "energy": [...]},                  # Σ_{i≤R} σ_i² / Σ σ_i² per R
     "sparsity": {"fraction": [...], "energy": [...]},      # energy kept vs fraction of entries kept
     "title": "...", "markers": {"R": [300, 400, 500], "fraction": [0.4, 0.5, 0.6]}}   # optional

two panels: energy vs R, energy vs kept fraction (the LoDA settings marked when `markers` is given).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.make_tables import get, load_records, pick_group  # noqa: E402

# (figure name, task label) × model variants; Figures 1 and 2 of RM-LoRA
FIGURES = {"rm_fig1": "cifar100", "rm_fig2": "food101"}
MODELS = {"full": "vit_b16", "smoke": "tiny_vit"}
PANELS = (
    ("test_loss", "test loss", False),
    ("test_acc", "test accuracy (%)", True),
    ("train_acc", "train accuracy (%)", True),
    ("gen_error", "generalization error (train − test acc, %)", True),
)
LABELS = {"ft": "Full FT", "lora": "LoRA", "gm_lora": "GM-LoRA", "r_lora": "R-LoRA", "rm_lora": "RM-LoRA",
          "adalora": "AdaLoRA", "sora": "SoRA"}  # fmt: skip


def _num(d, *names):
    if not isinstance(d, dict):
        return None
    for n in names:
        v = d.get(n)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return float(v)
    return None


def curves(rec: dict, split: str | None = None) -> dict[str, dict[int, float]]:
    """{panel: {epoch: value}} from one record's history (accuracies in %)."""
    metrics = rec.get("metrics") or {}
    out = {p: {} for p, _, _ in PANELS}
    for i, entry in enumerate(metrics.get("history") or []):
        if not isinstance(entry, dict):
            continue
        epoch = entry.get("epoch", i + 1)
        evals = entry.get("eval") or {}
        s = split or ("test" if "test" in evals else metrics.get("selection_split"))
        ev = evals.get(s) if isinstance(evals, dict) else None
        loss, test_acc = _num(ev, "loss"), _num(ev, "acc", "accuracy")
        train_acc = _num(entry.get("train"), "acc", "accuracy")
        gen = _num(entry.get("generalization_gap"), s)  # the runner: train − eval main metric, per split
        gen = _num(ev, "gen_error", "generalization_error") if gen is None else gen
        gen = _num(entry, "gen_error", "generalization_error") if gen is None else gen
        if gen is None and train_acc is not None and test_acc is not None:
            gen = train_acc - test_acc
        for key, v, pct in (("test_loss", loss, 1), ("test_acc", test_acc, 100), ("train_acc", train_acc, 100),
                            ("gen_error", gen, 100)):  # fmt: skip
            if v is not None:
                out[key][epoch] = v * pct
    return out


def lines_for(records: list[dict], model: str, task: str, split: str | None) -> dict[str, list[dict]]:
    """{line label: records of one config group} for a figure."""
    by_line: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("model") != model or r.get("task") != task:
            continue
        name, rank = get(r.get("config") or {}, "method.name"), get(r.get("config") or {}, "method.rank")
        rank = None if name == "ft" or not isinstance(rank, int) else rank
        by_line.setdefault((str(r.get("method", name)), rank), []).append(r)
    out = {}
    for (method, rank), recs in sorted(by_line.items(), key=lambda kv: (kv[0][1] or 0, kv[0][0])):
        _, used, _ = pick_group(recs)
        label = LABELS.get(method, method) + (f" R={rank}" if rank else "")
        out[label] = used
    return out


def mean_band(per_seed: list[dict[int, float]]):
    epochs = sorted({e for c in per_seed for e in c})
    xs, mean, lo, hi = [], [], [], []
    for e in epochs:
        vals = [c[e] for c in per_seed if e in c]
        m = statistics.fmean(vals)
        s = statistics.stdev(vals) if len(vals) >= 2 else 0.0
        xs.append(e), mean.append(m), lo.append(m - s), hi.append(m + s)
    return xs, mean, lo, hi


def plot_figure(lines: dict[str, list[dict]], title: str, path: Path, split: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from core import atomic_write

    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    ranks = sorted({lab.split("R=")[-1] for lab in lines if "R=" in lab})
    styles = ["-", "--", ":", "-."]
    colors = {}
    for label, recs in lines.items():
        per_seed = [curves(r, split) for r in recs]
        method = label.split(" R=")[0]
        color = colors.setdefault(method, f"C{len(colors)}")
        ls = styles[ranks.index(label.split("R=")[-1]) % len(styles)] if "R=" in label else "-"
        for ax, (key, ylabel, _) in zip(axes, PANELS):
            xs, m, lo, hi = mean_band([c[key] for c in per_seed])
            if not xs:
                continue
            ax.plot(xs, m, ls, color=color, label=f"{label} (n={len(recs)})", lw=1.6, marker="o", ms=3)
            ax.fill_between(xs, lo, hi, color=color, alpha=0.18, lw=0)
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
    from matplotlib.ticker import MaxNLocator

    epochs = sorted(
        {e for recs in lines.values() for r in recs for c in curves(r, split).values() for e in c}
    )
    for ax, (_, ylabel, _) in zip(axes, PANELS):
        if 0 < len(epochs) <= 12:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(ylabel.split(" (")[0])
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="lower center", ncol=min(6, max(1, len(labels))), fontsize=8, frameon=False
    )
    fig.suptitle(title + " — mean over seeds, band ± 1 std")
    fig.tight_layout(rect=(0, 0.12 if len(labels) <= 6 else 0.2, 1, 0.95))
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def plot_energy(data: dict, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from core import atomic_write

    svd, sp = dict(data.get("svd") or {}), dict(data.get("sparsity") or data.get("magnitude") or {})
    if "R" not in svd and "rank" in svd:  # scripts/energy_curves.py names them rank / magnitude
        svd["R"] = svd["rank"]
    if not (svd.get("R") and svd.get("energy") and sp.get("fraction") and sp.get("energy")):
        raise ValueError(
            "energy JSON needs svd.R, svd.energy, sparsity.fraction, sparsity.energy (non-empty lists)"
        )
    if len(svd["R"]) != len(svd["energy"]) or len(sp["fraction"]) != len(sp["energy"]):
        raise ValueError("energy JSON: each x list must be as long as its energy list")
    markers = data.get("markers") or {}
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    a.plot(svd["R"], svd["energy"], color="C0", lw=1.8)
    a.set_xlabel("rank R of the truncated SVD")
    a.set_ylabel(r"energy kept  $\sum_{i\leq R}\sigma_i^2\,/\,\sum_i\sigma_i^2$")
    a.set_title("low-rank approximation")
    b.plot([100 * f for f in sp["fraction"]], sp["energy"], color="C1", lw=1.8)
    b.set_xlabel("entries kept (% of largest magnitude)")
    b.set_ylabel(r"energy kept  $\sum_{\mathrm{kept}} w^2\,/\,\sum w^2$")
    b.set_title("magnitude sparsification")
    for x in markers.get("R") or []:
        a.axvline(x, color="grey", ls=":", lw=1)
        a.annotate(
            f"R={x}", (x, 0.02), rotation=90, fontsize=8, color="grey", xycoords=("data", "axes fraction")
        )
    for x in markers.get("fraction") or []:
        b.axvline(100 * x, color="grey", ls=":", lw=1)
        b.annotate(f"{100 * x:.0f}%", (100 * x, 0.02), rotation=90, fontsize=8, color="grey",
                   xycoords=("data", "axes fraction"))  # fmt: skip
    for ax in (a, b):
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def make_figures(runs_dir: Path, energy_dir: Path, out_dir: Path, extra=(), split=None) -> list[Path]:
    """Writes every figure that has data; `extra`: (name, model, task) for curves of any other task."""
    records, _ = load_records(runs_dir)
    written = []
    specs = [(f"{fig}_{task}" + ("" if v == "full" else f"_{v}"), model, task)
             for fig, task in FIGURES.items() for v, model in MODELS.items()]  # fmt: skip
    for name, model, task in [*specs, *extra]:
        lines = lines_for(records, model, task, split)
        if not lines:
            print(f"skip {name}: no successful {task} records of model {model}")
            continue
        path = out_dir / f"{name}.png"
        plot_figure(lines, f"{task} ({model})", path, split)
        written.append(path)
    for src in sorted(Path(energy_dir).glob("*.json")):
        data = json.loads(src.read_text())
        path = out_dir / f"a1_energy_{src.stem}.png"
        plot_energy(data, data.get("title") or f"LoDA A.1 energy: {src.stem}", path)
        written.append(path)
    return written


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=Path, default=ROOT / "results" / "runs")
    ap.add_argument(
        "--energy", type=Path, default=ROOT / "results" / "energy", help="energy_curves.py output"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "figures")
    ap.add_argument(
        "--split", default=None, help="eval split for the test curves (default: test, else selection)"
    )
    ap.add_argument("--curves", action="append", default=[], metavar="MODEL:TASK",
                    help="also draw the four panels for another model/task, e.g. tiny_deberta:glue/cola")  # fmt: skip
    args = ap.parse_args(argv)
    extra = []
    for spec in args.curves:
        model, _, task = spec.partition(":")
        if not task:
            sys.exit(f"error: --curves wants MODEL:TASK, got {spec!r}")
        extra.append((f"curves_{model}_{task.replace('/', '_')}", model, task))
    for path in make_figures(args.runs, args.energy, args.out, extra, args.split):
        print(path)


if __name__ == "__main__":
    main()
