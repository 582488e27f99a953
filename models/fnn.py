"""The frozen random ReLU network of the synthetic task: f(x) = W_L σ(… σ(W_1 x)), no biases."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core import ConfigError


class FNN(nn.Module):
    def __init__(self, width: int, depth: int, generator: torch.Generator | None = None):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(depth))
        with torch.no_grad():
            for layer in self.layers:  # He init keeps activations O(1) through the ReLUs
                layer.weight.copy_(torch.randn(width, width, generator=generator) * (2.0 / width) ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def check_task(model: str, task: str) -> None:
    if task != "synthetic_fnn":
        raise ConfigError(
            f"model={model} is a plain ReLU network for task=synthetic/fnn only; for task {task} "
            f"choose a transformer, e.g. model=tiny_deberta"
        )


def check_source(cfg, task: str) -> None:
    """Nothing to fetch: the network is built from its config."""


def build_tokenizer(cfg, texts):
    return None


def build_model(cfg, head, tokenizer) -> nn.Module:
    if head is not None:
        raise ConfigError(
            f"model={cfg.name} is a plain ReLU network for task=synthetic/fnn; it cannot run a "
            f"{head['type']} task: choose a transformer, e.g. model=tiny_deberta"
        )
    return FNN(cfg.width, cfg.depth, torch.Generator().manual_seed(cfg.init_seed))
