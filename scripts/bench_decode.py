"""Decoding benchmark: our batched beam search (tasks/decoding.py) vs HF `generate`, same settings.

Prompts are the unique E2E test MRs (microsoft/LoRA format, 630) encoded with the real GPT-2 BPE
plus the <|endoftext|> separator, as the E2E task feeds them. The model has GPT-2 medium's shapes
(24 layers, 1024 wide, 16 heads, vocabulary 50257) with random weights, in bf16 on CUDA. Random
weights rarely choose a stop token, and the two searches stop differently (ours: exact bound;
HF: its early_stopping rule), so by default no stop token is set and both run all
`--max-new-tokens` steps: the worst case, the same work for both. `--stop` uses 50256 / 628.

    python scripts/bench_decode.py                 # CUDA: full E2E test set, GPT-2 medium shapes
    python scripts/bench_decode.py --tiny          # CPU default: 8 sources, a 2-layer model

Prints one JSON object (and writes it to --out if given).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.decoding import BeamConfig, beam_search  # noqa: E402
from tasks.e2e import read_lora_file  # noqa: E402
from tasks.nlg import group_by_source  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
MEDIUM = {"n_embd": 1024, "n_layer": 24, "n_head": 16}
TINY = {"n_embd": 64, "n_layer": 2, "n_head": 2}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="2-layer 64-wide model, 8 sources (default on CPU)")
    p.add_argument(
        "--sources", type=int, default=None, help="number of unique MRs (default: all, 8 with --tiny)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="sources per beam-search batch")
    p.add_argument("--num-beams", type=int, default=10)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--length-penalty", type=float, default=0.9)
    p.add_argument("--no-repeat-ngram-size", type=int, default=4)
    p.add_argument(
        "--stop", action="store_true", help="stop tokens 50256 and 628 (default: none, full length)"
    )
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--test-file", default=str(SHARED / "e2e" / "lora_format" / "test.txt"))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    args.tiny = args.tiny or args.device == "cpu"
    return args


def build(args):
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(SHARED / "tokenizers" / "gpt2" / "tokenizer.json"))
    shapes = TINY if args.tiny else MEDIUM
    config = GPT2Config(vocab_size=50257, n_positions=1024, **shapes, pad_token_id=50256)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model = GPT2LMHeadModel(config).to(args.device, dtype).eval()
    sources = [ctx for ctx, _ in group_by_source(read_lora_file(Path(args.test_file)))]
    n = args.sources or (8 if args.tiny else len(sources))
    prompts = [tok.encode(s) + [50256] for s in sources[:n]]
    return model, prompts, shapes, dtype


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def ours(model, prompts, cfg, args):
    sync(args.device)
    tic = time.perf_counter()
    hyps = beam_search(model, prompts, cfg, pad_id=50256, batch_size=args.batch_size)
    sync(args.device)
    return time.perf_counter() - tic, [h.tokens for h in hyps]


def hf(model, prompts, cfg, args):
    """HF generate over the same length-sorted batches (left padding)."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out = [None] * len(prompts)
    sync(args.device)
    tic = time.perf_counter()
    for start in range(0, len(order), args.batch_size):
        chunk = order[start : start + args.batch_size]
        width = max(len(prompts[i]) for i in chunk)
        ids = torch.full((len(chunk), width), 50256, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(chunk):
            ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]) :] = 1
        gen = model.generate(
            input_ids=ids.to(args.device),
            attention_mask=mask.to(args.device),
            num_beams=cfg.num_beams,
            max_new_tokens=cfg.max_new_tokens,
            length_penalty=cfg.length_penalty,
            no_repeat_ngram_size=cfg.no_repeat_ngram_size,
            eos_token_id=list(cfg.stop_token_ids) or None,
            pad_token_id=50256,
            do_sample=False,
            early_stopping=False,
        )
        for row, i in enumerate(chunk):
            out[i] = gen[row, width:].tolist()
    sync(args.device)
    return time.perf_counter() - tic, out


def main(argv=None) -> dict:
    args = parse_args(argv)
    model, prompts, shapes, dtype = build(args)
    stops = (50256, 628) if args.stop else ()
    cfg = BeamConfig(
        args.num_beams, args.max_new_tokens, args.length_penalty, args.no_repeat_ngram_size, stops
    )
    warm = BeamConfig(args.num_beams, 4, args.length_penalty, args.no_repeat_ngram_size, stops)
    with torch.inference_mode():
        beam_search(
            model, prompts[: min(4, len(prompts))], warm, pad_id=50256
        )  # warm-up (kernels, allocator)
        t_ours, h_ours = ours(model, prompts, cfg, args)
        result = {
            "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
            "dtype": str(dtype).removeprefix("torch."),
            "model": {"vocab": 50257, **shapes, "weights": "random"},
            "sources": len(prompts),
            "batch_size": args.batch_size,
            "settings": {
                "num_beams": cfg.num_beams,
                "max_new_tokens": cfg.max_new_tokens,
                "length_penalty": cfg.length_penalty,
                "no_repeat_ngram_size": cfg.no_repeat_ngram_size,
                "stop_token_ids": list(stops),
            },
            "ours_s": t_ours,
            "ours_sources_per_s": len(prompts) / t_ours,
            "mean_new_tokens_ours": sum(map(len, h_ours)) / len(h_ours),
        }
        if not args.skip_hf:
            t_hf, h_hf = hf(model, prompts, cfg, args)
            result.update(
                hf_generate_s=t_hf,
                speedup_vs_hf=t_hf / t_ours,
                same_output_as_hf=sum(a == b for a, b in zip(h_ours, h_hf)) / len(prompts),
            )
    if args.device.startswith("cuda"):
        result["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
