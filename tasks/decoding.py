"""Batched beam search with a KV cache, with the semantics of microsoft/LoRA `gpt2_beam.py`.

For each source (prompt), K beams are kept. At step t (0-based; every beam then holds t
generated tokens h_1..h_t):

    z = logits of the next token (fp32); tokens that would repeat an n-gram of the *generated*
        tokens get z = -inf (fairseq / LoRA `_calc_banned_ngram_tokens`; the prompt is not used)
    log p = log_softmax(z)                      # renormalised after the ban, as LoRA does
    candidates: s(beam) + log p(token) over K·V; at t = 0 only beam 0 (all beams are equal)
    the K best candidates (sorted) become the beams; s = their summed log-probabilities
    a candidate whose token is a stop token is finished: score = s / (t + 1)^penalty, where
        t + 1 counts the generated tokens including the stop token; it replaces the source's best
        hypothesis if strictly higher, and its beam gets s = -inf (it still holds a slot this step)
after the last step (t = max_new_tokens - 1) every live beam is a candidate with length T.

Precision: `fp32=True` (the default) runs the model with autocast off, as microsoft/LoRA decodes
(gpt2_beam.py: the fp32 model, no autocast), also when the caller holds an autocast context or the
model's forward is wrapped in one (accelerate's mixed-precision `prepare`, which `unwrap_model`
keeps); `fp32=False` runs it under whatever autocast is active (bf16 on CUDA: some outputs change).

The source's output is its best hypothesis. Differences from HF `generate(num_beams=K)`: HF
keeps 2K candidates so finished ones do not take beam slots, applies the n-gram ban after the
log-softmax (no renormalisation) and over the prompt too, and stops by its `early_stopping` rule.

Early exit (no change of the result): a live beam with sum s < 0 can at best reach
s / T^penalty (penalty ≥ 0: log-probabilities only lower s and the longest length divides most),
so a source is done when that bound of every live beam is ≤ its best score. This is checked
every `check_every` steps, the only host synchronisation inside the loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class BeamConfig:
    num_beams: int = 10
    max_new_tokens: int = 64
    length_penalty: float = 1.0  # finished score = Σ log p / (generated length)^penalty
    no_repeat_ngram_size: int = 4  # 0: off
    stop_token_ids: tuple[int, ...] = ()
    check_every: int = 4  # steps between early-exit checks (host syncs)

    def __post_init__(self):
        if self.num_beams < 1 or self.max_new_tokens < 1:
            raise ValueError("num_beams and max_new_tokens must be >= 1")
        if self.no_repeat_ngram_size < 0:
            raise ValueError("no_repeat_ngram_size must be >= 0")


@dataclass
class Hypothesis:
    tokens: list[int]  # generated tokens, the stop token included when there is one
    score: float  # Σ log p / len(tokens)^penalty


def banned_ngram_mask(history: torch.Tensor, n: int, vocab_size: int) -> torch.Tensor | None:
    """(N, V) bool: tokens that would complete an n-gram already in `history` (N, t) (fairseq rule).

    The last n-1 tokens are the prefix; every earlier position j where history[j : j+n-1] equals
    it bans history[j+n-1]. None when nothing can be banned yet (no complete n-gram: t < n).
    """
    rows, t = history.shape
    if n <= 0 or t < n:
        return None
    counts = torch.zeros(rows, vocab_size, device=history.device)
    if n == 1:
        return counts.scatter_add_(1, history, torch.ones_like(history, dtype=counts.dtype)) > 0
    prefix = history[:, t - n + 1 :]  # (N, n-1)
    windows = history[:, : t - 1].unfold(1, n - 1, 1)  # (N, t-n+1, n-1): starts j = 0..t-n
    match = (windows == prefix[:, None, :]).all(-1)  # (N, t-n+1)
    following = history[:, n - 1 : t]  # (N, t-n+1): the token after each window
    return counts.scatter_add_(1, following, match.to(counts.dtype)) > 0


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty")
        ids[i, length - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask[i, length - len(p) :] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def beam_search_batch(
    model: nn.Module, prompts: Sequence[Sequence[int]], cfg: BeamConfig, pad_id: int, fp32: bool = True
) -> list[Hypothesis]:
    """Beam search for a batch of prompts at once (left-padded, one KV cache of B·K rows).

    fp32: with autocast off on the model's device type. Accelerate's mixed precision replaces
    `model.forward` by one that enters autocast itself, inside any context of ours; it keeps the
    forward it wrapped as `model._original_forward`, which is then called instead (that skips only
    hooks on the top module; adapters hook submodules).
    """
    device = next(model.parameters()).device
    if not fp32:
        return _search(model, device, prompts, cfg, pad_id)
    with torch.autocast(device.type, enabled=False):
        return _search(model.__dict__.get("_original_forward", model), device, prompts, cfg, pad_id)


def _search(call, device, prompts: Sequence[Sequence[int]], cfg: BeamConfig, pad_id: int) -> list[Hypothesis]:
    """The search itself; `call(**inputs)` runs the model."""
    B, K, T = len(prompts), cfg.num_beams, cfg.max_new_tokens
    ids, mask = _left_pad(prompts, pad_id, device)
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    out = call(input_ids=ids, attention_mask=mask, position_ids=position, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    cache.batch_repeat_interleave(K)  # (B·K, ...): beam k of source b is row b·K + k
    logits = out.logits[:, -1].float().repeat_interleave(K, 0)  # (B·K, V)
    V = logits.shape[-1]
    mask = mask.repeat_interleave(K, 0)
    next_pos = mask.sum(-1, keepdim=True)  # (B·K, 1) position id of the next token
    rows = torch.arange(B, device=device)
    offset = (rows * K)[:, None]  # (B, 1)
    stop = torch.tensor(cfg.stop_token_ids, dtype=torch.long, device=device)

    beam_scores = torch.full((B, K), float("-inf"), device=device)
    beam_scores[:, 0] = 0.0  # t = 0: expand beam 0 only
    history = torch.full((B * K, T), pad_id, dtype=torch.long, device=device)
    best_score = torch.full((B,), float("-inf"), device=device)
    best_tokens = torch.full((B, T), pad_id, dtype=torch.long, device=device)
    best_len = torch.zeros(B, dtype=torch.long, device=device)
    lp = cfg.length_penalty

    def offer(scores: torch.Tensor, finished: torch.Tensor, length: int) -> None:
        """Replaces best hypotheses by finished candidates (B, K) that score strictly higher."""
        nonlocal best_score, best_tokens, best_len
        normed = torch.where(finished, scores / length**lp, float("-inf"))
        step_best, arg = normed.max(1)  # ties: the first (highest raw score) as LoRA's loop
        better = step_best > best_score
        chosen = history.view(B, K, T)[rows, arg]  # (B, T)
        best_score = torch.where(better, step_best, best_score)
        best_tokens = torch.where(better[:, None], chosen, best_tokens)
        best_len = torch.where(better, torch.full_like(best_len, length), best_len)

    completed, tokens = True, None  # tokens: (B·K, 1) chosen at the previous step
    for t in range(T):
        if t > 0:
            out = call(
                input_ids=tokens,
                attention_mask=mask,
                position_ids=next_pos,
                past_key_values=cache,
                use_cache=True,
            )
            cache = out.past_key_values
            logits = out.logits[:, -1].float()
            next_pos = next_pos + 1
        banned = banned_ngram_mask(history[:, :t], cfg.no_repeat_ngram_size, V)
        if banned is not None:
            logits = logits.masked_fill(banned, float("-inf"))
        logp = F.log_softmax(logits, dim=-1)  # (B·K, V)
        cand = (beam_scores.reshape(B * K, 1) + logp).view(B, K * V)
        top, idx = cand.topk(K, dim=1)  # (B, K), sorted
        token = idx % V
        src = (idx // V + offset).view(-1)  # (B·K,) rows the new beams continue
        history = history[src]
        history[:, t] = token.view(-1)
        cache.reorder_cache(src)
        mask = torch.cat([mask[src], mask.new_ones(B * K, 1)], dim=1)
        next_pos = next_pos[src]
        finished = torch.isin(token, stop) & torch.isfinite(top)
        offer(top, finished, t + 1)
        beam_scores = top.masked_fill(finished, float("-inf"))
        tokens = token.view(B * K, 1)
        if t + 1 < T and (t + 1) % cfg.check_every == 0:
            bound = beam_scores.max(1).values / max((t + 2) ** lp, T**lp)
            if bool((bound <= best_score).all()):
                completed = False
                break
    if completed:  # every live beam is a candidate at the maximum length
        offer(beam_scores, torch.isfinite(beam_scores), T)

    best_tokens, best_len, best_score = best_tokens.cpu(), best_len.cpu(), best_score.cpu()
    return [Hypothesis(best_tokens[b, : best_len[b]].tolist(), float(best_score[b])) for b in range(B)]


def beam_search(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    cfg: BeamConfig,
    pad_id: int,
    batch_size: int = 16,
    fp32: bool = True,
) -> list[Hypothesis]:
    """`beam_search_batch` over `prompts` in batches of similar length; results in input order."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    result: list[Hypothesis | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        for i, hyp in zip(chunk, beam_search_batch(model, [prompts[i] for i in chunk], cfg, pad_id, fp32)):
            result[i] = hyp
    return result
