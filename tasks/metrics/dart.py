"""DART scores as the LoRA / LoDA papers computed them: BLEU, METEOR and TER of GenerationEval.

Mirrors the WebNLG-2020 `GenerationEval/eval.py` shipped in microsoft/LoRA `examples/NLG/eval`
(`-nr 6 -m bleu,meteor,ter`), fed with the files that LoRA's `gpt2_decode.py --tokenize --lower`
writes: at most `num_refs` references per source, fewer padded with the source's first
reference, every text tokenised by `' '.join(re.split('(\\W)', text).split())` and lower-cased.

* BLEU: Moses `multi-bleu-detok.perl` (own re-implementation): the mteval-13a tokenisation
  without lower-casing (the text is already lower-cased), corpus statistics, closest reference
  length (ties: shorter), no smoothing; 0-100 scale. The script prints it with 2 decimals and
  eval.py parses that print; here it is full precision.
* METEOR: meteor-1.5.jar in file mode, `-l en -norm -r <num_refs>`, on the texts tokenised once
  more with `' '.join(nltk.word_tokenize(text))`, as eval.py does (references and outputs);
  the jar's "Final score". TER uses the same tokens.
* nltk.word_tokenize needs the Punkt sentence model, which cannot be downloaded here; this
  module calls it with `preserve_line=True` (the whole line is one "sentence"). On texts that
  went through `gpt2_decode.py --tokenize` (every non-word character stands alone between
  spaces) that gives exactly eval.py's tokens: NLTK's word rules then only put spaces around
  tokens that are already separate, and the rules tied to a sentence start or end (`^"` ->
  ``` `` ```, the final period) act the same at any sentence boundary Punkt could pick (checked
  once on all 19,531 DART dev and test references; tests/test_metrics_dart.py checks 300 of
  them against every split Punkt could make and an untrained Punkt model). On other texts (the
  `--no-preprocess` path with untokenised files) a period inside a line stays glued to its
  word ("pub." where eval.py's Punkt split gives "pub", "."). Quotes: every `"` in
  LoRA-tokenised text follows a space, so NLTK turns each one, opening or closing, into
  ``` `` ```. Tokens follow nltk 3.10.4 (pinned); older nltk releases have slightly different
  quote rules.
* TER: eval.py's per-sentence TER with `pyter` (own re-implementation of pyter3 0.3's algorithm,
  no tercom): for each source the smallest TER over its references (a blank reference counts
  as TER 1), then the plain mean over sources. This is not corpus TER (tercom's total edits /
  total reference words, with the edits of the closest reference): short sentences weigh as
  much as long ones, and pyter's greedy shift search differs from tercom's (it takes the
  shift that lowers the edit distance most, ties broken by the larger word list, skips phrases
  whose start position equals the target position, and has no shift-distance limit).
  Reading files: eval.py splits them with `f.read().split('\\n')`, so a final newline yields
  one more, empty "line". When the reference files end with a newline its METEOR input gets
  5 surplus reference lines and the jar stops with "test and reference not same length"
  (so eval.py gets no METEOR value); in every run where eval.py does produce METEOR, that extra
  line has not entered TER either. `score_files` therefore scores exactly the lines of the
  files, with or without a final newline, and METEOR files are written so that the jar reads
  exactly one line per segment (also when the last output is empty).

This is LoRA's protocol, not DART's own `run_eval_on_dart.sh` (multi-bleu.perl on whitespace
tokens against 3 references, METEOR with `-r 8` on the files of its `prepare_files.py`, and
corpus TER from the tercom 0.7.25 jar); that protocol is not offered here (tercom and the DART
reference layout are not available offline).
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from tasks.metrics import _io
from tasks.metrics.mteval import tokenize_13a

NUM_REFS = 6
_NONWORD = re.compile(r"(\W)")
NLTK_SETTING = "nltk.word_tokenize(text, preserve_line=True), nltk 3.10.4"


def eval_tokenize(text: str) -> str:
    """eval.py's `' '.join(nltk.word_tokenize(text))` for METEOR and TER (see module docstring)."""
    from nltk.tokenize import word_tokenize

    return " ".join(word_tokenize(text, preserve_line=True))


def lora_tokenize(text: str) -> str:
    """LoRA gpt2_decode's `stardard_tokenize`: split off every non-word character, one space apart."""
    return " ".join(" ".join(_NONWORD.split(text)).split())


def prepare(
    hyps: Sequence[str], refs: Sequence[Sequence[str]], num_refs: int = NUM_REFS, preprocess: bool = True
) -> tuple[list[str], list[list[str]]]:
    """Brings outputs and references into the layout of GenerationEval's input files.

    Args:
        hyps: one output per source.
        refs: per source, its references (at least one); the first `num_refs` are kept and
            fewer are padded with the first, as LoRA's decoding script writes them.
        num_refs: references per source in the files (eval.py's `-nr`).
        preprocess: tokenise and lower-case every text as `gpt2_decode.py --tokenize --lower`.
    """
    if len(hyps) != len(refs):
        raise _io.MetricInputError(f"{len(hyps)} hypotheses but {len(refs)} reference lists")
    out_refs = []
    for i, (hyp, group) in enumerate(zip(hyps, refs)):
        if len(group) == 0:
            raise _io.MetricInputError(f"source {i + 1} has no reference")
        if not isinstance(hyp, str) or not all(isinstance(r, str) for r in group):
            raise _io.MetricInputError(f"source {i + 1}: output and references must be strings")
        group = list(group[:num_refs]) + [group[0]] * (num_refs - len(group))
        out_refs.append(group)
    out_hyps = list(hyps)
    if preprocess:
        out_hyps = [lora_tokenize(h).lower() for h in out_hyps]
        out_refs = [[lora_tokenize(r).lower() for r in g] for g in out_refs]
    return out_hyps, out_refs


# ---------------------------------------------------------------- BLEU (multi-bleu-detok.perl)


def multi_bleu_detok(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (0-100) as Moses multi-bleu-detok.perl without `-lc`."""
    correct = [0] * 5
    total = [0] * 5
    hyp_len = ref_len = 0
    for hyp, group in zip(hyps, refs, strict=True):
        words = tokenize_13a(hyp, lowercase=False, ascii_whitespace=True)
        ref_max: Counter = Counter()
        closest_diff, closest_len = 9999, 9999
        for ref in group:
            ref_words = tokenize_13a(ref, lowercase=False, ascii_whitespace=True)
            diff = abs(len(words) - len(ref_words))
            if diff < closest_diff:
                closest_diff, closest_len = diff, len(ref_words)
            elif diff == closest_diff:
                closest_len = min(closest_len, len(ref_words))
            ref_max |= _ngram_counts(ref_words)
        hyp_len += len(words)
        ref_len += closest_len
        for ngram, count in _ngram_counts(words).items():
            total[len(ngram)] += count
            correct[len(ngram)] += min(count, ref_max.get(ngram, 0))
    if ref_len == 0 or hyp_len == 0:
        return 0.0  # the script prints BLEU = 0 (or dies dividing by a zero hypothesis length)
    precisions = [correct[n] / total[n] if total[n] else 0.0 for n in range(1, 5)]
    if min(precisions) == 0:
        return 0.0  # log(0) is replaced by -9999999999 there: exp of that is 0
    brevity = math.exp(1 - ref_len / hyp_len) if hyp_len < ref_len else 1.0
    return 100 * brevity * math.exp(sum(math.log(p) for p in precisions) / 4)


def _ngram_counts(words: Sequence[str]) -> Counter:
    return Counter(tuple(words[i : i + n]) for n in range(1, 5) for i in range(len(words) - n + 1))


# ---------------------------------------------------------------- TER (pyter semantics)


def _distance_states(hyp: Sequence[str], peq: dict[str, int], m: int, states: list, start: int) -> int:
    """Levenshtein distance of `hyp` to the reference encoded in `peq`, bit-parallel (Myers/Hyyro).

    `states[k]` holds the column state after the first k hypothesis words; `states[:start + 1]`
    must already be valid (they are shared by hypotheses with a common prefix, as pyter's cache
    shares them). Substitution, insertion and deletion all cost 1.
    """
    del states[start + 1 :]
    full, top = (1 << m) - 1, 1 << (m - 1)
    vp, vn, score = states[start]
    for word in hyp[start:]:
        eq = peq.get(word, 0)
        xv = eq | vn
        xh = (((eq & vp) + vp) ^ vp) | eq
        ph = vn | (~(xh | vp) & full)
        mh = vp & xh
        if ph & top:
            score += 1
        elif mh & top:
            score -= 1
        ph = ((ph << 1) | 1) & full  # row 0 of the table grows by one per hypothesis word
        mh = (mh << 1) & full
        vp = mh | (~(xv | ph) & full)
        vn = ph & xv
        states.append((vp, vn, score))
    return score


def pyter_ter(hyp: Sequence[str], ref: Sequence[str]) -> float:
    """TER of one hypothesis against one reference (word lists) with pyter's greedy shifts.

    pyter repeatedly applies the shift that lowers the edit distance most (ties: the largest
    resulting word list), trying every phrase that starts where hyp[i] == ref[j] (i != j) and
    extends as far as both agree, moved to position j; it stops when no shift gains. TER =
    (shifts + remaining edit distance) / reference length.

    Raises:
        ZeroDivisionError: empty reference (eval.py turns that into TER 1).
    """
    hyp, ref = list(hyp), list(ref)
    m = len(ref)
    if m == 0:
        raise ZeroDivisionError("empty reference")
    peq: dict[str, int] = {}
    for pos, word in enumerate(ref):
        peq[word] = peq.get(word, 0) | (1 << pos)
    base = [((1 << m) - 1, 0, m)]
    distance = _distance_states(hyp, peq, m, base, 0)
    shifts = 0
    while True:
        best = None
        for i in range(len(hyp)):
            for j in range(m):
                if i == j or hyp[i] != ref[j]:
                    continue
                length = 1
                while i + length < len(hyp) and j + length < m and hyp[i + length] == ref[j + length]:
                    length += 1
                shifted = hyp[:i] + hyp[i + length :]
                shifted[j:j] = hyp[i : i + length]
                states = base[: min(i, j) + 1]
                gain = distance - _distance_states(shifted, peq, m, states, min(i, j))
                # pyter sorts (gain, words) tuples and takes the last: largest gain, then largest list.
                if best is None or (gain, shifted) > (best[0], best[1]):
                    best = (gain, shifted, states)
        if best is None or best[0] <= 0:
            break
        shifts += 1
        hyp, base = best[1], best[2]
        distance -= best[0]
    return (shifts + distance) / m


def sentence_ter(hyps_tok: Sequence[str], refs_tok: Sequence[Sequence[str]]) -> list[float]:
    """Per source, the smallest pyter TER over its references, as eval.py's `ter_score` loop.

    A reference that is the empty string, or that has no words (pyter divides by zero), counts
    as TER 1. Identical (hypothesis, reference) pairs are computed once.
    """
    cache: dict[tuple[str, str], float] = {}
    out = []
    for hyp, group in zip(hyps_tok, refs_tok, strict=True):
        candidates = []
        for ref in group:
            if len(ref) == 0:
                candidates.append(1.0)
                continue
            key = (hyp, ref)
            if key not in cache:
                try:
                    cache[key] = pyter_ter(hyp.split(), ref.split())
                except ZeroDivisionError:
                    cache[key] = 1.0
            candidates.append(cache[key])
        out.append(min(candidates))
    return out


# ---------------------------------------------------------------- METEOR (file mode)


def meteor_file_mode(hyps_tok: Sequence[str], refs_tok: Sequence[Sequence[str]], num_refs: int) -> float:
    """METEOR 1.5 as eval.py runs it: `java -Xmx2G -jar meteor-1.5.jar HYP REF -l en -norm -r N`.

    Raises:
        JavaUnavailable: no Java, or the jar failed.
    """
    from tasks.metrics.coco import JavaUnavailable, java_command, meteor_jar

    java, jar = java_command(), meteor_jar()
    if not jar.is_file():
        raise JavaUnavailable(f"{jar} is missing; reinstall pycocoevalcap (pip install pycocoevalcap==1.2)")
    with tempfile.TemporaryDirectory(prefix="dart-meteor-") as tmp:
        hyp_file, ref_file = Path(tmp) / "hypothesis_meteor", Path(tmp) / "reference_meteor"
        # One terminated line per segment/reference, so an empty last line is still read.
        hyp_file.write_text("".join(h + "\n" for h in hyps_tok), encoding="utf-8")
        ref_file.write_text(
            "".join(r + "\n" for group in refs_tok for r in group[:num_refs]), encoding="utf-8"
        )
        cmd = [
            java,
            "-Dfile.encoding=UTF-8",
            "-Xmx2G",
            "-jar",
            str(jar),
            str(hyp_file),
            str(ref_file),
            "-l",
            "en",
            "-norm",
            "-r",
            str(num_refs),
        ]
        try:
            proc = subprocess.run(cmd, cwd=jar.parent, capture_output=True, check=False)
        except OSError as exc:
            raise JavaUnavailable(f"could not run java ({exc})") from None
    lines = proc.stdout.decode("utf-8", "replace").strip().split("\n")
    if proc.returncode != 0 or not lines[-1].startswith("Final score:"):
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise JavaUnavailable(f"METEOR failed (exit {proc.returncode}): {err[-1] if err else lines[-1]}")
    return float(lines[-1].split()[-1])


# ---------------------------------------------------------------- public API


def dart_scores(
    hyps: Sequence[str],
    refs: Sequence[Sequence[str]],
    *,
    num_refs: int = NUM_REFS,
    preprocess: bool = True,
    meteor: bool = True,
) -> dict:
    """BLEU, METEOR and TER of DART outputs, as GenerationEval computes them for LoRA.

    Args:
        hyps: one output per source.
        refs: per source, its references (see `prepare` for truncation/padding to `num_refs`).
        num_refs: eval.py's `-nr` (6 for DART in the LoRA scripts).
        preprocess: apply LoRA's `--tokenize --lower` to all texts first (idempotent on files
            that LoRA's decoding script wrote).
        meteor: compute METEOR (needs Java); if Java is missing METEOR is reported unavailable.

    Returns:
        {"scores": {"BLEU": 0-100, "METEOR": 0-1, "TER": 0-1}, "settings": {...},
        "unavailable": {metric: reason}} with full-precision floats.
    """
    hyps_p, refs_p = prepare(hyps, refs, num_refs, preprocess)
    if not hyps_p:
        raise _io.MetricInputError("no segments to score")
    scores: dict[str, float] = {"BLEU": multi_bleu_detok(hyps_p, refs_p)}
    unavailable: dict[str, str] = {}
    # eval.py's references_tok / hypothesis_tok feed METEOR and TER.
    cache: dict[str, str] = {}

    def tok(text: str) -> str:
        if text not in cache:
            cache[text] = eval_tokenize(text)
        return cache[text]

    hyps_tok = [tok(h) for h in hyps_p]
    refs_tok = [[tok(r) for r in g] for g in refs_p]
    if meteor:
        from tasks.metrics.coco import JavaUnavailable

        try:
            scores["METEOR"] = meteor_file_mode(hyps_tok, refs_tok, num_refs)
        except JavaUnavailable as exc:
            unavailable["METEOR"] = str(exc)
    else:
        unavailable["METEOR"] = "not requested"
    ters = sentence_ter(hyps_tok, refs_tok)
    scores["TER"] = sum(ters) / len(ters)
    settings = {
        "script": "WebNLG-2020 GenerationEval eval.py as in microsoft/LoRA examples/NLG (-m bleu,meteor,ter)",
        "num_refs": num_refs,
        "reference_padding": "first reference repeated (LoRA gpt2_decode.py)",
        "preprocess": "gpt2_decode.py --tokenize --lower" if preprocess else "none (texts scored as given)",
        "BLEU": "multi-bleu-detok.perl semantics (13a tokenisation, case-sensitive), 0-100, own code",
        "METEOR": f"meteor-1.5.jar file mode -l en -norm -r {num_refs}, text tokenised by {NLTK_SETTING}",
        "TER": "mean over segments of min over references of pyter3 0.3 sentence TER, own code, "
        f"text tokenised by {NLTK_SETTING}",
        "segments": len(hyps_p),
    }
    return {"metric": "dart", "scores": scores, "settings": settings, "unavailable": unavailable}


def score_files(
    hyp_path: str | Path, ref_paths: Sequence[str | Path], *, preprocess: bool = True, meteor: bool = True
) -> dict:
    """Scores GenerationEval-layout files: one output a line, one reference file per index.

    The number of reference files is the reference count (`-nr`). Every file must have the same
    number of lines. Blank lines are kept: a blank output is an empty hypothesis, a blank
    reference line a blank reference (treated as the official script treats it).
    """
    if not ref_paths:
        raise _io.MetricInputError("give at least one reference file")
    hyps = _io.split_newline_lines(hyp_path)
    columns = []
    for path in ref_paths:
        lines = _io.split_newline_lines(path)
        _io.check_same_length(path, len(lines), hyp_path, len(hyps), "references", "hypotheses")
        columns.append(lines)
    refs = [list(group) for group in zip(*columns)]
    return dart_scores(hyps, refs, num_refs=len(ref_paths), preprocess=preprocess, meteor=meteor)
