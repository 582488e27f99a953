"""LoDA Appendix A.1 data: how much of W_proj's energy a low-rank or a sparse approximation keeps.

For one block's fused projection W_proj = [Wq, Wk, Wv] (GPT-2: `h.<block>.attn.c_attn.weight`,
d × 3d), from the weights alone (no task, no training):

    svd:        E(R) = Σ_{i≤R} σ_i² / Σ_i σ_i²                 for R = 1 .. min(d_in, d_out)
    magnitude:  E(f) = Σ_{k largest |w|} w² / Σ w²,  k = round(f · numel)   for f on a grid

The same rules R-/S-LoDA record per block (adapters/loda.py: `approximate`). Writes JSON that a
figure script can plot, with the paper's points (R = 300, 400, 500; f = 0.4, 0.5, 0.6) picked out.

    python scripts/energy_curves.py --checkpoint /path/to/gpt2-medium --out energy.json
    python scripts/energy_curves.py --model tiny_gpt2 --out energy_tiny.json   # random weights (CI)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

PAPER_RANKS = (300, 400, 500)
PAPER_KEEPS = (0.4, 0.5, 0.6)


def svd_energy(w: torch.Tensor) -> list[float]:
    """E(R) for R = 1 .. min(shape), in float64."""
    s2 = torch.linalg.svdvals(w.double()) ** 2
    return (s2.cumsum(0) / s2.sum()).tolist()


def magnitude_energy(w: torch.Tensor, fractions: list[float]) -> list[float]:
    """E(f): energy of the round(f·numel) largest-magnitude entries, in float64."""
    sq = (w.double().flatten() ** 2).sort(descending=True).values
    cum = torch.cat([torch.zeros(1, dtype=sq.dtype), sq.cumsum(0)])
    return [float(cum[round(f * sq.numel())] / cum[-1]) for f in fractions]


def curves(w: torch.Tensor, fractions: list[float] | None = None) -> dict:
    fractions = fractions or [round(i / 100, 2) for i in range(1, 101)]
    svd = svd_energy(w)
    mag = magnitude_energy(w, fractions)
    full = len(svd)
    return {
        "shape": list(w.shape),
        "svd": {"rank": list(range(1, full + 1)), "energy": svd},
        "magnitude": {"fraction": fractions, "energy": mag},
        "paper_points": {
            "svd": {str(r): svd[r - 1] for r in PAPER_RANKS if r <= full},
            "magnitude": dict(zip(map(str, PAPER_KEEPS), magnitude_energy(w, list(PAPER_KEEPS)))),
        },
        "rules": {
            "svd": "sum_{i<=R} s_i^2 / sum s_i^2 (float64)",
            "magnitude": "sum of the round(f*numel) largest w^2 / sum w^2 (float64)",
        },
    }


def _checkpoint_tensors(path: Path) -> dict[str, torch.Tensor]:
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                return _checkpoint_tensors(path / name)
        raise SystemExit(
            f"error: {path} has no model.safetensors or pytorch_model.bin; point --checkpoint at one"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    raise SystemExit(f"error: checkpoint {path} does not exist; give a directory or a weights file")


def _model_tensors(name: str, overrides: list[str]) -> dict[str, torch.Tensor]:
    """Weights of a harness model config (`conf/model/<name>.yaml`), built as a run would build it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from models import BUILDERS
    from runners.config import CONF, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={name}", *overrides])
    OmegaConf.resolve(cfg)
    builder = BUILDERS[cfg.model.builder]
    tok = builder.build_tokenizer(cfg.model, [])
    return builder.build_model(cfg.model, None, tok).state_dict()


def pick(tensors: dict[str, torch.Tensor], pattern: str) -> tuple[str, torch.Tensor]:
    hits = [k for k in tensors if re.fullmatch(pattern, k)]
    if len(hits) != 1:
        sample = ", ".join(list(tensors)[:6])
        raise SystemExit(
            f"error: --key {pattern!r} matches {len(hits)} tensors (need 1); names look like: {sample}"
        )
    return hits[0], tensors[hits[0]]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="HF checkpoint dir or a .safetensors / .bin file")
    src.add_argument(
        "--model", help="a conf/model name (e.g. tiny_gpt2: random weights from model.init_seed)"
    )
    p.add_argument("--override", action="append", default=[], help="Hydra override for --model, repeatable")
    p.add_argument("--block", type=int, default=0, help="transformer block (the paper: the first, 0)")
    p.add_argument(
        "--key", help=r"regex of the weight name; default: (.*\.)?h\.<block>\.attn\.c_attn\.weight"
    )
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = p.parse_args(argv)

    tensors = (
        _checkpoint_tensors(args.checkpoint) if args.checkpoint else _model_tensors(args.model, args.override)
    )
    key, w = pick(tensors, args.key or rf"(.*\.)?h\.{args.block}\.attn\.c_attn\.weight")
    out = {
        "source": str(args.checkpoint or f"model={args.model} {' '.join(args.override)}".strip()),
        "tensor": key,
    }
    out.update(curves(w))
    from core import atomic_write

    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, indent=1)
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(text))
    pts = out["paper_points"]
    print(f"{key} {tuple(w.shape)}: svd {pts['svd']} | magnitude {pts['magnitude']} -> {args.out}")
    return out


if __name__ == "__main__":
    main()
