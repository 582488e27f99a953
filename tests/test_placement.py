"""GPT-2 q/v-only placement inside the fused c_attn: counts, math, PEFT equivalence, merge, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from transformers import GPT2Config, GPT2ForSequenceClassification

from adapters import METHODS
from adapters.base import match_modules
from adapters.lowrank import lowrank_diagnostics
from adapters.orthogonal import orthogonality_penalty
from adapters.placement import FusedLowRank, merge_all, parse_targets
from core import ConfigError
from runners.config import typed
from tests.conftest import make_cfg

QV = [{"module": r".*\.attn\.c_attn", "blocks": ["q", "k", "v"], "adapt": ["q", "v"]}]


def method_cfg(name, *over):
    cfg = make_cfg(f"method={name}", *over)
    return typed(METHODS[cfg.method.name].Config, cfg.method, "method")


def apply(model, name, targets=QV, heads=("score",), seed=0, over=()):
    cfg = method_cfg(name, *over)
    return METHODS[cfg.name].apply(
        model, cfg, list(targets), list(heads), torch.Generator().manual_seed(seed)
    )


def tiny_gpt2(seed=0, d=32, layers=2):
    torch.manual_seed(seed)
    config = GPT2Config(
        n_embd=d, n_layer=layers, n_head=2, n_positions=64, vocab_size=101, num_labels=2, pad_token_id=0
    )
    return GPT2ForSequenceClassification(config).eval()


def gpt2_medium_meta():
    """GPT-2 medium shapes (d=1024, 24 layers) on the meta device: no weights, no download."""
    config = GPT2Config(n_embd=1024, n_layer=24, n_head=16, n_positions=1024, num_labels=2, pad_token_id=0)
    with torch.device("meta"):
        return GPT2ForSequenceClassification(config)


def model_targets(model_name="gpt2_medium", *over):
    cfg = make_cfg(f"model={model_name}", *over)
    return OmegaConf.to_container(cfg.model, resolve=True)["target_modules"]


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return {
        "input_ids": torch.randint(1, 101, (3, 9), generator=g),
        "attention_mask": torch.ones(3, 9, dtype=torch.long),
    }


def randomize_factors(method, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in method.lowrank.values():
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.1)


# --- counts ------------------------------------------------------------------------------------


def test_gpt2_medium_lora_r4_qv_has_exactly_393216_trainable():
    targets = model_targets()  # the YAML's default placement is q/v
    assert targets == QV
    method = apply(gpt2_medium_meta(), "lora", targets, over=("method.rank=4", "method.alpha=32"))
    counts = method.param_counts()
    assert counts["method_trainable"] == 2 * 24 * 4 * (1024 + 1024) == 393_216
    assert counts["method_inference"] == 393_216
    assert counts["head"] == 1024 * 2  # GPT-2's `score` has no bias
    assert len(method.lowrank) == 48  # q and v in each of 24 layers


def test_other_placements_count_whole_modules():
    whole = apply(
        gpt2_medium_meta(),
        "lora",
        model_targets("gpt2_medium", "model.placement=attn"),
        over=("method.rank=4",),
    )
    assert whole.param_counts()["method_trainable"] == 24 * 4 * (1024 + 3072)
    every = apply(
        gpt2_medium_meta(),
        "lora",
        model_targets("gpt2_medium", "model.placement=all"),
        over=("method.rank=4",),
    )
    assert every.param_counts()["method_trainable"] == 24 * 4 * ((1024 + 3072) + 2048 + (1024 + 4096) * 2)


# --- math --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lora", "rm_lora"])
def test_output_unchanged_at_init_and_two_pairs_per_layer(name, batch):
    model = tiny_gpt2()
    before = model(**batch).logits
    method = apply(model, name, over=("method.rank=4",))
    assert torch.equal(model(**batch).logits, before)
    assert sorted(method.lowrank) == [f"transformer.h.{i}.attn.c_attn.{b}" for i in range(2) for b in "qv"]
    for m in method.lowrank.values():
        assert m.lora_A.shape == (4, 32) and m.lora_B.shape == (32, 4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"score.weight"} | {
        f"transformer.h.{i}.attn.c_attn.{b}.lora_{f}" for i in range(2) for b in "qv" for f in "AB"
    }


def test_fused_forward_adds_each_branch_to_its_block_only():
    model = tiny_gpt2()
    method = apply(model, "lora", over=("method.rank=4", "method.alpha=8"))
    randomize_factors(method)
    fused = model.transformer.h[0].attn.c_attn
    assert isinstance(fused, FusedLowRank)
    x = torch.randn(2, 5, 32)
    base = fused.base(x)
    out = fused(x)
    q, v = fused.q, fused.v
    assert q.scaling == 2.0
    torch.testing.assert_close(out[..., :32], base[..., :32] + 2.0 * x @ q.lora_A.T @ q.lora_B.T)
    assert torch.equal(out[..., 32:64], base[..., 32:64])  # k untouched
    torch.testing.assert_close(out[..., 64:], base[..., 64:] + 2.0 * x @ v.lora_A.T @ v.lora_B.T)
    # the fused ΔW (nn.Linear convention) is the block stack [ΔW_q; 0; ΔW_v]
    dw = fused.delta_weight()
    torch.testing.assert_close(dw, torch.cat([q.delta_weight(), torch.zeros(32, 32), v.delta_weight()]))


@pytest.mark.parametrize("name,dropout", [("lora", 0.0), ("lora", 0.5), ("loda", 0.0), ("loda", 0.5)])
def test_fused_matmul_equals_the_branch_loop_values_and_gradients(name, dropout):
    """`fuse` (method.fast) computes [Δ_q; 0; Δ_v] as one rank-2r product (LoDA: f1 on each branch's
    columns between the two matmuls): the same output and grads as the per-branch loop."""
    model = tiny_gpt2()
    apply(model, name, over=("method.rank=4", "method.alpha=8", f"method.dropout={dropout}"))
    fused = model.transformer.h[0].attn.c_attn
    with torch.no_grad():
        for b in "qv":
            fused.branch(b).lora_B.normal_()
            for p in getattr(fused.branch(b), "loda_f1", nn.Identity()).parameters():
                p.normal_()
    trained = [p for b in "qv" for p in fused.branch(b).parameters()]
    assert len(trained) == (2 if name == "lora" else 4) * 2
    x = torch.randn(2, 5, 32)
    if dropout:  # one draw shared by q and v (loralib's MergedLinear): compare in eval mode
        fused.eval()
    runs = {}
    for fuse in (True, False):
        fused.fuse = fuse
        out = fused(x)
        grads = torch.autograd.grad(out.pow(2).sum(), trained)
        runs[fuse] = (out, grads)
    torch.testing.assert_close(runs[True][0], runs[False][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(runs[True][1], runs[False][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert a.abs().sum() > 0
    assert fused.fusable
    if dropout:  # training mode: k is never touched, q and v see the same dropped inputs
        fused.train()
        fused.fuse = True
        out = fused(x)
        torch.testing.assert_close(out[..., 32:64], fused.base(x)[..., 32:64])


def test_fused_matmul_is_the_default_and_off_with_fast_false():
    for name in ("rm_lora", "loda", "loda_plus"):
        for fast in (True, False):
            model = tiny_gpt2()
            apply(model, name, over=("method.rank=4", f"method.fast={str(fast).lower()}"))
            fused = [m for m in model.modules() if isinstance(m, FusedLowRank)]
            assert {m.fuse for m in fused} == {fast}
            assert {m.fusable for m in fused} == {name != "loda_plus"}  # LoDA+'s f2 needs the loop


def test_regularizer_mask_and_diagnostics_see_every_branch():
    model = tiny_gpt2()
    method = apply(model, "rm_lora", over=("method.rank=4",))
    randomize_factors(method)
    mods = list(method.lowrank.values())
    # the loss term is λ·Eq. 10 summed over the four (A, B) pairs
    torch.testing.assert_close(method.extra_loss(), 0.1 * orthogonality_penalty(mods))
    diag = lowrank_diagnostics(method.lowrank)
    assert set(diag["modules"]) == set(method.lowrank)
    assert all(v["rank"] == 4 for v in diag["modules"].values())
    # one masked step: every branch keeps exactly r̂ = 2 rows of A's gradient
    for m in mods:
        m.lora_A.grad = torch.ones_like(m.lora_A)
        m.lora_B.grad = torch.ones_like(m.lora_B)
    method.before_step(torch.optim.SGD([p for m in mods for p in (m.lora_A, m.lora_B)], lr=0.1), 1)
    for m in mods:
        assert int((m.lora_A.grad.abs().sum(1) > 0).sum()) == 2
        assert int((m.lora_B.grad.abs().sum(0) > 0).sum()) == 2


def test_peft_equivalent_is_a_peft_lora_with_the_same_logits(batch):
    from peft import LoraConfig, get_peft_model

    model = tiny_gpt2()
    reference = copy.deepcopy(model)
    method = apply(model, "lora", over=("method.rank=3", "method.alpha=12"))
    randomize_factors(method)
    with torch.no_grad():
        for m in method.lowrank.values():
            m.lora_A.add_(0.01)
    ours = model(**batch).logits
    fused = {n: m for n, m in model.named_modules() if isinstance(m, FusedLowRank)}
    eq = next(iter(fused.values())).peft_equivalent()
    assert (eq.rank, eq.scaling, eq.alpha, eq.fan_in_fan_out) == (6, 4.0, 24.0, True)
    assert eq.lora_A.shape == (6, 32) and eq.lora_B.shape == (96, 6)
    assert torch.count_nonzero(eq.lora_B[32:64]) == 0  # k rows
    assert torch.count_nonzero(eq.lora_B[:32, 3:]) == 0 and torch.count_nonzero(eq.lora_B[64:, :3]) == 0
    config = LoraConfig(r=eq.rank, lora_alpha=eq.alpha, target_modules=["c_attn"], fan_in_fan_out=True)
    peft_model = get_peft_model(reference, config)
    with torch.no_grad():
        for name, module in fused.items():
            e = module.peft_equivalent()
            layer = peft_model.base_model.model.get_submodule(name)
            layer.lora_A["default"].weight.copy_(e.lora_A)
            layer.lora_B["default"].weight.copy_(e.lora_B)
    torch.testing.assert_close(peft_model(**batch).logits, ours, rtol=1e-5, atol=1e-6)


def test_merge_folds_into_the_base_weight(batch):
    model = tiny_gpt2()
    method = apply(model, "lora", over=("method.rank=4",))
    randomize_factors(method)
    unmerged = model(**batch).logits
    assert merge_all(model) == 2
    assert not any(isinstance(m, FusedLowRank) for m in model.modules())
    torch.testing.assert_close(model(**batch).logits, unmerged, rtol=1e-5, atol=1e-6)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"module": "x", "blocks": ["q", "k", "v"], "adapt": ["w"]}, "among blocks"),
        ({"module": "x", "blocks": ["q", "k", "v"], "adapt": []}, "among blocks"),
        ({"module": "x", "adapt": ["q"], "split": 3}, "needs keys"),
        (42, "neither a regex"),
    ],
)
def test_bad_split_entries_raise_named_errors(entry, message):
    with pytest.raises(ConfigError, match=message):
        parse_targets([entry])


def test_uneven_split_unmatched_pattern_and_whole_only_methods_raise():
    with pytest.raises(ConfigError, match="equal blocks"):
        apply(tiny_gpt2(), "lora", [{"module": r".*\.attn\.c_attn", "blocks": list("abcde"), "adapt": ["a"]}])
    with pytest.raises(ConfigError, match="matches no module"):
        apply(tiny_gpt2(), "lora", [{"module": r".*\.nothing", "blocks": ["q", "k", "v"], "adapt": ["q"]}])
    with pytest.raises(ConfigError, match="two model.target_modules"):
        apply(tiny_gpt2(), "lora", [*QV, r".*\.attn\.c_attn"])
    with pytest.raises(ConfigError, match="model.placement=attn"):  # methods that adapt whole modules only
        match_modules(tiny_gpt2(), QV)


@pytest.mark.parametrize(
    ("model", "valid"),
    [("tiny_gpt2", "all, attn, qv"), ("gpt2_medium", "all, attn, qv"), ("tiny_vit", "attention, classifier")],
)
def test_an_unknown_placement_lists_the_valid_ones(model, valid, tmp_path):
    """Issue 26 #8: `model.placement=foo` was an interpolation error (`model.placements.foo` not found)
    that named no valid placement; it is refused before Hydra starts and in each sweep job."""
    from runners.config import check_choices, precheck

    message = f"^model.placement=foo is not a placement of model={model}; valid: {valid}$"
    with pytest.raises(ConfigError, match=message):
        check_choices(make_cfg(f"model={model}", "model.placement=foo"))  # run.py: every run and sweep job
    with pytest.raises(ConfigError, match=message):
        precheck([f"model={model}", "model.placement=foo", f"paths.results_dir={tmp_path}"])
    check_choices(make_cfg(f"model={model}"))  # the default placement
    check_choices(make_cfg("model=tiny_deberta"))  # no placements at all
