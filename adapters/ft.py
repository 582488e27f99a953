"""Full fine-tuning: every parameter trains; the whole model counts at inference."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adapters.base import Method, match_modules


@dataclass
class Config:
    name: str = "ft"
    lr_group: str = "ft"


def apply(
    model: nn.Module, cfg: Config, targets: list[str], heads: list[str], generator: torch.Generator
) -> Method:
    for p in model.parameters():
        p.requires_grad_(True)
    head_names = [
        n
        for n, _ in model.named_parameters()
        if any(n.startswith(h + ".") for h in match_modules(model, heads, "head"))
    ]
    body = sum(p.numel() for n, p in model.named_parameters() if n not in set(head_names))
    return Method(
        name=cfg.name,
        model=model,
        head=head_names,
        inference_params=body,
        params_convention="every parameter trains and is kept; head = model.head_modules",
    )
