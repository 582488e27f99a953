"""`scripts/make_tables.py` on fake records: cell statistics, paper numbers, marks, exclusions, layout."""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
import tarfile

import pytest
from scipy import stats

from runners.config import ROOT
from scripts import make_tables as mt
from scripts.paper_numbers import RM_TABLE1, TABLES

GLUE_PLAIN = {"reg_weight": 0.0, "mask_fraction": None, "mask_directions": None}


def fake(run_id, method, rank, task, seed, evals, *, model="tiny_deberta", status="success", group=None,
         extra=None, best=None, params=(1_255_682, 1_255_682), diagnostics=None):  # fmt: skip
    """A record as the runner writes it (only the fields tables read)."""
    method_cfg = {
        "name": method,
        **({"rank": rank} if rank else {}),
        **(GLUE_PLAIN if method == "lora" else {}),
        **(
            {"alpha": 32} if method in ("lora", "r_lora", "rm_lora") else {}
        ),  # Table 1's arms (conf/arm/glue/)
    }
    method_cfg.update(extra or {})
    rec = {
        "run_id": run_id,
        "group_id": group or f"g-{method}-{rank}-{task}-{model}",
        "status": status,
        "model": model,
        "task": task,
        "method": method,
        "seed": seed,
        "started_at": f"2026-12-01T00:00:{seed:02d}+00:00",
        "config": {"method": method_cfg, "model": {"name": model}, "seed": seed},
        "metrics": {
            "selection_split": "validation",
            "final": {"validation": evals},
            "best": {"epoch": 1, "eval": {"validation": best or evals}},
        },
        "params": {
            "trainable": params[0],
            "inference": params[1],
            "method_trainable": 10,
            "method_inference": 10,
        },
    }
    if diagnostics:
        rec["diagnostics"] = diagnostics
    if status != "success":
        rec["error"] = "RuntimeError: boom"
    return rec


def write(tmp_path, recs):
    runs = tmp_path / "runs"
    runs.mkdir(exist_ok=True)
    for r in recs:
        (runs / f"{r['run_id']}.json").write_text(json.dumps(r))
    return runs


def read_csv(path):
    rows = list(csv.DictReader(open(path)))
    return {(r["method"], r["stat"]): r for r in rows}


LORA4 = [0.60, 0.62, 0.64]
RM4 = [0.70, 0.71, 0.72]


@pytest.fixture
def glue_runs(tmp_path):
    recs = [fake(f"l{s}", "lora", 4, "glue/cola", s, {"mcc": v, "acc": 0.5}) for s, v in enumerate(LORA4)]
    recs += [fake(f"rm{s}", "rm_lora", 4, "glue/cola", s, {"mcc": v, "acc": 0.5}) for s, v in enumerate(RM4)]
    # a failed RM-LoRA seed with an absurd value: must be excluded and listed, not averaged
    recs.append(fake("rmbad", "rm_lora", 4, "glue/cola", 9, {"mcc": 99.0}, status="diverged"))
    # `method=lora` with the regularizer on is not plain LoRA: must not land in the LoRA row
    recs.append(fake("lreg", "lora", 4, "glue/cola", 5, {"mcc": -1.0}, extra={"reg_weight": 0.1}))
    # another experiment's LoRA at alpha 16 (minilm_glue's, peft_variants_glue's arms): not a Table 1 run
    recs.append(fake("l16", "lora", 4, "glue/cola", 6, {"mcc": -2.0}, extra={"alpha": 16}))
    # the paper's model, one seed: fills the full table only
    recs.append(fake("full0", "lora", 4, "glue/cola", 0, {"mcc": 0.681}, model="deberta_v3_base"))
    # methods/tasks that no table knows and an unreadable file: ignored, never a crash
    recs.append(fake("odd", "future_method", 4, "glue/unknown", 0, {"xyz": 1.0}))
    runs = write(tmp_path, recs)
    (runs / "garbage.json").write_text("{not json")
    return runs


def test_cells_mean_std_paper_diff_best_and_exclusions(glue_runs, tmp_path):
    out = tmp_path / "tables"
    written = mt.make_tables(glue_runs, out, names={"rm_table1_glue"})
    assert {p.name for p in written} >= {"rm_table1_glue_smoke.md", "rm_table1_glue_smoke.tex",
                                         "rm_table1_glue_smoke.csv", "rm_table1_glue.md", "SUMMARY.md"}  # fmt: skip
    t = read_csv(out / "rm_table1_glue_smoke.csv")
    lora, rm = t[("LoRA R=4", "mean")], t[("RM-LoRA R=4", "mean")]
    assert float(lora["cola"]) == pytest.approx(statistics.fmean(LORA4))
    assert float(t[("LoRA R=4", "std")]["cola"]) == pytest.approx(statistics.stdev(LORA4))  # ddof=1: 0.02
    assert float(t[("LoRA R=4", "std")]["cola"]) == pytest.approx(0.02)
    assert t[("RM-LoRA R=4", "n")]["cola"] == "3"  # the diverged seed is not counted
    assert float(rm["cola"]) == pytest.approx(0.71)
    assert float(t[("RM-LoRA R=4", "paper")]["cola"]) == 0.689  # PAPERS.md Table 1
    assert float(t[("RM-LoRA R=4", "diff")]["cola"]) == pytest.approx(0.71 - 0.689)
    assert t[("RM-LoRA R=4", "best")]["cola"] == "True" and t[("LoRA R=4", "best")]["cola"] == "False"
    # missing methods/tasks are empty cells, and the paper's number is still there
    assert t[("AdaLoRA (8→4)", "mean")]["cola"] == "" and t[("AdaLoRA (8→4)", "n")]["cola"] == "0"
    assert float(t[("AdaLoRA (8→4)", "paper")]["cola"]) == 0.663
    assert t[("LoRA R=4", "mean")]["mnli"] == ""
    assert t[("LoRA R=4", "mean")]["params_T/I"] == "1.26M/1.26M"  # 1,255,682 with the head
    md = (out / "rm_table1_glue_smoke.md").read_text()
    assert "rmbad (diverged: RuntimeError: boom)" in md and "99" not in md.split("Excluded")[0]
    assert "| **0.710 ± 0.010 (n=3)" in md  # bold best, with n
    summary = (out / "SUMMARY.md").read_text()
    assert "diverged: 1" in summary and "unreadable: 1" in summary and "`rmbad` diverged" in summary
    full = read_csv(out / "rm_table1_glue.csv")
    assert full[("LoRA R=4", "n")]["cola"] == "1" and float(full[("LoRA R=4", "mean")]["cola"]) == 0.681
    assert full[("LoRA R=4", "std")]["cola"] == ""  # std of one seed is undefined, not 0


def test_welch_p_value_matches_hand_computation(glue_runs, tmp_path):
    out = tmp_path / "tables"
    mt.make_tables(glue_runs, out, names={"rm_table1_glue"})
    t = read_csv(out / "rm_table1_glue_smoke.csv")
    # Welch by hand: t = (m1-m2)/sqrt(s1²/n1+s2²/n2), df by Welch–Satterthwaite
    m1, m2, v1, v2 = (
        statistics.fmean(RM4),
        statistics.fmean(LORA4),
        statistics.variance(RM4),
        statistics.variance(LORA4),
    )
    se2 = v1 / 3 + v2 / 3
    tstat = (m1 - m2) / math.sqrt(se2)
    df = se2**2 / ((v1 / 3) ** 2 / 2 + (v2 / 3) ** 2 / 2)
    p = 2 * stats.t.sf(abs(tstat), df)
    assert float(t[("RM-LoRA R=4", "p_vs_lora")]["cola"]) == pytest.approx(p, rel=1e-9)
    assert p < 0.05  # 0.71 vs 0.62 with stds .01/.02: a large effect even for n=3
    md = (out / "rm_table1_glue_smoke.md").read_text()
    mark = "‡" if p < 0.01 else "†"
    assert f"0.710 ± 0.010 (n=3)**{mark}" in md and "Welch" in md
    assert t[("LoRA R=4", "p_vs_lora")]["cola"] == ""  # the baseline itself is not tested


def test_welch_edge_cases():
    assert mt.welch([1.0], [1.0, 2.0]) is None  # n < 2
    assert mt.welch([1.0, 1.0], [1.0, 1.0]) is None  # no variance, same mean
    assert mt.welch([2.0, 2.0], [1.0, 1.0]) == 0.0  # no variance, different means
    assert mt.mark(0.004) == "‡" and mt.mark(0.03) == "†" and mt.mark(0.2) == "" and mt.mark(None) == ""


def test_within_paper_std_and_summary(tmp_path):
    # RM-LoRA Table 2 prints per-cell stds: EM 87.47 ± .01 for LoRA R=8 (0-100 scale in both)
    ems = [87.46, 87.47, 87.48]
    recs = [fake(f"s{i}", "lora", 8, "squad", i, {"exact_match": v, "f1": 50.0}, model="deberta_v3_base")
            for i, v in enumerate(ems)]  # fmt: skip
    out = tmp_path / "tables"
    mt.make_tables(write(tmp_path, recs), out, names={"rm_table2_squad_deberta"})
    t = read_csv(out / "rm_table2_squad_deberta.csv")
    assert t[("LoRA R=8", "within_paper_std")]["em"] == "True"  # Δ = 0
    assert t[("LoRA R=8", "within_paper_std")]["f1"] == "False"  # 50 vs 93.33
    assert t[("LoRA R=4", "within_paper_std")]["em"] == ""  # no run: not comparable
    summary = (out / "SUMMARY.md").read_text()
    assert "1 of 2 comparable cells within the paper's ±std" in summary


def test_best_epoch_selection_scale_and_lower_is_better(tmp_path):
    # LoDA Table 2 (DART): best epoch; METEOR 0-1 ours vs percent paper; TER lower is better
    recs = []
    for i, (ter, lter) in enumerate([(0.40, 0.50), (0.42, 0.52)]):
        final = {"BLEU": 1.0, "METEOR": 0.1, "TER": 0.9}
        recs.append(fake(f"d{i}", "loda", 4, "dart", i, final, model="gpt2_medium",
                         best={"BLEU": 47.3, "METEOR": 0.36, "TER": ter}))  # fmt: skip
        recs.append(fake(f"dl{i}", "lora", 4, "dart", i, final, model="gpt2_medium",
                         best={"BLEU": 47.2, "METEOR": 0.36, "TER": lter}))  # fmt: skip
    out = tmp_path / "tables"
    mt.make_tables(write(tmp_path, recs), out, names={"loda_table2_dart"})
    t = read_csv(out / "loda_table2_dart.csv")
    assert float(t[("LoDA", "mean")]["meteor"]) == pytest.approx(36.0)
    assert float(t[("LoDA", "mean")]["bleu"]) == pytest.approx(47.3)
    assert t[("LoDA", "best")]["ter"] == "True" and t[("LoRA", "best")]["ter"] == "False"
    final = mt.make_tables(write(tmp_path, recs), tmp_path / "f", names={"loda_table2_dart"}, select="final")
    assert final and float(read_csv(tmp_path / "f" / "loda_table2_dart.csv")[("LoDA", "mean")]["bleu"]) == 1.0


def test_most_seeded_group_wins_and_others_are_named(tmp_path):
    recs = [fake(f"a{i}", "lora", 4, "glue/rte", i, {"acc": 0.6}, group="gA") for i in range(3)]
    recs.append(fake("b0", "lora", 4, "glue/rte", 0, {"acc": 0.9}, group="gB"))
    out = tmp_path / "tables"
    mt.make_tables(write(tmp_path, recs), out, names={"rm_table1_glue"})
    t = read_csv(out / "rm_table1_glue_smoke.csv")
    assert float(t[("LoRA R=4", "mean")]["rte"]) == pytest.approx(0.6) and t[("LoRA R=4", "n")]["rte"] == "3"
    assert "gB" in (out / "rm_table1_glue_smoke.md").read_text()


def test_diagnostics_columns_and_latex_shape(tmp_path):
    recs = [fake(f"v{i}", "rm_lora", 32, "cifar100", i, {"acc": 0.78}, model="tiny_vit",
                 diagnostics={"mean_rank": 30.0, "mean_orth_loss": 95.0 + i}) for i in range(2)]  # fmt: skip
    out = tmp_path / "tables"
    mt.make_tables(write(tmp_path, recs), out, names={"rm_table5_vit_cifar100"})
    t = read_csv(out / "rm_table5_vit_cifar100_smoke.csv")
    assert float(t[("RM-LoRA R=32", "mean")]["acc"]) == pytest.approx(78.0)  # ×100: the paper's percent
    assert float(t[("RM-LoRA R=32", "mean")]["orth"]) == pytest.approx(95.5)
    assert float(t[("RM-LoRA R=32", "paper")]["rank"]) == 30
    tex = (out / "rm_table5_vit_cifar100_smoke.tex").read_text()
    body = [line for line in tex.splitlines() if "\\\\" in line]
    ncols = 2 + 3
    assert body and all(len(re.findall(r"(?<!\\)&", line)) == ncols - 1 for line in body)
    assert "\\textbf{" in tex and "\\begin{tabular}{ll" + "r" * 3 + "}" in tex
    assert "Δ" not in tex and "‖" not in tex  # unicode mapped to LaTeX


def test_every_table_builds_from_nothing(tmp_path):
    written = mt.make_tables(tmp_path / "absent", tmp_path / "tables")
    assert len(written) == 3 * len(TABLES) + 1  # full variants only (no smoke records), + SUMMARY
    for table in TABLES.values():
        for row in table.rows:
            assert set(row.paper) <= {c.key for c in table.columns}
            assert row.vs is None or row.vs in {r.label for r in table.rows}, (table.name, row.label)


def test_paper_numbers_spot_checks():
    """A few values typed from PAPERS.md, checked against the text."""
    rows = {r.label: r for r in RM_TABLE1.rows}
    assert rows["RM-LoRA R=8"].paper["wnli"] == (0.747, None)
    assert rows["SoRA (r=16)"].paper["qqp_f1"] == (0.761, None)
    assert TABLES["loda_table1_e2e"].rows[-1].paper["bleu"] == (70.1, 0.4)
    assert TABLES["rm_table3_squad_gpt2"].rows[4].paper["f1"] == (73.50, 0.02)
    assert {r.label: r for r in TABLES["rm_table5_vit_cifar100"].rows}["LoRA R=80"].paper["orth"] == (
        342.197,
        None,
    )


def test_sora_sparsity_beside_table4_and_unreachable_footer(tmp_path):
    recs = []
    for seed, sparsity in [(1, 1.0), (2, 1.0), (3, 0.9)]:
        rec = fake(f"s{seed}", "sora", 8, "glue/sst2", seed, {"acc": 0.5}, model="deberta_v3_base")
        rec["params"]["gate_sparsity"] = sparsity
        recs.append(rec)
    mt.make_tables(write(tmp_path, recs), tmp_path / "out", names={"rm_table1_glue"})
    md = (tmp_path / "out" / "rm_table1_glue.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| glue/sst2 |"))
    # Table 4's λ and sparsity, ours (mean of 100, 100, 90 % zero gates), r=16 missing, the bound
    assert "| 0.005 | 53.90% | 96.67% (n=3) | — | all (1581 steps" in row
    assert "| glue/qnli | 0.0001 | 58.06% | — | — | no guarantee |" in md
    footer = [line for line in md.splitlines() if line.startswith("- SoRA: Table 4's own setting")]
    assert (
        len(footer) == 1
        and "SST-2, QQP, MNLI" in footer[0]
        and "(53.90%, 53.90%, 64.77%) cannot be reached" in footer[0]
    )
    # other tables: no SoRA block
    mt.make_tables(write(tmp_path, recs), tmp_path / "out2", names={"rm_table2_squad_deberta"})
    assert "SoRA sparsity" not in (tmp_path / "out2" / "rm_table2_squad_deberta.md").read_text()


def test_every_record_read_and_not_used_is_listed_with_its_reason(tmp_path, capsys):
    """Issue 26 #6: a truncated record, a NaN seed and a record of an unknown method were hidden (the
    NaN seed silently left its cell at n=2); each is now printed and named in the table's footer."""
    recs = [fake(f"l{s}", "lora", 4, "glue/cola", s, {"mcc": v}) for s, v in enumerate(LORA4)]
    recs += [fake(f"rm{s}", "rm_lora", 4, "glue/cola", s, {"mcc": v}) for s, v in enumerate(RM4)]
    recs[-1]["metrics"]["final"]["validation"]["mcc"] = float("nan")  # a diverged seed, status success
    recs.append(fake("odd", "future_method", 4, "glue/cola", 0, {"mcc": 0.5}))
    recs.append(fake("alien", "lora", 4, "glue/cola", 0, {"mcc": 0.5}, model="alien_net"))
    runs = write(tmp_path, recs)
    text = json.dumps(fake("trunc", "lora", 4, "glue/cola", 7, {"mcc": 0.9}))
    (runs / "trunc.json").write_text(text[: len(text) // 2])  # a run killed while writing its record
    out = tmp_path / "tables"
    mt.make_tables(runs, out, names={"rm_table1_glue"})
    printed = capsys.readouterr().out
    lines = {line.split(":")[0].strip(): line for line in printed.splitlines()[1:]}
    assert printed.startswith("Records read but not used: 4\n") and set(lines) == {
        "trunc",
        "rm2",
        "odd",
        "alien",
    }
    assert "unreadable: trunc.json: truncated or invalid JSON" in lines["trunc"]
    assert (
        "no value for rm_table1_glue_smoke RM-LoRA R=4 / cola: mcc = nan (final eval validation)"
        in lines["rm2"]
    )
    assert (
        "fills no table: its config matches no row of " in lines["odd"]
        and "method.name=future_method" in lines["odd"]
    )
    assert "fills no table: model 'alien_net' is in no table" in lines["alien"]
    md = (out / "rm_table1_glue_smoke.md").read_text()
    assert "0.705 ± 0.007 (n=2 of 3, 1 NaN)" in md  # the NaN seed is counted, shown, not averaged
    footer = md.split("\n- ", 1)[1]
    assert (
        "rm2 (mcc = nan" in footer
        and "odd (its config matches no row" in footer
        and "trunc (trunc.json" in footer
    )
    t = read_csv(out / "rm_table1_glue_smoke.csv")
    assert t[("RM-LoRA R=4", "n")]["cola"] == "2" and t[("RM-LoRA R=4", "not_used")]["cola"].startswith(
        "rm2: mcc = nan"
    )
    assert "Records read but not used: 4" in (out / "SUMMARY.md").read_text()
    # a record that fills one column of its row and lacks another's metric is no fault (no listing)
    capsys.readouterr()
    (tmp_path / "v").mkdir()
    vit = [fake(f"v{i}", "ft", None, "cifar100", i, {"acc": 0.7}, model="tiny_vit") for i in range(2)]
    mt.make_tables(write(tmp_path / "v", vit), tmp_path / "vt", names={"rm_table5_vit_cifar100"})
    assert "not used" not in capsys.readouterr().out


def test_committed_minilm_table_is_what_its_committed_records_give(tmp_path):
    """docs/results/minilm_glue: the table in git is `make tables` over the records in git, byte for byte
    (a record or table edited by hand, or a table builder that changed what it computes, fails here)."""
    folder = ROOT / "docs" / "results" / "minilm_glue"
    with tarfile.open(folder / "records.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    mt.make_tables(tmp_path / "runs", tmp_path / "tables", {"minilm_glue"})
    for name in ("minilm_glue.md", "minilm_glue.csv"):
        assert (tmp_path / "tables" / name).read_text() == (folder / name).read_text(), name
