"""DART metrics (GenerationEval semantics): hand-computed BLEU / TER cases and METEOR checks."""

from __future__ import annotations

import math
import shutil

import pytest

from tasks.metrics import coco, dart
from tasks.metrics._io import MetricInputError


@pytest.fixture(scope="module")
def java():
    if shutil.which("java") is None:
        pytest.fail(f"Java is required for the METEOR tests: {coco.JAVA_INSTALL_HINT}")


def test_lora_tokenize_and_prepare():
    assert dart.lora_tokenize("Hello, World's-end!  ok") == "Hello , World ' s - end ! ok"
    assert dart.lora_tokenize("Zürich café") == "Zürich café"  # \W is Unicode-aware
    hyps, refs = dart.prepare(["The Cat."], [["A cat.", "B", "C", "D", "E", "F", "G"]], num_refs=6)
    assert hyps == ["the cat ."]
    assert refs == [["a cat .", "b", "c", "d", "e", "f"]]  # 7th reference dropped
    _, refs = dart.prepare(["x"], [["First one", "Second"]], num_refs=4)
    assert refs == [["first one", "second", "first one", "first one"]]  # padded with the first


def test_multi_bleu_by_hand():
    # 4-word output, 5-word reference: precisions 1, BP exp(1 - 5/4); 0-100 scale.
    assert dart.multi_bleu_detok(["a b c d"], [["a b c d e"]]) == pytest.approx(100 * math.exp(-0.25))
    # multi-bleu-detok does not lower-case (the texts were lower-cased before).
    assert dart.multi_bleu_detok(["A b c d"], [["a b c d"]]) == 0.0  # 3/4, 2/3, 1/2, 0/1
    # Clipping: "the the the the" vs "the cat": 1-gram 1/4, no 2-gram match -> 0.
    assert dart.multi_bleu_detok(["the the the the"], [["the cat"]]) == 0.0
    # Two references, closest length chosen per segment: 6-word output, refs 5 and 8 words.
    # Matches: 1-grams 5/6, 2-grams 4/5, 3-grams 3/4, 4-grams 2/3 (against the 8-word ref);
    # closest length 5 (|6-5| < |6-8|) -> no brevity penalty.
    got = dart.multi_bleu_detok(["a b c d e z"], [["q r s t u", "a b c d e f g h"]])
    assert got == pytest.approx(100 * (5 / 6 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25)


def test_multi_bleu_blank_reference_is_closest_length():
    # A blank reference has length 0; for the 2-word output "p q" it is closer than the 5-word
    # one, so the reference length is 4 + 0 and no brevity penalty applies.
    assert dart.multi_bleu_detok(
        ["a b c d", "p q"], [["a b c d", "a b c d"], ["p q r s t", ""]]
    ) == pytest.approx(100.0)


def test_pyter_ter_by_hand():
    # Swap: one shift makes the sentences equal -> 1 edit / 2 words.
    assert dart.pyter_ter(["b", "a"], ["a", "b"]) == 0.5
    # The classic TER example: shift "THIS WEEK", substitute THE/SAUDIS, insert AMERICAN -> 4/13.
    hyp = "THIS WEEK THE SAUDIS denied information published in the new york times".split()
    ref = "SAUDI ARABIA denied THIS WEEK information published in the AMERICAN new york times".split()
    assert dart.pyter_ter(hyp, ref) == pytest.approx(4 / 13)
    assert dart.pyter_ter([], ["a", "b", "c"]) == 1.0  # three insertions / three words
    assert dart.pyter_ter(["x", "y", "z", "w"], ["a", "b"]) == 2.0  # can exceed 1
    with pytest.raises(ZeroDivisionError):
        dart.pyter_ter(["a"], [])


def test_sentence_ter_min_over_references_and_blank():
    # Second reference is exact -> 0; blank reference -> 1 (never the min here).
    assert dart.sentence_ter(["a b"], [["a c", "a b", ""]]) == [0.0]
    # Only blank / whitespace references -> 1 (pyter's division by zero is caught as 1).
    assert dart.sentence_ter(["a b"], [["", "   "]]) == [1.0]
    # 1 edit / 2 words vs 2 edits / 3 words: min 0.5; swap "b a" vs "a b": 1 shift / 2 words.
    assert dart.sentence_ter(["a b", "a b"], [["a c", "a x y"], ["b a"]]) == [0.5, 0.5]


def test_dart_scores_end_to_end(java):
    hyps = ["Alimentum is in the city centre.", "The Eagle is a pub.", ""]
    refs = [
        ["Alimentum is in the city centre."],
        ["The Eagle is a pub.", "A pub called The Eagle."],
        ["Zizzi serves fast food."],
    ]
    result = dart.dart_scores(hyps, refs)
    s = result["scores"]
    assert result["unavailable"] == {}
    # Outputs 1 and 2 equal a reference; output 3 is empty: TER (0 + 0 + 1) / 3.
    assert s["TER"] == pytest.approx(1 / 3)
    # BLEU: all n-grams of outputs 1-2 match; output 3 adds 0 words but its closest reference
    # length 5 ("zizzi serves fast food .") -> BP exp(1 - (7 + 6 + 5) / (7 + 6)).
    assert s["BLEU"] == pytest.approx(100 * math.exp(1 - 18 / 13))
    # METEOR: the two exact segments score 1 each, the empty one 0; the corpus value pools the
    # statistics, so it lies strictly between.
    assert 0.0 < s["METEOR"] < 1.0


def test_score_files_layout(tmp_path, java):
    hyp = tmp_path / "hypothesis"
    hyp.write_text("a cat sat on the mat\nthe dog barked\n", encoding="utf-8")
    paths = []
    for i, lines in enumerate([["a cat sat on the mat", "the dog barked"], ["a cat sat on the mat", ""]]):
        p = tmp_path / f"reference{i}"
        p.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(p)
    result = dart.score_files(hyp, paths)
    assert result["settings"]["num_refs"] == 2
    assert result["scores"] == {"BLEU": pytest.approx(100.0), "METEOR": pytest.approx(1.0), "TER": 0.0}
    # Without the trailing newline the same lines are read.
    hyp.write_text("a cat sat on the mat\nthe dog barked", encoding="utf-8")
    assert dart.score_files(hyp, paths, meteor=False)["scores"]["TER"] == 0.0


def test_java_missing_reports_meteor_unavailable(monkeypatch):
    monkeypatch.setattr(coco.shutil, "which", lambda name: None)
    result = dart.dart_scores(["a b"], [["a b"]])
    assert "METEOR" not in result["scores"]
    assert "apt-get install -y default-jre-headless" in result["unavailable"]["METEOR"]
    assert result["scores"]["TER"] == 0.0


def test_bad_inputs(tmp_path):
    hyp = tmp_path / "hyp"
    hyp.write_text("a\nb\n", encoding="utf-8")
    ref = tmp_path / "reference0"
    ref.write_text("a\n", encoding="utf-8")
    with pytest.raises(MetricInputError, match=r"reference0: 1 references but 2 hypotheses"):
        dart.score_files(hyp, [ref], meteor=False)
    ref.write_bytes("a\n\xe9\n".encode("latin-1"))
    with pytest.raises(MetricInputError, match=r"reference0: line 2: not valid UTF-8"):
        dart.score_files(hyp, [ref], meteor=False)
    with pytest.raises(MetricInputError):
        dart.dart_scores(["a"], [[]], meteor=False)


# ---------------------------------------------------------------- eval.py's nltk tokenisation


def test_eval_tokenize_quotes_and_contractions():
    # gpt2_decode.py --tokenize --lower first: every non-word character stands alone.
    lora = dart.lora_tokenize("He said \"it's fine\". Don't (cannot) wanna go!").lower()
    assert lora == "he said \" it ' s fine \" . don ' t ( cannot ) wanna go !"
    # nltk: each '"' follows a space, so opening and closing quotes both become ``; the split
    # apostrophes stay "'"; "cannot" / "wanna" are split by nltk's contraction rules.
    assert dart.eval_tokenize(lora) == "he said `` it ' s fine `` . don ' t ( can not ) wan na go !"
    # Untokenised text (the --no-preprocess path): nltk's own contraction and quote rules.
    assert dart.eval_tokenize('He said "it\'s fine."') == "He said `` it 's fine . ''"


@pytest.fixture(scope="module")
def dart_dev_texts():
    import json
    from pathlib import Path

    path = (
        Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dart" / "dart-v1.1.1-full-dev.json"
    )
    texts = [
        a["text"] for entry in json.loads(path.read_text()) for a in entry["annotations"] if a.get("text")
    ]
    # The texts where sentence splitting could matter: quotes, apostrophes, several sentences.
    quoted = [t for t in texts if '"' in t or "'" in t]
    multi = [t for t in texts if t.count(". ") + t.count("? ") + t.count("! ") >= 1 and t not in quoted]
    return quoted[:150] + multi[:150]


def test_preserve_line_equals_any_sentence_split_on_lora_text(dart_dev_texts):
    # eval.py calls nltk.word_tokenize(text), which first splits sentences with Punkt (not
    # available offline). On LoRA-tokenised text the result does not depend on where the
    # sentences are split: splitting after every sentence-end character (the finest split Punkt
    # can make), with a following closing quote/bracket moved to the previous sentence (Punkt's
    # boundary realignment) or not, and an untrained Punkt model all give the preserve_line tokens.
    import re

    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    word, punkt = NLTKWordTokenizer(), PunktSentenceTokenizer()
    splitters = [
        lambda s: re.split(r"(?<=[.?!]) ", s),
        lambda s: re.split(r"(?<=[.?!] [\"')\]}]) |(?<=[.?!]) (?![\"')\]}])", s),
        punkt.tokenize,
    ]
    assert len(dart_dev_texts) == 300
    for text in dart_dev_texts:
        lora = dart.lora_tokenize(text).lower()
        whole = dart.eval_tokenize(lora).split()
        for split in splitters:
            assert [t for sent in split(lora) for t in word.tokenize(sent)] == whole, lora


def test_preserve_line_differs_on_untokenised_text():
    # Documented limit: without the LoRA preprocessing a period inside the line stays on its word.
    from nltk.tokenize import NLTKWordTokenizer

    text = "The Eagle is a pub. It is cheap."
    assert dart.eval_tokenize(text).split()[4] == "pub."
    sentences = ["The Eagle is a pub.", "It is cheap."]  # what Punkt's English model returns
    assert [t for s in sentences for t in NLTKWordTokenizer().tokenize(s)][4] == "pub"


def test_meteor_and_ter_use_nltk_tokens():
    # TER on eval.py's tokens: "cannot" is two nltk tokens ("can not"), so the output "can not"
    # equals the reference "cannot" for TER (0) although the LoRA tokens differ; and the quotes
    # of the output ('"' -> ``) match the reference's.
    s = dart.dart_scores(["It can not", 'A "b" c'], [["It cannot"], ['A " b " c']], meteor=False)["scores"]
    assert s["TER"] == 0.0
