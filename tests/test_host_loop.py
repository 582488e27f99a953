"""The runner's host-side loop (issue 28, goal 3): cutting its per-step Python must not change what a
run computes. The reference values below were computed with the loop as it was before that work
(commit 526f002, CPU, fp32); a change to the step sequence that moves a loss, the schedule or a trained
weight fails here."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from runners.logging import Logger
from tests.conftest import make_cfg

TINY_RTE = (
    "model=tiny_deberta",
    "task=glue/rte",
    "method=rm_lora",  # regularizer + mask hooks: every step of the sequence does something
    "train.epochs=2",
    "train.batch_size=8",
    "+task.max_train_samples=40",
    "+task.max_eval_samples=16",
)

# per-step total loss (logged), per-epoch (train_loss, train_reg), (Σ|w|, Σ w·r, tensors) of the
# trained weights, r ~ N(0, 1) from a seeded generator, tensors in name order
REFERENCE = {
    (): (
        [0.9316007494926453, 0.9308249950408936, 0.9358325600624084, 0.9324049949645996, 0.9293738603591919,
         0.9292597770690918, 0.9317097067832947, 0.9290011525154114, 0.9292025566101074, 0.929067075252533],
        [(0.6940956115722656, 0.23791179656982422), (0.6933501243591309, 0.23629791736602784)],
        (324.71308036231494, -0.2480856481617421, 28),
    ),
    ("train.grad_accum=2",): (
        [0.9308249950408936, 0.9341774582862854, 0.9288724064826965, 0.9356179237365723, 0.9302611351013184,
         0.9300722479820251],
        [(0.694370698928833, 0.23814053535461427), (0.6935894012451171, 0.2371668815612793)],
        (318.1363709373891, -0.5149728432598789, 28),
    ),
}  # fmt: skip


class StepLosses(Logger):
    """Asks for every step's loss (one host sync a step, as a real logger's)."""

    every_n_steps = 1

    def __init__(self):
        self.losses, self.lrs = [], []

    def step(self, step, values):
        self.losses.append(values["train/loss"])
        self.lrs.append(values["lr"])


def tiny_run(tmp_path, monkeypatch, *overrides):
    """(per-step losses, learning rates, history, weight digest, record) of a tiny RTE run."""
    import runners.train as train

    logger = StepLosses()
    monkeypatch.setattr(train, "build_logger", lambda cfg: logger)
    record = train.run(make_cfg(*TINY_RTE, *overrides, results_dir=tmp_path / "results"))
    weights = load_file(record["weights"])
    g = torch.Generator().manual_seed(0)
    absum = sum(float(w.double().abs().sum()) for _, w in sorted(weights.items()))
    probe = sum(
        float((w.double() * torch.randn(w.shape, generator=g, dtype=torch.float64)).sum())
        for _, w in sorted(weights.items())
    )
    history = [(h["train_loss"], h["train_reg"]) for h in record["metrics"]["history"]]
    return logger.losses, logger.lrs, history, (absum, probe, len(weights)), record


@pytest.mark.parametrize(
    "overrides", [(), pytest.param(("train.grad_accum=2",), marks=pytest.mark.slow)], ids=["plain", "accum2"]
)
def test_tiny_run_computes_what_the_loop_computed_before(tmp_path, monkeypatch, glue_dir, overrides):
    losses, lrs, history, (absum, probe, n), _ = tiny_run(
        tmp_path, monkeypatch, f"task.data_dir={glue_dir}", *overrides
    )
    ref_losses, ref_history, (ref_absum, ref_probe, ref_n) = REFERENCE[overrides]
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_losses), rtol=1e-5, atol=0)
    torch.testing.assert_close(torch.tensor(history), torch.tensor(ref_history), rtol=1e-5, atol=0)
    assert n == ref_n
    assert absum == pytest.approx(ref_absum, rel=1e-5)
    # a random projection of every trained weight: cancellation makes it small, so its tolerance is
    # relative to the weights' size (one element moved by 1e-3 shifts it by ~1e-3)
    assert probe == pytest.approx(ref_probe, abs=1e-6 * ref_absum)
    assert lrs[0] > 0 and lrs[-1] < lrs[0]  # the schedule ran (warm-up of 1 step, then linear decay)
