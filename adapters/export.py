"""Inference forms of a trained low-rank method: a PEFT-format LoRA adapter, and merged weights.

PEFT export (`peft_lora`): every module of `method.lowrank` that is a plain LoRA at inference,
y = W x + s · B A x, is written as PEFT LoRA with r = rank and lora_alpha = s · r (per-module
`rank_pattern` / `alpha_pattern` where they differ, e.g. SoRA after rank removal), so
`PeftModel.from_pretrained(base, <dir>/peft)` rebuilds the same function. Modules exposing
`peft_equivalent()` (e.g. a q/v-only wrapper inside a fused projection) are exported through the
single LoRA it returns. The task head is saved too (`modules_to_save`, the head's module names);
keys follow PEFT's own `save_pretrained` layout (`base_model.model.<name>.lora_A.weight`, head
tensors under `base_model.model.<param>`).

Merge (`merge`): W ← W + ΔW for every low-rank module (ΔWᵀ for GPT-2's Conv1D, whose weight is
d_in × d_out), and the wrapper is replaced by the base layer: one dense model, same outputs.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import save_file
from torch import nn

from adapters.base import Method
from adapters.lowrank import Conv1D, inject
from core import ConfigError, atomic_write

PEFT_DIR = "peft"


def head_modules(method: Method) -> list[str]:
    """Module names owning the head's parameters (PEFT's `modules_to_save`)."""
    return sorted({n.rpartition(".")[0] for n in method.head if n.rpartition(".")[0]})


def _units(method: Method) -> dict[str, nn.Module]:
    """What PEFT sees as one LoRA each: a fused wrapper (adapters/placement.py) once, whose branches
    are the `lowrank` entries `<module>.<block>`, else every low-rank module itself."""
    units = {}
    for name, module in method.lowrank.items():
        parent_name = name.rpartition(".")[0]
        parent = method.model.get_submodule(parent_name) if parent_name else None
        if parent is not None and hasattr(parent, "peft_equivalent"):
            units[parent_name] = parent
        else:
            units[name] = module
    return units


def _plain_lora(name: str, module) -> SimpleNamespace:
    """lora_A, lora_B, scaling and whether the base is a Conv1D (PEFT's fan_in_fan_out)."""
    if getattr(module, "sora_gate", None) is not None:
        raise ConfigError(f"{name} still has a SoRA gate; call method.finish() (rank removal) before export")
    conv = bool(Conv1D) and isinstance(getattr(module, "base", None), Conv1D)
    if hasattr(module, "peft_equivalent"):
        module = module.peft_equivalent()
    if not all(hasattr(module, k) for k in ("lora_A", "lora_B", "scaling")):
        raise ConfigError(f"{name} ({type(module).__name__}) is not a plain LoRA; it has no PEFT LoRA form")
    return SimpleNamespace(lora_A=module.lora_A, lora_B=module.lora_B, scaling=module.scaling, conv=conv)


def peft_lora(method: Method, folder: Path, dropout: float = 0.0) -> Path:
    """Writes `<folder>/peft/{adapter_config.json, adapter_model.safetensors}`; returns that folder.

    The config names only the fields that matter (PEFT fills the rest with `LoraConfig` defaults on
    load), so exporting needs no `import peft` (seconds per run); a test loads it with PEFT.
    """
    modules = {n: _plain_lora(n, m) for n, m in _units(method).items()}
    if not modules:
        raise ConfigError("nothing to export: the method has no low-rank modules (every rank removed?)")
    ranks = {n: int(m.lora_A.shape[0]) for n, m in modules.items()}
    alphas = {n: float(m.scaling) * ranks[n] for n, m in modules.items()}
    r = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    conv = {m.conv for m in modules.values()}
    if len(conv) > 1:
        raise ConfigError("PEFT needs one fan_in_fan_out per adapter: do not mix Linear and Conv1D targets")
    config = {
        "peft_type": "LORA",
        "peft_version": _peft_version(),
        "task_type": None,
        "base_model_name_or_path": None,
        "inference_mode": True,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": sorted(modules),
        "modules_to_save": head_modules(method) or None,
        "rank_pattern": {re.escape(n): k for n, k in ranks.items() if k != r},
        "alpha_pattern": {re.escape(n): a for n, a in alphas.items() if a != alpha},
        "fan_in_fan_out": conv.pop(),
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
    }
    tensors = {}
    for n, m in modules.items():
        tensors[f"base_model.model.{n}.lora_A.weight"] = m.lora_A.detach()
        tensors[f"base_model.model.{n}.lora_B.weight"] = m.lora_B.detach()
    params = dict(method.model.named_parameters())
    for n in method.head:
        tensors[f"base_model.model.{n}"] = params[n].detach()
    return write_peft(folder, config, tensors)


def _peft_version() -> str | None:
    try:
        return importlib.metadata.version("peft")
    except importlib.metadata.PackageNotFoundError:
        return None


def write_peft(folder: Path, config: dict, tensors: dict[str, torch.Tensor]) -> Path:
    out = Path(folder) / PEFT_DIR
    out.mkdir(parents=True, exist_ok=True)
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    cpu = {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(
        out / "adapter_model.safetensors", lambda tmp: save_file(cpu, tmp, metadata={"format": "pt"})
    )
    text = json.dumps(config, indent=2, sort_keys=True, default=str)
    atomic_write(out / "adapter_config.json", lambda tmp: Path(tmp).write_text(text))
    return out


@torch.no_grad()
def merge(method: Method) -> nn.Module:
    """Folds every low-rank update into its base weight and unwraps it; returns the model."""
    merged = {}
    for name, m in _units(method).items():
        if hasattr(m, "merge"):  # a fused wrapper folds its own blocks
            merged[name] = m.merge()
            continue
        if not (hasattr(m, "base") and hasattr(m, "delta_weight")):
            raise ConfigError(f"{name} ({type(m).__name__}) has no linear ΔW to merge")
        base, delta = m.base, m.delta_weight()
        weight = base.weight
        weight.add_((delta.T if Conv1D and isinstance(base, Conv1D) else delta).to(weight.dtype))
        merged[name] = base
    inject(method.model, merged, lambda n, base: base)
    method.lowrank.clear()
    return method.model
