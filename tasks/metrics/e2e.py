"""E2E NLG Challenge scores as tuetschek/e2e-metrics `measure_scores.py` computes them.

The default (Perl) path of measure_scores.py: BLEU and NIST from its `mteval-v13a-sig.pl`
(reproduced by `tasks.metrics.mteval`, own code), METEOR 1.5, ROUGE-L and CIDEr from its bundled
pycocoevalcap on PTB-tokenised, lower-cased text (`tasks.metrics.coco`: pycocoevalcap's jars and
code). On the e2e-metrics example inputs this gives the official BLEU 0.7203, NIST 7.8212, METEOR
0.4801, ROUGE_L 0.7910 and CIDEr 2.3039. The script's pure-Python `-p` mode (NIST 7.7889 there) is
not reproduced; nor is its CSV/TSV input mode (give plain text files).

Files are read as its `read_lines` / `load_data` read them (`_io.grouped_references`): UTF-8 via
`codecs`, so a leading byte-order mark stays glued to the first word of the first line; every
line stripped; references grouped by blank lines, and a references file without a separating
blank line holds one reference per MR. Where the official script fails (an empty reference
group, e.g. a references file ending in two or more blank lines) this raises MetricInputError.
Not reproduced: a text containing SGML markup of mteval's files (`</seg>`, `</doc>`), which the
official script writes unescaped and then mis-parses.

Scales are the script's: BLEU 0-1, NIST unbounded, METEOR/ROUGE_L 0-1, CIDEr 0-10. The script
prints 4 decimals; values here are full precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tasks.metrics import _io
from tasks.metrics.mteval import mteval_scores

COCO_METRICS = ("METEOR", "ROUGE_L", "CIDEr")


def e2e_scores(hyps: Sequence[str], refs: Sequence[Sequence[str]], *, meteor=None, coco: bool = True) -> dict:
    """BLEU, NIST, METEOR, ROUGE_L and CIDEr of one output per source against its references.

    Args:
        hyps: one system output per source (an empty string is an empty output).
        refs: per source, its human references (at least one each).
        meteor: a running `tasks.metrics.coco.Meteor` to reuse (its start-up takes seconds);
            None starts and stops one.
        coco: False skips the Java-based metrics (reported as unavailable: "not requested").

    Returns:
        {"metric": "e2e", "scores": {...}, "settings": {...}, "unavailable": {metric: reason}}.
        Without Java, METEOR, ROUGE_L and CIDEr (which all need the PTB tokenizer) are listed in
        "unavailable" with the reason and the install command, never computed another way.
    """
    hyps, refs = list(hyps), [list(r) for r in refs]
    if len(hyps) != len(refs):
        raise _io.MetricInputError(f"{len(hyps)} hypotheses but {len(refs)} reference groups")
    if not hyps:
        raise _io.MetricInputError("no segments to score")
    for i, group in enumerate(refs):
        if not group:
            raise _io.MetricInputError(f"source {i + 1} has no reference")
        if not isinstance(hyps[i], str) or not all(isinstance(r, str) for r in group):
            raise _io.MetricInputError(f"source {i + 1}: output and references must be strings")
    scores: dict[str, float] = dict(mteval_scores(hyps, refs))
    unavailable: dict[str, str] = {}
    if coco:
        from tasks.metrics import coco as cc

        try:
            scores.update(_coco_scores(hyps, refs, meteor))
        except cc.JavaUnavailable as exc:
            unavailable.update({m: str(exc) for m in COCO_METRICS})
    else:
        unavailable.update({m: "not requested" for m in COCO_METRICS})
    from tasks.metrics.coco import METEOR_VERSION, PTB_VERSION

    settings = {
        "script": "tuetschek/e2e-metrics measure_scores.py (default Perl path)",
        "BLEU": "mteval-v13a-sig semantics, case-insensitive (no -c), n=4, closest non-empty ref length, "
        "default smoothing; own code",
        "NIST": "mteval-v13a-sig semantics, n=5, info weights from the evaluated references, length "
        "penalty vs average non-empty references per segment; own code",
        "METEOR": METEOR_VERSION + ", -stdio, pycocoevalcap protocol",
        "ROUGE_L": "pycocoevalcap Rouge, beta=1.2",
        "CIDEr": "pycocoevalcap Cider (CIDEr-D: sigma=6, clipping, x10)",
        "coco_tokenizer": PTB_VERSION,
        "segments": len(hyps),
        "max_refs": max(len(r) for r in refs),
    }
    return {"metric": "e2e", "scores": scores, "settings": settings, "unavailable": unavailable}


def _coco_scores(hyps: list[str], refs: list[list[str]], meteor) -> dict[str, float]:
    from tasks.metrics import coco as cc

    # COCOEvalCap tokenises references and outputs in two separate calls.
    flat = cc.ptb_tokenize([r for group in refs for r in group])
    refs_tok, pos = [], 0
    for group in refs:
        refs_tok.append(flat[pos : pos + len(group)])
        pos += len(group)
    hyps_tok = cc.ptb_tokenize(hyps)
    own = meteor is None
    if own:
        meteor = cc.Meteor()
    try:
        meteor_score = meteor.score(hyps_tok, refs_tok)[0]
    finally:
        if own:
            meteor.close()
    return {
        "METEOR": meteor_score,
        "ROUGE_L": cc.rouge_l(hyps_tok, refs_tok),
        "CIDEr": cc.cider(hyps_tok, refs_tok),
    }


def read_files(hyp_path: str | Path, ref_path: str | Path) -> tuple[list[str], list[list[str]]]:
    """Reads one output a line and blank-line-separated reference groups, checking their counts.

    Both files are read as measure_scores.py reads them (see the module docstring).
    """
    refs = _io.grouped_references(ref_path, keep_bom=True)
    hyps = _io.stripped_lines(hyp_path, keep_bom=True)
    _io.check_same_length(hyp_path, len(hyps), ref_path, len(refs), "hypotheses", "reference groups")
    return hyps, refs


def score_files(hyp_path: str | Path, ref_path: str | Path, *, meteor=None, coco: bool = True) -> dict:
    """`e2e_scores` of the outputs in `hyp_path` against the references in `ref_path`."""
    hyps, refs = read_files(hyp_path, ref_path)
    return e2e_scores(hyps, refs, meteor=meteor, coco=coco)
