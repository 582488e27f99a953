"""E2E metrics: the official e2e-metrics test vector and hand-computed small cases."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from tasks.metrics import coco, e2e
from tasks.metrics._io import MetricInputError
from tasks.metrics.mteval import NIST_BETA, mteval_scores, mteval_tokenize

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EXAMPLE = DATA / "metrics" / "e2e_example"
# measure_scores.py devel-conc.txt baseline-output.txt (Perl mteval path), 4-decimal print.
OFFICIAL = {"BLEU": 0.7203, "NIST": 7.8212, "METEOR": 0.4801, "ROUGE_L": 0.7910, "CIDEr": 2.3039}


@pytest.fixture(scope="module")
def meteor():
    if shutil.which("java") is None:
        pytest.fail(f"Java is required for METEOR / PTB tokenizer tests: {coco.JAVA_INSTALL_HINT}")
    with coco.Meteor() as m:
        yield m


def nist_penalty(ratio: float) -> float:
    beta = -math.log(0.5) / math.log(1.5) ** 2
    return math.exp(-beta * math.log(ratio) ** 2)


def test_official_vector(meteor):
    result = e2e.score_files(EXAMPLE / "baseline-output.txt", EXAMPLE / "devel-conc.txt", meteor=meteor)
    assert result["unavailable"] == {}
    got = {k: round(v, 4) for k, v in result["scores"].items()}
    assert got == OFFICIAL


def test_official_vector_bleu_equals_sacrebleu():
    # On this vector (no very short outputs, no non-ASCII capitals) sacrebleu agrees exactly.
    import sacrebleu

    hyps, refs = e2e.read_files(EXAMPLE / "baseline-output.txt", EXAMPLE / "devel-conc.txt")
    width = max(len(r) for r in refs)
    streams = [[r[i] if i < len(r) else None for r in refs] for i in range(width)]
    sb = sacrebleu.corpus_bleu(hyps, streams, tokenize="13a", lowercase=True).score / 100
    assert mteval_scores(hyps, refs)["BLEU"] == pytest.approx(sb, abs=1e-12)


def test_mteval_tokenisation():
    assert mteval_tokenize("Hello, World! It's 3.5-4 km.") == [
        "hello",
        ",",
        "world",
        "!",
        "it's",
        "3.5",
        "-",
        "4",
        "km",
        ".",
    ]
    # Only ASCII letters are lower-cased (tr/[A-Z]/[a-z]/), unlike sacrebleu's lowercase=True.
    assert mteval_tokenize("ÉCOLE Zürich") == ["École", "zürich"]
    assert mteval_tokenize("a&b <c>") == ["a", "&", "b", "<", "c", ">"]
    assert mteval_tokenize("...") == [".", ".", "."]
    assert mteval_tokenize("   ") == []


def test_bleu_nist_single_reference_by_hand():
    # hyp 4 words, all n-gram precisions 1; ref 5 words -> BP exp(1 - 5/4).
    # NIST: unigram info log2(5/1) each, higher orders log2(1/1) = 0; ratio 4/5.
    s = mteval_scores(["a b c d"], [["a b c d e"]])
    assert s["BLEU"] == pytest.approx(math.exp(-0.25), abs=1e-12)
    assert s["NIST"] == pytest.approx(math.log2(5) * nist_penalty(0.8), abs=1e-12)
    assert NIST_BETA == pytest.approx(-math.log(0.5) / math.log(1.5) ** 2)


def test_nist_average_length_counts_non_empty_references():
    # Segment 1 has 2 references, segment 2 one (padded with an empty one: 2 reference sets).
    # mteval-v13a-sig divides the 3 + 4 + 2 = 9 reference words by the average number of
    # non-empty references per segment, (2 + 1) / 2 = 1.5: average length 6; hypothesis words 3
    # -> ratio 1/2 -> factor exp(-beta ln(2)^2) (dividing by the 2 reference sets gave 4.5, 2/3, 0.5).
    # Counts: a 2, b 2, x 1, total 9; "a b" 2. Matched: a, b (log2 9/2 each), x (log2 9), "a b"
    # (log2 2/2 = 0). Unigram term (2 log2 4.5 + log2 9) / 3; bigram 0 / 1.
    s = mteval_scores(["a b", "x"], [["a b c", "a b c d"], ["x y"]])
    penalty = math.exp(-NIST_BETA * math.log(2) ** 2)
    assert s["NIST"] == pytest.approx(penalty * (2 * math.log2(4.5) + math.log2(9)) / 3, abs=1e-12)
    # BLEU: 3/3 unigrams, 1/1 bigram, no 3- or 4-grams in the output (t_n = 0 counts as log 0);
    # closest lengths 3 and 2 (the padded empty reference is skipped): BP exp(1 - 5/3).
    assert s["BLEU"] == pytest.approx(math.exp(1 - 5 / 3), abs=1e-12)


def test_bleu_closest_length_skips_padded_empty_reference():
    # Segment 2 ("p q", 2 words) has one real reference of 5 words and one padded empty one;
    # mteval skips the empty one, so its closest length is 5 (0 was picked before). Ref length
    # 4 + 5 = 9 vs 6 output words -> BP exp(1 - 9/6); n-gram precisions 6/6, 4/4, 2/2, 1/1.
    s = mteval_scores(["a b c d", "p q"], [["a b c d", "a b c d e f"], ["p q r s t"]])
    assert s["BLEU"] == pytest.approx(math.exp(1 - 9 / 6), abs=1e-12)


def test_bleu_case_insensitive_and_empty_hypothesis():
    # Upper case does not matter (no -c); an empty output adds 0 words and 0 n-grams, and its
    # closest reference length is the shortest (3): ref length 4 + 3 = 7 vs 4 words.
    s = mteval_scores(["A B C D", ""], [["a b c d"], ["x y z"]])
    assert s["BLEU"] == pytest.approx(math.exp(1 - 7 / 4), abs=1e-12)
    assert mteval_scores([""], [["a"]]) == {"BLEU": 0.0, "NIST": 0.0}


def test_nist_prefix_zero_quirk():
    # mteval tests the (n-1)-gram prefix string for truth: prefix "0" is false in Perl, so the
    # bigram "0 x" gets info log2(total words / 1) = log2(2) = 1 instead of log2(1/1) = 0.
    s = mteval_scores(["0 x"], [["0 x"]])
    assert s["NIST"] == pytest.approx(1.0 + 1.0, abs=1e-12)
    s = mteval_scores(["1 x"], [["1 x"]])
    assert s["NIST"] == pytest.approx(1.0, abs=1e-12)


def test_rouge_l_and_cider_by_hand():
    # ROUGE-L: LCS("a b c d", "a c d e f") = 3, P = 3/4, R = 3/5, beta = 1.2.
    p, r, b2 = 3 / 4, 3 / 5, 1.2**2
    assert coco.rouge_l(["a b c d"], [["a c d e f"]]) == pytest.approx((1 + b2) * p * r / (r + b2 * p))
    # CIDEr-D over 2 sources: identical 2-word pair -> cosine 1 for 1- and 2-grams, 0 for 3/4-grams,
    # mean over n = 0.5, x10 = 5; the second source shares nothing -> 0. Mean 2.5.
    assert coco.cider(["a b", "c d"], [["a b"], ["e f"]]) == pytest.approx(2.5)


def test_ptb_tokenizer_and_meteor_properties(meteor):
    # Lower-cased -LRB-/-RRB- are not in pycocoevalcap's PUNCTUATIONS, and "!!!" is one token
    # that is not in it either: both stay, as in the official pipeline.
    toks = coco.ptb_tokenize(
        ["Alimentum, in the City-Centre (near Burger King).", "", "...", "!!!", "Café ÉTÉ"]
    )
    assert toks == ["alimentum in the city-centre -lrb- near burger king -rrb-", "", "", "!!!", "café été"]
    score, per_segment = meteor.score(["a cat sat", "", "dog"], [["a cat sat"], ["x y"], ["a cat sat"]])
    assert per_segment == [1.0, 0.0, 0.0]
    assert 0.0 < score < 1.0


def test_one_reference_versus_many_and_unicode(meteor):
    hyps = ["Café Zürich is near the river.", "The Eagle serves French food."]
    refs = [
        ["Café Zürich is near the river."],
        ["The Eagle serves French food.", "French food is served at The Eagle.", "Eagle: French food."],
    ]
    s = e2e.e2e_scores(hyps, refs, meteor=meteor)["scores"]
    # Both outputs equal one of their references: every clipped precision is 1, closest lengths
    # equal the output lengths, and each segment's ROUGE-L is 1.
    assert s["BLEU"] == pytest.approx(1.0)
    assert s["ROUGE_L"] == pytest.approx(1.0)
    assert s["METEOR"] == pytest.approx(1.0)


def test_java_missing_reports_unavailable(monkeypatch):
    monkeypatch.setattr(coco.shutil, "which", lambda name: None)
    result = e2e.e2e_scores(["a b c d"], [["a b c d e"]])
    assert set(result["scores"]) == {"BLEU", "NIST"}
    assert set(result["unavailable"]) == {"METEOR", "ROUGE_L", "CIDEr"}
    assert "apt-get install -y default-jre-headless" in result["unavailable"]["METEOR"]


def test_bad_inputs(tmp_path):
    refs = tmp_path / "refs.txt"
    refs.write_text("a b\nc d\n\ne f\n", encoding="utf-8")
    hyps = tmp_path / "hyps.txt"
    hyps.write_text("a b\ne f\nextra\n", encoding="utf-8")
    with pytest.raises(MetricInputError, match=r"hyps.txt: line 3: 3 hypotheses but only 2"):
        e2e.read_files(hyps, refs)
    hyps.write_bytes(b"ok\n\xff\xfe bad\n")
    with pytest.raises(MetricInputError, match=r"hyps.txt: line 2: not valid UTF-8"):
        e2e.read_files(hyps, refs)
    hyps.write_bytes(b"")
    with pytest.raises(MetricInputError, match=r"hyps.txt: file is empty"):
        e2e.read_files(hyps, refs)
    refs.write_text("a b\n\n\ne f\n", encoding="utf-8")
    hyps.write_text("x\ny\n", encoding="utf-8")
    with pytest.raises(MetricInputError, match=r"refs.txt: line 3: empty reference group"):
        e2e.read_files(hyps, refs)
    with pytest.raises(MetricInputError):
        e2e.e2e_scores(["a"], [[]], coco=False)
