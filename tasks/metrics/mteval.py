"""BLEU and NIST exactly as e2e-metrics runs NIST `mteval-v13a-sig.pl` (own code, no Perl needed).

What `measure_scores.py` (default Perl path) does: it writes the references as one SGML "system"
per reference index, padding MRs that have fewer references with empty segments up to the
largest reference count, writes every text into the SGML files *unescaped*, and runs its copy
of `mteval-v13a-sig.pl` without `-c` (case-insensitive) and with the default BLEU smoothing.
Reproduced rules of that script:

* Reading: each `<doc>` span has every run of Perl whitespace replaced by one space before the
  segments are taken out, then mteval's default `tokenization`: delete `<skipped>`, turn the
  literal strings `&quot;` `&amp;` `&lt;` `&gt;` (in that order) into `"` `&` `<` `>`, ASCII-only
  lower-casing `tr/[A-Z]/[a-z]/`, punctuation split, period/comma split unless next to a digit,
  dash split after a digit, split on whitespace. Since nothing is escaped, a text that itself
  contains `&amp;lt;` ends up as `<`, as in the official pipeline.
* Whitespace is Perl's `\\s` on character strings (`PERL_WHITESPACE`): U+0009-U+000D, U+0020,
  U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000. Python's
  `str.split()` also splits at U+001C-U+001F; mteval keeps those inside the word.
* BLEU (`bleu_score`, the default, smoothed): corpus statistics, n <= 4; per segment the
  closest reference length (ties: the shorter), where references with no words are skipped
  (`return $currentLength if (!$referenceSentenceLength)`), except that the first reference
  set's length is the starting value even when it is empty. Precision of order n: m_n / t_n;
  if t_n = 0 it counts as 1 (log 0 added); if m_n = 0 it is 1 / (2^k t_n), k = 1, 2, ... for
  the 1st, 2nd, ... order without matches. BLEU = exp(mean of the 4 logs) * min(1, exp(1 - r/c)),
  and 0 for an output of no words at all.
* NIST (`nist_score`): n <= 5; information weights info(w1..wn) = log2(count(w1..wn-1) /
  count(w1..wn)) counted over all reference segments, with the total number of reference words
  as the unigram denominator (and, as Perl's truth test does, also for n-grams whose (n-1)-gram
  prefix is the string "0"); matched information clipped to the largest count in any one
  reference, divided by the number of hypothesis n-grams per order; brevity factor
  exp(-beta * ln(r)^2), r = min(1, hyp words / (reference words / nrefs)), beta = -ln 0.5 /
  ln(1.5)^2, where nrefs is the *average number of non-empty references per segment* (a
  reference is empty when it has no words after tokenisation, e.g. a padded one).

mteval prints both scores with 4 decimals (BLEU on a 0-1 scale); these functions return full
precision. Where mteval would die dividing by zero (no reference words at all), NIST is 0.0.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

MAX_BLEU_N = 4
MAX_NIST_N = 5
# mteval: $beta = -log(0.5) / log(1.5)**2, so that the factor is 0.5 at a length ratio of 2/3.
NIST_BETA = -math.log(0.5) / math.log(1.5) ** 2
# Perl's \s on (UTF-8 flagged) character strings, Perl >= 5.18 (which added U+000B).
PERL_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
ASCII_WHITESPACE = "\t\n\x0b\x0c\r "

_PUNCT = re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])")
_PERIOD_COMMA_AFTER = re.compile(r"([^0-9])([\.,])")
_PERIOD_COMMA_BEFORE = re.compile(r"([\.,])([^0-9])")
_DIGIT_DASH = re.compile(r"([0-9])(-)")
_PERL_SPACES = re.compile(f"[{PERL_WHITESPACE}]+")
_ASCII_SPACES = re.compile(f"[{ASCII_WHITESPACE}]+")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def tokenize_13a(text: str, lowercase: bool = True, ascii_whitespace: bool = False) -> list[str]:
    """mteval's default `tokenization` routine (also used by Moses' multi-bleu-detok.perl).

    Args:
        text: the segment exactly as the Perl script holds it.
        lowercase: apply mteval's `tr/[A-Z]/[a-z]/` (ASCII letters only).
        ascii_whitespace: treat only ASCII whitespace as a separator, as Perl does on byte
            strings (multi-bleu-detok reads raw bytes); False uses Perl's Unicode whitespace.
    """
    spaces = _ASCII_SPACES if ascii_whitespace else _PERL_SPACES
    norm = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    norm = norm.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    norm = f" {norm} "
    if lowercase:
        norm = norm.translate(_ASCII_LOWER)
    norm = _PUNCT.sub(r" \1 ", norm)
    norm = _PERIOD_COMMA_AFTER.sub(r"\1 \2 ", norm)
    norm = _PERIOD_COMMA_BEFORE.sub(r" \1 \2", norm)
    norm = _DIGIT_DASH.sub(r"\1 \2 ", norm)
    norm = spaces.sub(" ", norm).strip(" ")
    return norm.split(" ") if norm else []


def mteval_tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Tokens of one segment as mteval-v13a-sig sees it in e2e-metrics' (unescaped) SGML file.

    Args:
        text: the raw segment, as measure_scores.py read it.
        lowercase: mteval's default (no `-c`); only ASCII letters are lower-cased.
    """
    # get_MT_data: `$span =~ s/[\s\n\r]+/ /g` over the whole <doc> before segments are cut out.
    return tokenize_13a(_PERL_SPACES.sub(" ", text), lowercase)


def _ngrams(words: Sequence[str], max_n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for n in range(1, max_n + 1) for i in range(len(words) - n + 1))


def pad_references(refs: Sequence[Sequence[str]]) -> list[list[str]]:
    """Pads every segment's references with empty strings to the largest reference count."""
    width = max(len(r) for r in refs)
    return [list(r) + [""] * (width - len(r)) for r in refs]


def closest_length(hyp_len: int, ref_lens: Sequence[int]) -> int:
    """mteval's closest reference length: starts at the first, then skips references of 0 words.

    Among the others, the smallest |hyp_len - ref_len| wins, ties going to the shorter one.
    """
    best = ref_lens[0]
    for length in ref_lens[1:]:
        if length and (abs(hyp_len - length), length) < (abs(hyp_len - best), best):
            best = length
    return best


def bleu_from_counts(match: Sequence[int], total: Sequence[int], ref_len: int, hyp_len: int) -> float:
    """mteval-v13a's smoothed `bleu_score` from per-order matches and totals (index 1..4)."""
    if hyp_len == 0:
        return 0.0
    log_sum, smooth = 0.0, 1
    for n in range(1, MAX_BLEU_N + 1):
        if total[n] == 0:
            continue  # $iscore = 0
        if match[n] == 0:
            smooth *= 2
            log_sum += math.log(1 / (smooth * total[n]))
        else:
            log_sum += math.log(match[n] / total[n])
    return math.exp(log_sum / MAX_BLEU_N) * math.exp(min(0.0, 1 - ref_len / hyp_len))


def mteval_scores(
    hyps: Sequence[str], refs: Sequence[Sequence[str]], lowercase: bool = True
) -> dict[str, float]:
    """Corpus BLEU and NIST of `hyps` against multi-reference `refs`, as mteval-v13a-sig.

    Args:
        hyps: one system output per segment.
        refs: per segment, its references (any number >= 1; padded internally as e2e-metrics
            does; the first reference of each segment is in the first reference set).
        lowercase: False reproduces mteval's `-c` (case-sensitive) mode.

    Returns:
        {"BLEU": 0..1, "NIST": >= 0} at full precision.
    """
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference groups")
    if not hyps or any(len(r) == 0 for r in refs):
        raise ValueError("need at least one segment and at least one reference per segment")
    padded = pad_references(refs)
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
    nonempty_refs = 0
    for words, group in zip(hyp_toks, ref_toks):
        hyp_len = len(words)
        for n in range(1, max_n + 1):
            tst_count[n] += max(hyp_len - n + 1, 0)
        ref_max: Counter = Counter()
        for ref in group:
            ref_max |= _ngrams(ref, max_n)  # element-wise max of counts
        nonempty_refs += sum(1 for ref in group if ref)
        bleu_ref_len += closest_length(hyp_len, [len(ref) for ref in group])
        for ngram, count in _ngrams(words, max_n).items():
            if ngram in ref_max:
                clipped = min(count, ref_max[ngram])
                match[len(ngram)] += clipped
                tst_info[len(ngram)] += info(ngram) * clipped

    bleu = bleu_from_counts(match, tst_count, bleu_ref_len, tst_count[1])
    if total_ref_words == 0:
        return {"BLEU": bleu, "NIST": 0.0}  # mteval dies here (division by zero)
    nist = sum(tst_info[n] / max(tst_count[n], 1) for n in range(1, MAX_NIST_N + 1))
    avg_ref_words = total_ref_words / (nonempty_refs / len(hyps))
    nist *= _nist_length_penalty(tst_count[1] / avg_ref_words)
    return {"BLEU": bleu, "NIST": nist}


def _nist_length_penalty(ratio: float) -> float:
    if ratio >= 1:
        return 1.0
    if ratio <= 0:
        return 0.0
    return math.exp(-NIST_BETA * math.log(ratio) ** 2)
