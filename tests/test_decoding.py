"""Beam search (tasks/decoding.py) against exhaustive search and a plain per-prompt beam search.

The model is a random GPT-2 with a 4-token vocabulary (token 3 = stop) and peaked distributions
(initializer_range 0.5), so that sequences differ clearly in probability. References here run
the model on full sequences without a cache, one prompt at a time, in plain Python.
"""

from __future__ import annotations

import copy
import itertools
import math
from types import MethodType

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from tasks.decoding import BeamConfig, banned_ngram_mask, beam_search, beam_search_batch

V, STOP, PAD = 4, 3, 0
PROMPTS = [[1, 2, 0, 1], [2], [0, 0, 1, 2, 2, 1, 0]]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=V,
        n_embd=16,
        n_layer=2,
        n_head=2,
        n_positions=32,
        initializer_range=0.5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=STOP,
        eos_token_id=STOP,
    )
    return GPT2LMHeadModel(config).eval()


def banned_tokens(generated: list[int], n: int) -> set[int]:
    """Tokens completing an n-gram that already occurs in `generated` (fairseq rule)."""
    if n <= 0 or len(generated) < n:
        return set()
    prefix = tuple(generated[len(generated) - n + 1 :])
    return {
        generated[j + n - 1]
        for j in range(len(generated) - n + 1)
        if tuple(generated[j : j + n - 1]) == prefix
    }


_MEMO: dict = {}


@torch.no_grad()
def next_logprobs(model, prompt: list[int], generated: list[int], n: int) -> list[float]:
    """log p(next token | prompt + generated), n-gram-banned tokens removed and renormalised."""
    key = (id(model), tuple(prompt), tuple(generated), n)
    if key not in _MEMO:
        logits = model(torch.tensor([prompt + generated])).logits[0, -1].double()
        for tok in banned_tokens(generated, n):
            logits[tok] = -math.inf
        _MEMO[key] = torch.log_softmax(logits, -1).tolist()
    return _MEMO[key]


def exhaustive_best(model, prompt, T, lp, n):
    """Best of every sequence that ends at its first stop token (or has length T)."""
    best = (None, -math.inf)
    for length in range(1, T + 1):
        for seq in itertools.product(range(V), repeat=length):
            if STOP in seq[:-1] or (length < T and seq[-1] != STOP):
                continue
            total = sum(next_logprobs(model, prompt, list(seq[:j]), n)[seq[j]] for j in range(length))
            score = total / length**lp
            if score > best[1]:
                best = (list(seq), score)
    return best


def plain_beam(model, prompt, K, T, lp, n):
    """LoRA gpt2_beam.py's loop for one prompt, written with lists (finished beams hold a slot)."""
    beams, best = [([], 0.0)], (None, -math.inf)
    for t in range(T):
        cands = []
        for toks, s in beams:
            for tok, lq in enumerate(next_logprobs(model, prompt, toks, n)):
                if lq > -math.inf:
                    cands.append((s + lq, toks + [tok]))
        cands = sorted(cands, key=lambda c: -c[0])[:K]
        beams = []
        for s, toks in cands:
            if toks[-1] == STOP:
                if s / (t + 1) ** lp > best[1]:
                    best = (toks, s / (t + 1) ** lp)
            else:
                beams.append((toks, s))
    for toks, s in beams:
        if s / T**lp > best[1]:
            best = (toks, s / T**lp)
    return best


def test_banned_ngram_mask_hand_case():
    history = torch.tensor([[1, 2, 3, 1, 2], [1, 2, 3, 1, 3]])
    mask = banned_ngram_mask(history, 3, 5)
    assert mask[0].tolist() == [False, False, False, True, False]  # "1 2" was followed by 3
    assert not mask[1].any()  # prefix "1 3" never occurred before
    assert banned_ngram_mask(history[:, :2], 3, 5) is None  # no complete 3-gram yet
    assert banned_ngram_mask(history[:, :4], 1, 5)[0].tolist() == [False, True, True, True, False]
    for n in (2, 3, 4):
        for row in history.tolist():
            for t in range(len(row) + 1):
                got = banned_ngram_mask(torch.tensor([row[:t]]), n, 5)
                got = set() if got is None else set(got[0].nonzero().view(-1).tolist())
                assert got == banned_tokens(row[:t], n)


@pytest.mark.parametrize("lp,n", [(0.8, 2), (1.0, 0), (0.0, 3)])
def test_wide_beam_equals_exhaustive_search(model, lp, n):
    T = 4
    # 3 non-stop tokens: at most 3^t live beams, 4·3^t candidates: K = 108 never prunes
    cfg = BeamConfig(
        num_beams=108, max_new_tokens=T, length_penalty=lp, no_repeat_ngram_size=n, stop_token_ids=(STOP,)
    )
    hyps = beam_search_batch(model, PROMPTS, cfg, PAD)
    for prompt, hyp in zip(PROMPTS, hyps):
        tokens, score = exhaustive_best(model, prompt, T, lp, n)
        assert hyp.tokens == tokens
        assert hyp.score == pytest.approx(score, abs=1e-5)


@pytest.mark.parametrize("K", [1, 2, 3])
def test_narrow_beam_equals_plain_loop(model, K):
    T, lp, n = 6, 0.9, 2
    cfg = BeamConfig(
        num_beams=K, max_new_tokens=T, length_penalty=lp, no_repeat_ngram_size=n, stop_token_ids=(STOP,)
    )
    hyps = beam_search(model, PROMPTS, cfg, PAD, batch_size=2)  # batches mix prompt lengths
    for prompt, hyp in zip(PROMPTS, hyps):
        tokens, score = plain_beam(model, prompt, K, T, lp, n)
        assert hyp.tokens == tokens
        assert hyp.score == pytest.approx(score, abs=1e-5)


def test_early_exit_keeps_the_result_and_saves_steps(model):
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        results = {}
        for every in (1, 1000):
            calls.clear()
            cfg = BeamConfig(
                num_beams=3,
                max_new_tokens=20,
                length_penalty=0.5,
                no_repeat_ngram_size=0,
                stop_token_ids=(STOP,),
                check_every=every,
            )
            results[every] = (beam_search_batch(model, PROMPTS, cfg, PAD), len(calls))
    finally:
        handle.remove()
    (early, n_early), (full, n_full) = results[1], results[1000]
    assert [h.tokens for h in early] == [h.tokens for h in full]
    assert [h.score for h in early] == pytest.approx([h.score for h in full], abs=1e-6)
    assert n_full == 20 and n_early < n_full


def test_score_is_sum_of_logprobs_over_generated_length(model):
    lp, n = 0.7, 2
    cfg = BeamConfig(
        num_beams=4, max_new_tokens=5, length_penalty=lp, no_repeat_ngram_size=n, stop_token_ids=(STOP,)
    )
    for prompt, hyp in zip(PROMPTS, beam_search_batch(model, PROMPTS, cfg, PAD)):
        assert STOP not in hyp.tokens[:-1]
        assert len(hyp.tokens) == 5 or hyp.tokens[-1] == STOP
        total = sum(next_logprobs(model, prompt, hyp.tokens[:j], n)[tok] for j, tok in enumerate(hyp.tokens))
        assert hyp.score == pytest.approx(total / len(hyp.tokens) ** lp, abs=1e-5)


def _logit_dtypes(model, **kw) -> tuple[set, list]:
    """The dtypes of the LM head's outputs while beam search runs, and its hypotheses."""
    seen = set()
    handle = model.lm_head.register_forward_hook(lambda _m, _a, out: seen.add(out.dtype))
    try:
        cfg = BeamConfig(
            num_beams=3, max_new_tokens=5, length_penalty=1.0, no_repeat_ngram_size=0, stop_token_ids=(STOP,)
        )
        hyps = beam_search_batch(model, PROMPTS, cfg, PAD, **kw)
    finally:
        handle.remove()
    return seen, [h.tokens for h in hyps]


def test_decoding_runs_in_fp32_under_a_bf16_autocast(model):
    """LoRA decodes with the fp32 model (gpt2_beam.py, no autocast): beam search turns autocast off,
    the caller's and the one accelerate's mixed precision wraps around model.forward."""
    plain = _logit_dtypes(model)
    assert plain[0] == {torch.float32}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _logit_dtypes(model) == plain  # same dtype, same hypotheses
        assert _logit_dtypes(model, fp32=False)[0] == {torch.bfloat16}  # the switch: under the autocast
    wrapped = copy.deepcopy(model)  # as Accelerator(mixed_precision="bf16").prepare leaves it
    wrapped._original_forward = wrapped.forward
    wrapped.forward = MethodType(torch.autocast("cpu", dtype=torch.bfloat16)(type(wrapped).forward), wrapped)
    assert _logit_dtypes(wrapped, fp32=False)[0] == {torch.bfloat16}
    assert _logit_dtypes(wrapped) == plain
