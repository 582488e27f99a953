"""RM-LoRA as its authors ran it (issue 25, findings 4 and 5).

4. The regularizer: table rows run the authors' code's form (github.com/yz-mao/RM-LoRA,
   RM-LoRA/adalora_trainer.py `compute_svd_orth_regu`: mean over all lora_A / lora_B of the non-squared
   ‖G − I‖_F) at their coefficient 0.1; Eq. 10 (`reg_form=paper`) brings its own coefficient.
5. The head mask: their GM step (same file, `_inner_training_loop`) skips the first optimizer step, then
   zeroes every non-LoRA gradient; `method.mask_head=true method.mask_start=2` reproduces it.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from adapters import METHODS
from adapters.orthogonal import (
    OrthogonalityRegularizer,
    orthogonality_penalty,
    orthogonality_penalty_loop,
)
from core import ConfigError
from runners.config import CONF, typed
from tests.conftest import make_cfg
from tests.test_fastpath import batches, build

REG_ARMS = sorted(p.stem for p in (CONF / "arm").glob("*.yaml") if p.stem.startswith(("r_lora_", "rm_lora_")))


def method_of(*overrides):
    cfg = make_cfg(*overrides)
    return typed(METHODS[cfg.method.name].Config, cfg.method, "method")


# --- finding 4: form and coefficient -------------------------------------------------------------


def test_every_r_and_rm_lora_arm_runs_the_code_form_at_its_coefficient():
    assert len(REG_ARMS) == 12  # r_lora / rm_lora at R = 4, 8, 16, 32, 64, 80
    for arm in REG_ARMS:
        cfg = method_of(f"arm={arm}")
        assert (cfg.reg_form, cfg.reg_weight) == ("reference", 0.1), arm


@pytest.mark.parametrize("arm", ["r_lora_r4", "rm_lora_r4", "r_lora_r8", "rm_lora_r8"])
def test_table1_glue_runs_compose_to_the_reference_form_at_0_1(arm):
    cfg = method_of("experiment=rm_table1_glue", f"arm={arm}", "task=glue/rte", "seed=1")
    assert (cfg.reg_form, cfg.reg_weight) == ("reference", 0.1)


def test_switching_to_the_paper_form_brings_its_own_coefficient():
    """`method.reg_form=paper` must not silently keep the code form's 0.1 (≈ 540× the pull)."""
    paper = method_of("arm=rm_lora_r8", "method.reg_form=paper")
    assert paper.reg_form == "paper" and paper.reg_weight == pytest.approx(1.8e-4)
    assert paper.reg_weight == paper.reg_weights["paper"]
    explicit = method_of("arm=rm_lora_r8", "method.reg_form=paper", "method.reg_weight=0.1")
    assert explicit.reg_weight == 0.1  # what the user types wins
    with pytest.raises(ConfigError, match="reg_weights.other"):
        method_of("method=r_lora", "+method.reg_weights.other=1")


def _factors(a, b):
    return SimpleNamespace(
        lora_A=torch.tensor(a, dtype=torch.float32, requires_grad=True),
        lora_B=torch.tensor(b, dtype=torch.float32, requires_grad=True),
    )


def test_reference_form_is_the_authors_mean_over_all_factors_by_hand():
    """Hand values: A1 A1ᵀ − I = [[3, 0], [0, 0]] → 3; B1ᵀ B1 − I = [[1, 2], [2, 2]] → √13;
    A2 (3×4) A2ᵀ − I = diag(0, 1, 0) → 1; B2 = 0 → −I₃ → √3. Mean over the 4 factors (not the 2 modules)."""
    m1 = _factors([[2, 0, 0], [0, 1, 0]], [[1, 1], [0, 1], [1, 1]])
    m2 = _factors([[1, 0, 0, 0], [0, math.sqrt(2), 0, 0], [0, 0, 0, 1]], [[0, 0, 0]] * 5)
    expected = (3 + math.sqrt(13) + 1 + math.sqrt(3)) / 4
    for fn in (orthogonality_penalty, orthogonality_penalty_loop):
        assert float(fn([m1, m2], "reference").detach()) == pytest.approx(expected, rel=1e-6)
    # the analytic gradient path returns the same value, and λ multiplies it (loss + 0.1 · Reg)
    for m in (m1, m2):
        for p in (m.lora_A, m.lora_B):
            p.requires_grad_(False)
    term = OrthogonalityRegularizer([m1, m2], 0.1, "reference")
    assert float(term.add_grad()) == pytest.approx(0.1 * expected, rel=1e-6)
    # ∂/∂A1 of ‖A1A1ᵀ − I‖_F / 4 = 2 (G − I) A1 / (3 · 4): row 0 gets 2·3·[2, 0, 0] / 12
    torch.testing.assert_close(m1.lora_A.grad, 0.1 * torch.tensor([[1.0, 0, 0], [0, 0, 0]]))


def test_the_record_says_which_regularizer_and_mask_ran():
    _, method = build("rm_lora", rank=4)
    counts = method.extra_counts()
    assert counts["regularizer"]["form"] == "reference" and counts["regularizer"]["weight"] == 0.1
    assert "non-squared" in counts["regularizer"]["term"] and "mean over the" in counts["regularizer"]["term"]
    mask = counts["gradient_mask"]
    assert mask == {
        "directions": 2,
        "rank": 4,
        "shared": True,
        "mode": "grad",
        "start_step": 1,
        "head": "not masked",
    }
    _, authors = build("gm_lora", rank=4, mask_head=True, mask_start=2)
    assert authors.extra_counts()["gradient_mask"]["head"] == "masked (authors' code)"
    assert "regularizer" not in authors.extra_counts()


# --- finding 5: the authors' head mask, as a switch ----------------------------------------------


def _step(model, method, optimizer, batch, step):
    model(**batch).loss.backward()
    params = [p for _, p in method.optimizer_parameters()]
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    before = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    method.before_step(optimizer, step)
    after = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    method.after_step(optimizer, step)
    model.zero_grad(set_to_none=True)
    return before, after


@pytest.mark.parametrize("fast", [True, False])
def test_head_mask_reproduces_the_authors_gm_step(fast):
    """Step 1 unmasked (their `global_step > 0`); from step 2 the head's gradient is zero and only
    AdamW's momentum moves it: m ← β1 m, v ← β2 v, p ← p − lr · m̂ / (√v̂ + ε) (weight decay 0, their
    scripts), computed here by hand."""
    model, method = build("gm_lora", rank=4, mask_head=True, mask_start=2, fast=fast)
    head = {n: p for n, p in model.named_parameters() if n.startswith("score.")}
    lora = [n for n in dict(model.named_parameters()) if "lora_" in n]
    lr, (b1, b2), eps = 1e-2, (0.9, 0.999), 1e-8
    opt = torch.optim.AdamW([p for _, p in method.optimizer_parameters()], lr=lr, weight_decay=0.0)
    data = batches(3)

    before, after = _step(model, method, opt, data[0], 1)
    for n in [*head, *lora]:  # step 1: nothing masked, the head gets its full gradient
        assert torch.equal(before[n], after[n])
    assert all(after[n].abs().sum() > 0 for n in head)

    for step in (2, 3):
        p_old = {n: p.detach().clone() for n, p in head.items()}
        state = {n: {k: v.clone() for k, v in opt.state[p].items()} for n, p in head.items()}
        before, after = _step(model, method, opt, data[step - 1], step)
        masked_rows = 0
        for n in lora:  # LoRA factors keep r̂ = 2 of 4 directions
            masked_rows += int((after[n] == 0).all(dim=1 if "lora_A" in n else 0).sum())
        assert masked_rows > 0
        for n, p in head.items():
            assert before[n].abs().sum() > 0 and torch.equal(after[n], torch.zeros_like(after[n]))
            t = float(state[n]["step"]) + 1
            m, v = b1 * state[n]["exp_avg"], b2 * state[n]["exp_avg_sq"]
            update = lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
            torch.testing.assert_close(p.detach(), p_old[n] - update, rtol=1e-5, atol=1e-7)
            assert not torch.equal(p.detach(), p_old[n])  # momentum still moves it


@pytest.mark.parametrize("fast", [True, False])
def test_without_the_switch_the_head_trains_on_every_step(fast):
    model, method = build("gm_lora", rank=4, fast=fast)
    opt = torch.optim.AdamW([p for _, p in method.optimizer_parameters()], lr=1e-2)
    for step, batch in enumerate(batches(2), 1):
        before, after = _step(model, method, opt, batch, step)
        for n in ("score.weight",):
            assert torch.equal(before[n], after[n]) and after[n].abs().sum() > 0


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"mask_head": True}, "add method.mask_start=2"),
        ({"mask_head": True, "mask_start": 2, "mask_mode": "strict"}, "mask_mode=grad"),
        ({"mask_start": 0}, "1-based"),
    ],
)
def test_bad_head_mask_settings_name_the_fix(over, message):
    with pytest.raises(ConfigError, match=message):
        method_of("method=gm_lora", *[f"method.{k}={v}" for k, v in over.items()])


def test_head_mask_needs_the_mask_and_a_head():
    with pytest.raises(ConfigError, match="set method.mask_fraction"):
        method_of("method=lora", "method.mask_head=true", "method.mask_start=2")
    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    cfg = method_of("method=gm_lora", "method.rank=2", "method.mask_head=true", "method.mask_start=2")
    with pytest.raises(ConfigError, match="trains no head"):
        METHODS["gm_lora"].apply(model, cfg, ["0"], [], torch.Generator().manual_seed(0))


def test_a_run_record_names_the_regularizer_form_and_coefficient(cfg_factory):
    from runners.train import run

    rec = run(cfg_factory("method=rm_lora", "task.n_train=128", "task.n_test=64", "train.epochs=1"))
    assert rec["config"]["method"]["reg_form"] == "reference" and rec["config"]["method"]["reg_weight"] == 0.1
    assert (
        rec["params"]["regularizer"]["form"] == "reference" and rec["params"]["regularizer"]["weight"] == 0.1
    )
    assert rec["params"]["gradient_mask"]["head"] == "not masked"
