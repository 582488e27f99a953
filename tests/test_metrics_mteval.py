"""E2E BLEU / NIST as e2e-metrics runs `mteval-v13a-sig.pl`: one test (or more) per known cause.

References are real E2E test-set MRs (`../shared/data/e2e/testset_w_refs.csv`); outputs are
hand-made. Tokens (mteval's tokenisation, lower-cased) of the references used:

  MR 1 (Blue Spice, coffee shop, city centre), 2 references:
    A: "a coffee shop in the city centre area called blue spice ."                 12 words
    B: "blue spice is a coffee shop in city centre ."                              10 words
  MR 5 (Blue Spice, coffee shop, average, near Crowne Plaza Hotel), 1 reference:
    C: "crowne plaza hotel has a coffee shop nearby with an average customer
        rating called blue spice ."                                                17 words

Scoring MR 1 and MR 5 together: 2 reference sets, MR 5 padded with an empty reference;
39 reference words. Unigram counts: a 3, coffee 3, shop 3, blue 3, spice 3, is 1, crowne /
plaza / hotel / has 1. Bigram counts: "blue spice" 3, "spice is" 1, "is a" 1, "a coffee" 3,
"coffee shop" 3, and 1 for each bigram of C's start. "blue spice is" 1.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from tasks.metrics import e2e
from tasks.metrics._io import MetricInputError
from tasks.metrics.mteval import NIST_BETA, mteval_scores, mteval_tokenize

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def testset() -> list[list[str]]:
    """References of the E2E test set, grouped by consecutive identical MRs (630 groups)."""
    with open(DATA / "e2e" / "testset_w_refs.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    groups, last = [], None
    for mr, ref in rows:
        if mr != last:
            groups.append([])
            last = mr
        groups[-1].append(ref)
    assert len(groups) == 630 and {len(g) for g in groups} >= {1, 2, 45}
    return groups


@pytest.fixture(scope="module")
def mr1_mr5(testset):
    refs = [testset[0], testset[4]]
    assert [len(mteval_tokenize(r)) for group in refs for r in group] == [12, 10, 17]
    return refs


# Outputs: a 6-word prefix of B for MR 1, a 7-word prefix of C for MR 5 (all n-grams match).
SHORT = ["Blue Spice is a coffee shop", "Crowne Plaza Hotel has a coffee shop"]


def test_cause1a_bleu_closest_length_skips_padded_empty_reference(mr1_mr5):
    # Closest lengths: MR 1 (6 words): |6-10| < |6-12| -> 10. MR 5 (7 words): the padded empty
    # reference is skipped -> 17 (taking it, |7-0| < |7-17|, gave 0, hence BP 1 and BLEU 1).
    # Precisions 13/13, 11/11, 9/9, 7/7 -> BLEU = exp(1 - 27/13).
    s = mteval_scores(SHORT, mr1_mr5)
    assert s["BLEU"] == pytest.approx(math.exp(1 - 27 / 13), abs=1e-12)
    assert round(s["BLEU"], 4) == 0.3406


def test_cause1a_with_45_references(testset):
    # MR 80 (Green Man, pub, Japanese, riverside, family friendly) has 45 references; its
    # shortest, "Green Man located in riverside near Express by Holiday Inn is a family friendly
    # Japanese pub", has 16 words (the next ones 17). With it as the MR 80 output (closest 16)
    # and the 7-word prefix of C for MR 5 (44 padded empty references, closest 17):
    # precisions 1, BLEU = exp(1 - 33/23). Taking an empty reference for MR 5 gave BLEU 1.
    big = testset[79]
    assert len(big) == 45
    shortest = min(big, key=lambda r: len(mteval_tokenize(r)))
    assert len(mteval_tokenize(shortest)) == 16
    s = mteval_scores([shortest, SHORT[1]], [big, testset[4]])
    assert s["BLEU"] == pytest.approx(math.exp(1 - 33 / 23), abs=1e-12)


def test_cause1b_nist_penalty_uses_average_non_empty_references(mr1_mr5):
    # Information of the matched n-grams (all counts 1 in the outputs, clipping is inactive):
    #   unigrams: blue, spice, a, coffee, shop: log2(39/3) each (5 in MR 1, 3 in MR 5);
    #             is, crowne, plaza, hotel, has: log2(39/1) each  -> 8 log2 13 + 5 log2 39
    #   bigrams:  "spice is" log2(3/1); all others log2(c/c) = 0
    #   trigrams: "blue spice is" log2(3/1); 4-, 5-grams: 0
    # Output n-gram counts: 13, 11, 9, 7, 5.
    raw = (8 * math.log2(13) + 5 * math.log2(39)) / 13 + math.log2(3) / 11 + math.log2(3) / 9
    # Length: 39 reference words / ((2 + 1) / 2 non-empty references per MR) = 26; 13 / 26 = 1/2.
    # (Dividing by the 2 reference sets gave 19.5, a ratio 2/3 and a factor of exactly 0.5.)
    s = mteval_scores(SHORT, mr1_mr5)
    assert s["NIST"] == pytest.approx(raw * math.exp(-NIST_BETA * math.log(2) ** 2), abs=1e-12)
    assert round(s["NIST"], 4) == 0.6108  # 4.63024 * 0.131905 (the 2-set divisor gave 2.3151)


def test_cause2_no_sgml_escaping():
    # The text goes into mteval's SGML file as it is: <skipped> is deleted, and the literal
    # entities are decoded in the order &quot; &amp; &lt; &gt;, so "&amp;lt;" becomes "<".
    assert mteval_tokenize("a &quot;b&quot; <skipped>c &amp;lt; d &amp; e") == [
        "a",
        '"',
        "b",
        '"',
        "c",
        "<",
        "d",
        "&",
        "e",
    ]


def test_cause2_skipped_tag_in_output(mr1_mr5):
    # "<skipped>" is deleted, so the output is B itself: precisions 1, closest length 10 = 10.
    s = mteval_scores(["Blue Spice is a coffee shop in city centre<skipped>."], [mr1_mr5[0]])
    assert s["BLEU"] == pytest.approx(1.0, abs=1e-12)


def test_cause3_perl_whitespace():
    # U+001C..U+001F are whitespace for Python's str.split() but not for Perl's \s: kept in the word.
    for ch in "\x1c\x1d\x1e\x1f":
        assert mteval_tokenize(f"Blue{ch}Spice is") == [f"blue{ch}spice", "is"]
    # Perl's \s does include these (Unicode rules on character strings).
    for ch in "\x0b\x85\xa0\u1680\u2007\u2028\u2029\u202f\u205f\u3000":
        assert mteval_tokenize(f"Blue{ch}Spice") == ["blue", "spice"]
    # U+200B (zero width space) is whitespace for neither.
    assert mteval_tokenize("Blue\u200bSpice") == ["blue\u200bspice"]


def _write_refs(path: Path, groups: list[list[str]], tail: str = "\n") -> None:
    path.write_text("\n\n".join("\n".join(g) for g in groups) + tail, encoding="utf-8")


def test_cause3_unit_separator_in_output_file(tmp_path, mr1_mr5):
    # read_lines strips each line with Python's str.strip (removes U+001F at the ends); inside
    # the line U+001F glues "blue" and "spice" into one word that matches nothing:
    # 9 words: unigrams 8/9, bigrams 7/8, trigrams 6/7, 4-grams 5/6; closest 10 -> BP exp(1 - 10/9).
    refs = tmp_path / "refs.txt"
    _write_refs(refs, mr1_mr5)
    hyps = tmp_path / "hyps.txt"
    hyps.write_text(
        "\x1fBlue Spice is a coffee shop in city centre.\x1f\nBlue\x1fSpice is a coffee shop in city centre.\n",
        encoding="utf-8",
    )
    h, r = e2e.read_files(hyps, refs)
    assert h[0] == "Blue Spice is a coffee shop in city centre."
    s = mteval_scores(h[1:], r[:1])
    assert s["BLEU"] == pytest.approx(
        (8 / 9 * 7 / 8 * 6 / 7 * 5 / 6) ** 0.25 * math.exp(1 - 10 / 9), abs=1e-12
    )


def test_cause4_bom_stays_glued_to_first_word(tmp_path, mr1_mr5):
    # codecs.open(..., 'UTF-8') keeps U+FEFF: the first word is "\ufeffblue", which matches
    # nothing: 10 words, unigrams 9/10, bigrams 8/9, trigrams 7/8, 4-grams 6/7, BP 1 (closest 10):
    # BLEU = (6/10)^(1/4).
    refs = tmp_path / "refs.txt"
    _write_refs(refs, mr1_mr5[:1] + [["unused"]])
    hyps = tmp_path / "hyps.txt"
    hyps.write_bytes("\ufeffBlue Spice is a coffee shop in city centre.\nunused\n".encode())
    s = e2e.e2e_scores(*e2e.read_files(hyps, refs), coco=False)["scores"]
    # The second MR adds 1 matching word: unigrams 10/11, bigrams 8/9, trigrams 7/8, 4-grams 6/7.
    assert s["BLEU"] == pytest.approx((10 / 11 * 8 / 9 * 7 / 8 * 6 / 7) ** 0.25, abs=1e-12)
    h, _ = e2e.read_files(hyps, refs)
    assert h[0].startswith("\ufeff")


def test_cause4_references_without_blank_line_are_one_per_mr(tmp_path, mr1_mr5):
    # No separating blank line (also with one final blank line): one reference per MR.
    refs = tmp_path / "refs.txt"
    hyps = tmp_path / "hyps.txt"
    hyps.write_text("Blue Spice is a coffee shop in city centre.\nCrowne Plaza Hotel\n", encoding="utf-8")
    for tail in ("\n", "\n\n", ""):
        refs.write_text(mr1_mr5[0][1] + "\n" + mr1_mr5[1][0] + tail, encoding="utf-8")
        h, r = e2e.read_files(hyps, refs)
        assert r == [[mr1_mr5[0][1]], [mr1_mr5[1][0]]]


def test_cause4_references_ending_in_two_blank_lines_are_an_error(tmp_path, mr1_mr5):
    # read_lines drops only one empty group at the end; the second one makes an MR without
    # references and measure_scores.py fails. We stop with a message naming the fix.
    refs = tmp_path / "refs.txt"
    _write_refs(refs, mr1_mr5, tail="\n\n\n")
    hyps = tmp_path / "hyps.txt"
    hyps.write_text("x\ny\n", encoding="utf-8")
    with pytest.raises(
        MetricInputError, match=r"refs.txt: the file ends in 2 blank lines.*remove all but one"
    ):
        e2e.read_files(hyps, refs)
    _write_refs(refs, mr1_mr5, tail="\n\n")  # one final blank line is fine
    assert len(e2e.read_files(hyps, refs)[1]) == 2


def test_cause5_bleu_default_smoothing(mr1_mr5):
    # "blue spice is in city centre" against A and B: unigrams 6/6; bigrams 4/5 ("is in" misses);
    # trigrams 2/4 ("blue spice is", "in city centre"); 4-grams 0/3 -> smoothed to 1/(2*3).
    # Closest length 10 vs 6 words: BP exp(1 - 10/6).
    s = mteval_scores(["Blue Spice is in city centre"], [mr1_mr5[0]])
    expected = (1 * 4 / 5 * 2 / 4 * 1 / 6) ** 0.25 * math.exp(1 - 10 / 6)
    assert s["BLEU"] == pytest.approx(expected, abs=1e-12)
    assert round(s["BLEU"], 4) == 0.2609  # 0.50813 * 0.51342 (unsmoothed: 0)
    # No unigram matches: 1/(2*1); no 2-, 3-, 4-grams in a 1-word output: log 0 each.
    s = mteval_scores(["xyz"], [mr1_mr5[0]])
    assert s["BLEU"] == pytest.approx(0.5**0.25 * math.exp(1 - 10), abs=1e-15)
    # 3 words, all matching ("blue spice ." ends A): t4 = 0 counts as precision 1: BLEU = BP.
    s = mteval_scores(["Blue Spice."], [mr1_mr5[0]])
    assert s["BLEU"] == pytest.approx(math.exp(1 - 10 / 3), abs=1e-12)
