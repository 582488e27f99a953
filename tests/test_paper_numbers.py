"""The papers' numbers as data: `scripts/paper_tables/*.yaml` parse, hold every printed row and column, and
load into the same `Table`s the Python literals of `scripts/paper_numbers.py` used to build.

`tests/data/paper_numbers_snapshot.json` is the dump of `TABLES` and the `SORA_*` constants taken from the
module before its numbers moved to data. A deliberate fix of a paper value changes it: regenerate with
`.venv/bin/python -m tests.test_paper_numbers` and check the diff shows only that value.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from scripts import paper_numbers as pn

SNAPSHOT = Path(__file__).parent / "data" / "paper_numbers_snapshot.json"

# What each paper prints (../shared/PAPERS.md): the rows with numbers, and the columns in the paper's order.
# Food-101 and MiniLM are our own layouts with no printed numbers; Table 5's Full FT row is ours too.
PRINTED = {
    "rm_table1_glue": (11, "cola stsb_p stsb_s qnli mnli wnli rte mrpc_acc mrpc_f1 qqp_acc qqp_f1 sst2"),
    "rm_table2_squad_deberta": (8, "em f1"),
    "rm_table3_squad_gpt2": (9, "em f1"),
    "rm_table5_vit_cifar100": (12, "rank orth acc"),
    "rm_fig2_vit_food101": (0, "rank orth acc"),
    "loda_table1_e2e": (14, "bleu nist meteor rouge cider"),
    "loda_table2_dart": (14, "bleu meteor ter"),
    "minilm_glue": (0, "cola stsb_p stsb_s wnli rte mrpc_acc mrpc_f1 sst2"),
    "peft_variants_glue": (0, "cola stsb_p stsb_s wnli rte mrpc_acc mrpc_f1 sst2"),  # issue 29 (H4)
}
SORA_TASKS = 9  # Table 4's rows: every GLUE task


def snapshot() -> str:
    """Every field of every table and the SoRA constants; json keeps key order and int vs float."""
    data = {
        "tables": {name: dataclasses.asdict(t) for name, t in pn.TABLES.items()},
        "sora_table4": pn.SORA_TABLE4,
        "sora_table4_lr": pn.SORA_TABLE4_LR,
        "sora_table4_batches": pn.SORA_TABLE4_BATCHES,
        "sora_table4_train": pn.SORA_TABLE4_TRAIN,
        "sora_sparsity_table": pn.SORA_SPARSITY_TABLE,
    }
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


def test_loader_reproduces_the_tables_the_python_literals_built():
    assert snapshot() == SNAPSHOT.read_text(encoding="utf-8")
    # json cannot tell a tuple from a list: the types make_tables relies on, checked here
    for table in pn.TABLES.values():
        assert all(isinstance(x, tuple) for x in (table.columns, table.rows, table.notes))
        assert all(isinstance(c.metric, tuple) for c in table.columns)
        for row in table.rows:
            assert all(isinstance(v, tuple) and len(v) == 2 for v in row.paper.values()), row.label
    assert all(isinstance(v, tuple) for v in pn.SORA_TABLE4.values())
    assert isinstance(pn.SORA_TABLE4_BATCHES, tuple)


def test_the_data_folder_holds_exactly_the_tables():
    files = {p.stem for p in pn.DATA.glob("*.yaml")}
    assert files == {*pn.TABLE_NAMES, pn.SORA_FILE}
    assert list(pn.TABLES) == list(PRINTED)


def test_every_printed_value_parses():
    for name in pn.TABLE_NAMES:
        spec = yaml.safe_load((pn.DATA / f"{name}.yaml").read_text(encoding="utf-8"))
        for row in spec["rows"]:
            for v in row.get("paper", []):
                if v is not None:
                    value, std = pn.parse_value(v, f"{name} {row['label']}")
                    assert isinstance(value, (int, float)) and (std is None or std >= 0), v


@pytest.mark.parametrize("name", list(PRINTED))
def test_every_table_has_every_row_and_column_the_paper_prints(name):
    table = pn.TABLES[name]
    n_rows, keys = PRINTED[name]
    assert [c.key for c in table.columns] == keys.split()
    printed = [r for r in table.rows if r.paper]
    assert len(printed) == n_rows
    for row in printed:  # every printed row is a full line of the paper's grid
        assert list(row.paper) == keys.split(), row.label
    labels = [r.label for r in table.rows]
    assert len(set(labels)) == len(labels)
    assert all(k.startswith("method.") for r in table.rows for k in r.match)


def test_sora_table4_has_every_task_beside_its_table():
    beside = pn.TABLES[pn.SORA_SPARSITY_TABLE]
    assert len(pn.SORA_TABLE4) == SORA_TASKS
    assert set(pn.SORA_TABLE4) == {c.task for c in beside.columns} == set(pn.SORA_TABLE4_TRAIN)
    for task, (xi, sparsity, epochs) in pn.SORA_TABLE4.items():
        assert 0 < xi < 1 and 0 < sparsity < 100 and epochs in (3, 5), task


@pytest.mark.parametrize(
    ("value", "parsed"),
    [(0.668, (0.668, None)), (29, (29, None)), ("8.50 ± 0.07", (8.5, 0.07)), ("46.0±0.0", (46.0, 0.0))],
)
def test_parse_value_reads_a_number_or_value_plus_minus_std(value, parsed):
    assert pn.parse_value(value, "here") == parsed


@pytest.mark.parametrize("value", ["0.668", "1 ± x", "1 ± 2 ± 3", True, [1, 2]])
def test_parse_value_refuses_anything_else(value):
    with pytest.raises(ValueError, match="here"):
        pn.parse_value(value, "here")


def test_a_row_with_a_missing_value_names_its_file_and_row(tmp_path, monkeypatch):
    spec = yaml.safe_load((pn.DATA / "rm_table2_squad_deberta.yaml").read_text(encoding="utf-8"))
    spec["rows"][1]["paper"].pop()
    (tmp_path / "rm_table2_squad_deberta.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    monkeypatch.setattr(pn, "DATA", tmp_path)
    expected = r"rm_table2_squad_deberta.yaml row 1 \(LoRA R=8\): 1 paper values for 2 columns"
    with pytest.raises(ValueError, match=expected):
        pn.load_table("rm_table2_squad_deberta")


if __name__ == "__main__":  # regenerate the snapshot after a deliberate change to the data
    SNAPSHOT.write_text(snapshot(), encoding="utf-8")
