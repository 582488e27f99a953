"""DART (Nan et al., 2021): RDF triple sets to text, with GPT-2 (microsoft/LoRA examples/NLG setting).

Training and decoding: `tasks.nlg`. Context of a triple set (LoRA format_converting_dart.py):
`subj : rel : obj | subj : rel : obj ...` with every relation lower-cased; one pair per annotation.
Data: the release's JSON files with `task.data_dir` (`dart-v1.1.1-full-{train,dev,test}.json`:
a list of {tripleset, annotations: [{source, text}]}), or `datasets.load_dataset(hub_id)`.
Offline only dev and test exist (`task.files.test=dart-v1.1.1-full-test.from_xml.json`).

Scores: `tasks.metrics.dart` (GenerationEval as LoRA runs it: BLEU, METEOR, TER; at most 6
references per source, fewer padded with the first). Every output and reference is first lower-cased,
then tokenised (each non-word character split off), as LoRA's `gpt2_decode.py --tokenize --lower`
writes them (microsoft/LoRA examples/NLG README, DART step 2); those texts are scored and written.
Outputs per evaluation: `hypotheses.txt` and `reference0` .. `reference5` (line i of each: a
reference of source i), the files eval.py reads as they are (`-R reference -nr 6`), so the official
script gives the record's numbers: `python -m tasks.metrics dart hypotheses.txt reference0 ... reference5`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tasks.base import DataError, read_text
from tasks.metrics.dart import NUM_REFS, dart_scores, lora_tokenize, prepare
from tasks.nlg import Config as NLGConfig
from tasks.nlg import NLGTask, write_text

FILES = {
    "train": "dart-v1.1.1-full-train.json",
    "validation": "dart-v1.1.1-full-dev.json",
    "test": "dart-v1.1.1-full-test.json",
}


@dataclass
class Config(NLGConfig):
    name: str = "dart"
    hub_id: str = "dart"
    label_smoothing: float = 0.0
    length_penalty: float = 0.8
    eval_splits: list[str] = field(default_factory=lambda: ["test"])


def linearize(tripleset) -> str:
    return " | ".join(f"{s} : {r.lower()} : {o}" for s, r, o in tripleset)


def pairs_of(entries, where: str) -> list[tuple[str, str]]:
    pairs = []
    for i, entry in enumerate(entries):
        try:
            context = linearize(entry["tripleset"])
            notes = entry["annotations"]
            texts = (
                notes["text"] if isinstance(notes, dict) else [a["text"] for a in notes]
            )  # Hub: dict of lists
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{where}: entry {i}: not a DART entry ({type(e).__name__}: {e})") from None
        pairs += [(context, text) for text in texts]
    return pairs


def official_text(text: str) -> str:
    """gpt2_decode.py's `post_process(text, is_tokenize=True, is_lower=True)`: lower, then tokenise."""
    return lora_tokenize(text.lower())


class Dart(NLGTask):
    name = "dart"
    default_files = FILES
    file_kind = "DART v1.1.1 JSON"

    def read_file(self, path: Path) -> list[tuple[str, str]]:
        try:
            entries = json.loads(read_text(path))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
        return pairs_of(entries, str(path))

    def read_hub(self, ds) -> list[tuple[str, str]]:
        return pairs_of(ds, self.cfg.hub_id)

    def official_texts(self, hyps, refs):
        return [official_text(h) for h in hyps], [[official_text(r) for r in group] for group in refs]

    def score(self, hyps, refs) -> dict:
        # the texts are already those of the written files (official_texts): scored as eval.py reads them
        result = dart_scores(hyps, refs, num_refs=NUM_REFS, preprocess=False, meteor=self.cfg.java_metrics)
        result["settings"]["preprocess"] = (
            "gpt2_decode.py --tokenize --lower (lower, then tokenise), as written"
        )
        return result

    def write_outputs(self, out_dir: Path, hyps, refs) -> None:
        _, columns = prepare(hyps, refs, NUM_REFS, preprocess=False)
        write_text(out_dir / "hypotheses.txt", "".join(h + "\n" for h in hyps))
        for k in range(NUM_REFS):
            write_text(out_dir / f"reference{k}", "".join(group[k] + "\n" for group in columns))


TASK = Dart
