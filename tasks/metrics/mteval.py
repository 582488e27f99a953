"""BLEU and NIST exactly as NIST `mteval-v13a.pl` computes them (own code, no Perl needed).

This mirrors what e2e-metrics `measure_scores.py` does on its default (Perl) path: it writes the
references, padded with empty segments up to the largest reference count, as one SGML "system"
per reference index (text escaped with `xml.sax.saxutils.escape`) and runs `mteval-v13a.pl`
without `-c`, i.e. case-insensitively. Reproduced details:

* Tokenisation: mteval's default `tokenization` (un-escaping of &quot; &amp; &lt; &gt; in that
  order, ASCII-only lower-casing `tr/[A-Z]/[a-z]/`, punctuation split, period/comma split unless
  next to a digit, dash split after a digit). sacrebleu's '13a' tokenizer follows the same rules,
  but `lowercase=True` lower-cases all of Unicode; mteval does not.
* BLEU: corpus statistics, n <= 4, closest reference length per segment (ties: the shorter one),
  no smoothing (a corpus with no matching 4-gram scores 0). The padded empty references take
  part in the closest-length choice as they do in mteval (sacrebleu drops empty references).
* NIST: n <= 5; information weights info(w1..wn) = log2(count(w1..wn-1) / count(w1..wn)) counted
  over all reference segments, with the total number of reference words as the unigram
  denominator (and, as Perl's truth test does, also for n-grams whose (n-1)-gram prefix is the
  string "0"); matched information clipped to the largest count in any one reference, divided by
  the number of hypothesis n-grams per order; brevity factor exp(-beta * ln(r)^2) with
  r = min(1, hyp words / (reference words / reference-set count)), beta = -ln 0.5 / ln(1.5)^2.
  The reference-set count includes padded empty references, so the "average" reference length
  is total reference words divided by the largest number of references of any segment.

mteval prints both scores with 4 decimals (BLEU on a 0-1 scale); these functions return full
precision. Where mteval would die (no hypothesis words at all), both scores are 0.0 here.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from xml.sax.saxutils import escape

MAX_BLEU_N = 4
MAX_NIST_N = 5
# mteval: $beta = -log(0.5) / log(1.5)**2, so that the factor is 0.5 at a length ratio of 2/3.
NIST_BETA = -math.log(0.5) / math.log(1.5) ** 2

_PUNCT = re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])")
_PERIOD_COMMA_AFTER = re.compile(r"([^0-9])([\.,])")
_PERIOD_COMMA_BEFORE = re.compile(r"([\.,])([^0-9])")
_DIGIT_DASH = re.compile(r"([0-9])(-)")
_SPACES = re.compile(r"\s+")
_ASCII_SPACES = re.compile(r"[ \t\n\r\f\v]+")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def tokenize_13a(text: str, lowercase: bool = True, ascii_whitespace: bool = False) -> list[str]:
    """mteval's default `tokenization` routine (also used by Moses' multi-bleu-detok.perl).

    Args:
        text: the segment as the Perl script reads it (after any SGML escaping).
        lowercase: apply mteval's `tr/[A-Z]/[a-z]/` (ASCII letters only).
        ascii_whitespace: treat only ASCII whitespace as a separator, as Perl does on byte
            strings (multi-bleu-detok reads raw bytes); False uses Unicode whitespace.
    """
    norm = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    norm = norm.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    norm = f" {norm} "
    if lowercase:
        norm = norm.translate(_ASCII_LOWER)
    norm = _PUNCT.sub(r" \1 ", norm)
    norm = _PERIOD_COMMA_AFTER.sub(r"\1 \2 ", norm)
    norm = _PERIOD_COMMA_BEFORE.sub(r" \1 \2", norm)
    norm = _DIGIT_DASH.sub(r"\1 \2 ", norm)
    norm = (_ASCII_SPACES if ascii_whitespace else _SPACES).sub(" ", norm)
    norm = norm.strip(" \t\n\r\f\v" if ascii_whitespace else None)
    return norm.split(" ") if norm else []


def mteval_tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Tokens of one segment as mteval-v13a sees it after e2e-metrics' SGML escaping.

    Args:
        text: the raw segment.
        lowercase: mteval's default (no `-c`); only ASCII letters are lower-cased.
    """
    return tokenize_13a(escape(text), lowercase)


def _ngrams(words: Sequence[str], max_n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for n in range(1, max_n + 1) for i in range(len(words) - n + 1))


def pad_references(refs: Sequence[Sequence[str]]) -> list[list[str]]:
    """Pads every segment's references with empty strings to the largest reference count."""
    width = max(len(r) for r in refs)
    return [list(r) + [""] * (width - len(r)) for r in refs]


def mteval_scores(
    hyps: Sequence[str], refs: Sequence[Sequence[str]], lowercase: bool = True
) -> dict[str, float]:
    """Corpus BLEU and NIST of `hyps` against multi-reference `refs`, as mteval-v13a.

    Args:
        hyps: one system output per segment.
        refs: per segment, its references (any number >= 1; padded internally as e2e-metrics does).
        lowercase: False reproduces mteval's `-c` (case-sensitive) mode.

    Returns:
        {"BLEU": 0..1, "NIST": >= 0} at full precision.
    """
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference groups")
    if not hyps or any(len(r) == 0 for r in refs):
        raise ValueError("need at least one segment and at least one reference per segment")
    padded = pad_references(refs)
    n_ref_sets = len(padded[0])
    hyp_toks = [mteval_tokenize(h, lowercase) for h in hyps]
    ref_toks = [[mteval_tokenize(r, lowercase) for r in group] for group in padded]

    # NIST information weights over every reference segment of every reference set.
    counts: Counter = Counter()
    total_ref_words = 0
    for group in ref_toks:
        for words in group:
            total_ref_words += len(words)
            counts.update(_ngrams(words, MAX_NIST_N))

    def info(ngram: tuple[str, ...]) -> float:
        prefix = ngram[:-1]
        # Perl tests the joined prefix string for truth: "" and "0" both mean "no prefix".
        denominator = counts[prefix] if prefix and " ".join(prefix) != "0" else total_ref_words
        return -math.log(counts[ngram] / denominator) / math.log(2)

    max_n = max(MAX_BLEU_N, MAX_NIST_N)
    match = [0] * (max_n + 1)
    tst_count = [0] * (max_n + 1)
    tst_info = [0.0] * (max_n + 1)
    bleu_ref_len = 0
    ref_words = 0
    for words, group in zip(hyp_toks, ref_toks):
        hyp_len = len(words)
        for n in range(1, max_n + 1):
            tst_count[n] += max(hyp_len - n + 1, 0)
        ref_max: Counter = Counter()
        closest = None
        for ref in group:
            ref_max |= _ngrams(ref, max_n)  # element-wise max of counts
            ref_words += len(ref)
            if closest is None or abs(hyp_len - len(ref)) < abs(hyp_len - closest):
                closest = len(ref)
            elif abs(hyp_len - len(ref)) == abs(hyp_len - closest) and len(ref) < closest:
                closest = len(ref)
        bleu_ref_len += closest
        for ngram, count in _ngrams(words, max_n).items():
            if ngram in ref_max:
                clipped = min(count, ref_max[ngram])
                match[len(ngram)] += clipped
                tst_info[len(ngram)] += info(ngram) * clipped

    if tst_count[1] == 0:
        return {"BLEU": 0.0, "NIST": 0.0}

    # BLEU: mteval's bleu_score, cumulative 4-gram value.
    if match[MAX_BLEU_N] == 0:
        bleu = 0.0
    else:
        log_precision = sum(math.log(match[n] / tst_count[n]) for n in range(1, MAX_BLEU_N + 1))
        bleu = math.exp(log_precision / MAX_BLEU_N + min(0.0, 1 - bleu_ref_len / tst_count[1]))

    # NIST: mteval's nist_score, cumulative 5-gram value.
    nist = sum(tst_info[n] / max(tst_count[n], 1) for n in range(1, MAX_NIST_N + 1))
    if ref_words == 0:
        return {"BLEU": bleu, "NIST": 0.0}
    ratio = tst_count[1] / (ref_words / n_ref_sets)
    nist *= _nist_length_penalty(ratio)
    return {"BLEU": bleu, "NIST": nist}


def _nist_length_penalty(ratio: float) -> float:
    if ratio >= 1:
        return 1.0
    if ratio <= 0:
        return 0.0
    return math.exp(-NIST_BETA * math.log(ratio) ** 2)
