"""Synthetic fully-connected target network: the Sec. 3 setting of RM-LoRA (after Zeng & Lee, 2023).

The frozen model is a random L-layer width-D ReLU network f (model=fnn). The target f̄ has weights
W̄_l = W_l + ΔW*_l with ΔW*_l = scale · U_l V_lᵀ / √(k·D), U_l, V_l ∈ R^{D×k} standard Gaussian, so
each layer's gap has rank k (full rank when k = D) and entries of variance scale²/D. Inputs
x ~ N(0, I_D), targets y = f̄(x) + noise. A low-rank method adapts every layer of f; the metric is
the test MSE (mean over samples and output coordinates). Everything is drawn from `data_seed`, so
run seeds change only the adapter init, batch order and masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core import ConfigError
from tasks.base import Task, TaskData


@dataclass
class Config:
    name: str = "synthetic_fnn"
    target_rank: int | None = 16
    perturbation_scale: float = 1.0
    noise_std: float = 0.0
    n_train: int = 4096
    n_test: int = 1024
    data_seed: int = 0

    def __post_init__(self):
        if self.n_train < 1 or self.n_test < 1:
            raise ConfigError("task.n_train and task.n_test must be >= 1")
        if self.target_rank is not None and self.target_rank < 1:
            raise ConfigError(f"task.target_rank must be >= 1 or null (full rank), got {self.target_rank}")


def target_weights(model: nn.Module, cfg: Config, generator: torch.Generator) -> list[torch.Tensor]:
    """W̄_l = W_l + ΔW*_l for every layer of the frozen FNN (see the module docstring)."""
    out = []
    for layer in model.layers:
        w = layer.weight.detach()
        d = w.shape[0]
        k = cfg.target_rank or d
        if k > d:
            raise ConfigError(f"task.target_rank={k} exceeds the network width {d}; lower it or set null")
        u = torch.randn(d, k, generator=generator)
        v = torch.randn(w.shape[1], k, generator=generator)
        out.append(w + cfg.perturbation_scale * (u @ v.T) / (k * d) ** 0.5)
    return out


def fnn_forward(weights: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    for i, w in enumerate(weights):
        x = F.linear(x, w)
        if i < len(weights) - 1:
            x = F.relu(x)
    return x


class SyntheticFNN(Task):
    name, main_metric, higher_is_better = "synthetic_fnn", "mse", False

    @classmethod
    def data_source(cls, cfg) -> str:
        return f"generated: random target network and inputs from task.data_seed={cfg.data_seed} (no files)"

    def build(self, model: nn.Module, tokenizer=None) -> TaskData:
        if not hasattr(model, "layers"):
            raise ConfigError("task=synthetic/fnn needs model=fnn (a plain ReLU network)")
        g = torch.Generator().manual_seed(self.cfg.data_seed)
        weights = target_weights(model, self.cfg, g)
        d = weights[0].shape[1]

        def sample(n):
            x = torch.randn(n, d, generator=g)
            y = fnn_forward(weights, x) + self.cfg.noise_std * torch.randn(
                n, weights[-1].shape[0], generator=g
            )
            return [{"x": xi, "y": yi} for xi, yi in zip(x, y)]

        return TaskData(train=sample(self.cfg.n_train), evals={"test": sample(self.cfg.n_test)})

    def forward(self, model, batch):
        pred = model(batch["x"])
        return F.mse_loss(pred.float(), batch["y"]), pred.detach(), batch["y"]

    def metrics(self, preds, labels):
        mse = float(F.mse_loss(preds, labels))
        return {"mse": mse, "nmse": mse / float(labels.var())}  # nmse: 1 = predicting the mean


TASK = SyntheticFNN
