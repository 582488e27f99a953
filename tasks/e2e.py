"""E2E NLG Challenge (Novikova et al., 2017): restaurant meaning representations to text, with GPT-2.

Training and decoding: `tasks.nlg` (microsoft/LoRA examples/NLG). Data, by `task.format`:
* `lora` (default; `task.data_dir` defaults to `../shared/data/e2e/lora_format`): microsoft/LoRA's
  `MR||reference` text files, one pair a line (`train.txt`, `valid.txt`, `test.txt`; MRs like
  `name : The Vaults | Type : pub`, texts tokenised). The LoRA / LoDA papers' numbers come from
  these files. `train.txt` is not in the offline shared data (LoRA's examples/NLG/data/e2e has it).
* `csv`: the challenge's CSVs in `task.data_dir` (`trainset.csv`, `devset.csv`, `testset_w_refs.csv`,
  columns mr, ref); the MR string is the context as written there (`name[The Vaults], eatType[pub]`).
  Their MRs and 1,790 of 4,693 test references differ from LoRA's files after tokenisation.
* `hub`: `datasets.load_dataset(hub_id)` (columns meaning_representation, human_reference; the
  CSVs' content); `task.data_dir` is not read.

Scores: `tasks.metrics.e2e` (e2e-metrics measure_scores.py: BLEU, NIST, METEOR, ROUGE_L, CIDEr).
Outputs per evaluation: `hypotheses.txt` (one a line, source order) and `references.txt` (each
source's references one a line, sources separated by a blank line), the layout measure_scores.py
reads: `python -m tasks.metrics e2e hypotheses.txt references.txt`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from core import ConfigError
from tasks.base import DataError, read_text
from tasks.metrics.e2e import e2e_scores
from tasks.nlg import Config as NLGConfig
from tasks.nlg import NLGTask, write_text

FILES = {
    "lora": {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"},
    "csv": {"train": "trainset.csv", "validation": "devset.csv", "test": "testset_w_refs.csv"},
}


@dataclass
class Config(NLGConfig):
    name: str = "e2e"
    hub_id: str = "e2e_nlg"
    format: str = "lora"
    label_smoothing: float = 0.1
    length_penalty: float = 0.9
    eval_splits: list[str] = field(default_factory=lambda: ["test"])

    def __post_init__(self):
        super().__post_init__()
        if self.format not in (*FILES, "hub"):
            raise ConfigError(f"task.format must be one of {', '.join(FILES)}, hub; got {self.format!r}")
        if self.format != "hub" and not self.data_dir:
            raise ConfigError(
                f"task.format={self.format} reads files: set task.data_dir (LoRA's: "
                f"../shared/data/e2e/lora_format), or task.format=hub for the Hub's {self.hub_id}"
            )


def read_lora_file(path: Path) -> list[tuple[str, str]]:
    """`MR||reference` lines, split as LoRA's format_converting_e2e.py does."""
    pairs = []
    for i, line in enumerate(read_text(path).splitlines(), start=1):
        items = line.strip().split("||")
        if not line.strip():
            continue
        if len(items) < 2:
            raise DataError(f"{path}:{i}: expected 'MR||reference'; is this a microsoft/LoRA E2E file?")
        pairs.append((items[0], items[1]))
    return pairs


def read_csv_file(path: Path) -> list[tuple[str, str]]:
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    if not {"mr", "ref"} <= set(reader.fieldnames or ()):
        raise DataError(
            f"{path}: needs columns mr, ref (testset.csv has no references: use testset_w_refs.csv)"
        )
    pairs = []
    for row in reader:
        if not row["mr"] or not row["ref"]:  # a short row reads None; an empty field ""
            raise DataError(
                f"{path}:{reader.line_num}: empty or missing mr / ref field; fix or remove the row"
            )
        pairs.append((row["mr"], row["ref"]))
    return pairs


class E2E(NLGTask):
    name = "e2e"

    @classmethod
    def file_names(cls, cfg) -> dict:
        return {**FILES.get(cfg.format, {}), **(cfg.files or {})}

    @classmethod
    def reads_files(cls, cfg) -> bool:
        return cfg.format != "hub"

    @classmethod
    def data_source(cls, cfg) -> str:
        kind = {"lora": "microsoft/LoRA examples/NLG/data/e2e MR||ref files", "csv": "E2E challenge CSVs"}
        return f"files: {cfg.data_dir} ({kind[cfg.format]})" if cls.reads_files(cfg) else f"hub: {cfg.hub_id}"

    def missing_hint(self, split: str) -> str:
        if self.cfg.format == "lora" and split == "train":
            return (
                "microsoft/LoRA's train.txt is not in the offline shared data: put LoRA's "
                "examples/NLG/data/e2e/train.txt there, or train on a slice of valid: "
                "task.train_split='validation[:N]' (as loda_table1_e2e_smoke does)"
            )
        return f"set task.data_dir / task.files.{split}, or task.format=hub for the Hub ({self.cfg.hub_id})"

    def read_file(self, path: Path) -> list[tuple[str, str]]:
        return read_lora_file(path) if self.cfg.format == "lora" else read_csv_file(path)

    def read_hub(self, ds) -> list[tuple[str, str]]:
        return [(r["meaning_representation"], r["human_reference"]) for r in ds]

    def score(self, hyps, refs) -> dict:
        return e2e_scores(hyps, refs, coco=self.cfg.java_metrics)

    def write_outputs(self, out_dir: Path, hyps, refs) -> None:
        write_text(out_dir / "hypotheses.txt", "".join(h + "\n" for h in hyps))
        write_text(out_dir / "references.txt", "\n".join("".join(r + "\n" for r in group) for group in refs))


TASK = E2E
