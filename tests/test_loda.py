"""LoDA family: counts, LoRA as the zero-f1 case (bitwise), f1/f2 math, R-/S-LoDA base weights,
reg/mask combinations, export round trip, bad input, and end-to-end runs."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from transformers import GPT2Config

from adapters import METHODS
from adapters import loda as loda_mod
from adapters.orthogonal import orthogonality_penalty
from adapters.placement import FusedLowRank
from core import ConfigError
from runners.train import run
from tests.test_placement import QV, apply, batch, gpt2_medium_meta, method_cfg, model_targets, tiny_gpt2

__all__ = ["batch"]  # pytest fixture re-used from test_placement

LODA = ["loda", "loda_plus", "r_loda", "r_loda_plus", "s_loda", "s_loda_plus"]
TINY = {"r_loda": ("method.base_rank=8",), "r_loda_plus": ("method.base_rank=8",)}  # d = 32 < R = 300


def fill(method, seed=5, f1=True):
    """Random non-zero B (and f1 weights): a 'trained' adapter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in method.lowrank.values():
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.2)
            if f1:
                for p in m.loda_f1.parameters():
                    p.copy_(torch.randn(p.shape, generator=g))


# --- counts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["loda", "loda_plus"])
def test_gpt2_medium_loda_r4_qv_has_exactly_394752_trainable(name):
    method = apply(gpt2_medium_meta(), name, model_targets())
    counts = method.param_counts()
    assert counts["method_trainable"] == 2 * (4 * 1024 + 4 * 4) * 48 == 394_752
    assert counts["method_inference"] == 394_752
    assert counts["method_trainable"] - 393_216 == 48 * 2 * 4 * 4  # two r×r matrices per adapted matrix


# --- LoRA is the zero-f1 case; trained f1 is not LoRA -------------------------------------------


@pytest.mark.parametrize("name", ["loda", "loda_plus"])
def test_zero_f1_equals_lora_bitwise_and_trained_f1_does_not(name, batch):
    base = tiny_gpt2()
    lora_model, loda_model = copy.deepcopy(base), copy.deepcopy(base)
    lora = apply(lora_model, "lora", over=("method.rank=4", "method.alpha=32"))
    loda = apply(loda_model, name)
    fill(lora, f1=False)
    with torch.no_grad():
        for key, m in loda.lowrank.items():
            m.lora_A.copy_(lora.lowrank[key].lora_A)
            m.lora_B.copy_(lora.lowrank[key].lora_B)
            for p in m.loda_f1.parameters():
                p.zero_()
    want = lora_model(**batch).logits
    assert torch.equal(loda_model(**batch).logits, want)
    with torch.no_grad():
        for m in loda.lowrank.values():
            for p in m.loda_f1.parameters():
                p.normal_()
    got = loda_model(**batch).logits
    assert (got - want).abs().max() > 1e-3


def test_zero_f1_equals_lora_bitwise_on_whole_linear_modules():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8))
    a, b = copy.deepcopy(net), copy.deepcopy(net)
    lora = apply(a, "lora", ["0|2"], (), over=("method.rank=4",))
    loda = apply(
        b, "loda", ["0|2"], (), over=("method.rank=4", "method.alpha=16", "method.f1_init=zero_last")
    )
    assert sorted(loda.lowrank) == ["0.adapter", "2.adapter"]
    fill(lora, f1=False)
    with torch.no_grad():
        for key, m in loda.lowrank.items():
            m.lora_A.copy_(lora.lowrank[key.removesuffix(".adapter")].lora_A)
            m.lora_B.copy_(lora.lowrank[key.removesuffix(".adapter")].lora_B)
    x = torch.randn(7, 16)
    assert torch.equal(b(x), a(x))  # zero_last: W2 = 0, so f1 = 0 without touching W1


@pytest.mark.parametrize("name", LODA)
def test_output_at_init_is_the_frozen_base_s(name, batch):
    """Δh = 0 at step 0 (B = 0): the output is the base model's, with the approximated W_proj for R-/S-."""
    model, reference = tiny_gpt2(), tiny_gpt2()
    apply(model, name, over=TINY.get(name, ()))
    with torch.no_grad():
        for i in range(2):
            reference.transformer.h[i].attn.c_attn.weight.copy_(
                model.transformer.h[i].attn.c_attn.base.weight
            )
    assert torch.equal(model(**batch).logits, reference(**batch).logits)
    changed = not torch.equal(
        reference.transformer.h[0].attn.c_attn.weight, tiny_gpt2().transformer.h[0].attn.c_attn.weight
    )
    assert changed == name.startswith(("r_", "s_"))


# --- f1 / f2 math --------------------------------------------------------------------------------


def layer_norm(u):
    return (u - u.mean(-1, keepdim=True)) / torch.sqrt(u.var(-1, unbiased=False, keepdim=True) + 1e-5)


def leaky(u):
    return torch.where(u > 0, u, 0.8 * u)


def test_loda_and_loda_plus_match_the_equations():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 32)
    for plus in (False, True):
        cfg = method_cfg("loda_plus" if plus else "loda")
        br = loda_mod.LoDABranch(32, 32, cfg, torch.empty(32, 32), "q")
        with torch.no_grad():
            br.lora_B.normal_()
        w1, w2 = (m.weight for m in br.loda_f1 if isinstance(m, nn.Linear))
        A, B, s = br.lora_A, br.lora_B, br.scaling
        z = x @ A.T
        f1 = leaky(layer_norm(z) @ w1.T) @ w2.T  # default order: norm, linear, act, linear
        want = s * (z @ B.T + leaky(f1 @ B.T)) if plus else s * (z + f1) @ B.T
        torch.testing.assert_close(br(x), want)
        assert s == 8.0
    # another order is another function
    cfg = method_cfg("loda", "method.f1_order=[linear,act,norm,linear]")
    br = loda_mod.LoDABranch(32, 32, cfg, torch.empty(32, 32))
    w1, w2 = (m.weight for m in br.loda_f1 if isinstance(m, nn.Linear))
    z = torch.randn(4, 4)
    torch.testing.assert_close(br.loda_f1(z), layer_norm(leaky(z @ w1.T)) @ w2.T)
    cfg = method_cfg("loda_plus", "method.f2=[act,norm]")
    br = loda_mod.LoDABranch(32, 32, cfg, torch.empty(32, 32))
    u = torch.randn(4, 32)
    torch.testing.assert_close(br.loda_f2(u), layer_norm(leaky(u)))


@pytest.mark.parametrize("order", ["[norm,linear,act,linear]", "[linear,act,norm,linear]"])
def test_fast_f1_is_the_sequential_f1_values_and_gradients(order):
    """method.fast computes f1's r×r linears as broadcast products (fused by inductor): the same f1 as
    the nn.Sequential (fast=false), values and gradients; the zero-W2 case stays exactly zero."""
    torch.manual_seed(0)
    cfg = method_cfg("loda", f"method.f1_order={order}")
    br = loda_mod.LoDABranch(32, 32, cfg, torch.empty(32, 32))
    assert br.small_matmul
    z = torch.randn(3, 7, 4, requires_grad=True)
    runs = []
    for fast in (True, False):
        br.small_matmul = fast
        out = br.f1(z)
        runs.append((out, torch.autograd.grad(out.pow(2).sum(), [z, *br.loda_f1.parameters()])))
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert a.abs().sum() > 0
    with torch.no_grad():
        [m for m in br.loda_f1 if isinstance(m, nn.Linear)][-1].weight.zero_()
    br.small_matmul = True
    assert torch.equal(br.inner(z), z)
    assert not loda_mod.LoDABranch(
        32, 32, method_cfg("loda", "method.fast=false"), torch.empty(32, 32)
    ).small_matmul


def test_loda_is_not_foldable_merge_and_peft_refuse():
    model = tiny_gpt2()
    apply(model, "loda")
    fused = model.transformer.h[0].attn.c_attn
    assert isinstance(fused, FusedLowRank)
    for call in (fused.merge, fused.peft_equivalent):
        with pytest.raises(ConfigError, match="non-linear"):
            call()


# --- R-LoDA / S-LoDA ---------------------------------------------------------------------------


def test_r_loda_base_has_rank_exactly_r_and_recorded_energy():
    model = tiny_gpt2()
    original = {i: model.transformer.h[i].attn.c_attn.weight.detach().clone() for i in range(2)}
    method = apply(model, "r_loda", over=("method.base_rank=8",))
    stats = method.extra_counts()["base_approx"]
    for i in range(2):
        name = f"transformer.h.{i}.attn.c_attn"
        w = model.get_submodule(name).base.weight  # (32, 96)
        assert not w.requires_grad and w.dtype == torch.float32
        assert torch.linalg.matrix_rank(w) == 8
        s = torch.linalg.svdvals(original[i].double())
        assert stats["modules"][name]["energy"] == pytest.approx(
            float((s[:8] ** 2).sum() / (s**2).sum()), rel=1e-12
        )
        # the best rank-8 approximation (Eckart–Young): error² = Σ_{i>8} σ_i², to float32 rounding
        err = float(((original[i].double() - w.double()) ** 2).sum())
        assert err == pytest.approx(float((s[8:] ** 2).sum()), rel=1e-5)
        assert stats["modules"][name]["macs_dense"] == 32 * 96
        assert stats["modules"][name]["macs_approx"] == 8 * (32 + 96)  # 4Rd with d = 32
    assert 0.3 < stats["mean_energy"] < 1.0
    assert stats["kind"] == "svd" and stats["rank"] == 8


@pytest.mark.parametrize("keep", [0.4, 0.5, 0.6])
def test_s_loda_base_keeps_exactly_the_fraction_of_largest_entries(keep):
    model = tiny_gpt2()
    original = model.transformer.h[1].attn.c_attn.weight.detach().clone()
    method = apply(model, "s_loda", over=(f"method.base_keep={keep}",))
    w = model.transformer.h[1].attn.c_attn.base.weight
    k = round(keep * 32 * 96)
    assert int(torch.count_nonzero(w)) == k
    kept = w != 0
    assert torch.equal(w[kept], original[kept])  # kept entries unchanged
    assert original[kept].abs().min() >= original[~kept].abs().max()  # the largest magnitudes
    stats = method.extra_counts()["base_approx"]["modules"]["transformer.h.1.attn.c_attn"]
    assert stats["nnz"] == stats["macs_approx"] == k
    assert stats["energy"] == pytest.approx(
        float((original[kept] ** 2).sum() / (original**2).sum()), rel=1e-6
    )


# --- combinations with the R-LoRA regularizer and the GM mask -----------------------------------


def test_reg_and_mask_act_on_a_and_b_not_on_f1():
    model = tiny_gpt2()
    method = apply(model, "loda", over=("method.reg_weight=0.1", "method.mask_directions=2"))
    fill(method)
    mods = list(method.lowrank.values())
    assert len(mods) == 4
    torch.testing.assert_close(method.extra_loss(), 0.1 * orthogonality_penalty(mods))
    params = [p for m in mods for p in m.parameters()]
    for p in params:
        p.grad = torch.ones_like(p)
    method.before_step(torch.optim.SGD(params, lr=0.1), 1)
    for m in mods:
        assert int((m.lora_A.grad.abs().sum(1) > 0).sum()) == 2
        assert int((m.lora_B.grad.abs().sum(0) > 0).sum()) == 2
        assert all(torch.equal(p.grad, torch.ones_like(p)) for p in m.loda_f1.parameters())


# --- export ------------------------------------------------------------------------------------


def test_export_round_trip_and_wrong_base_refused(tmp_path, batch):
    over = ("method.base_rank=8",)
    trained = tiny_gpt2()
    method = apply(trained, "r_loda_plus", over=over)
    fill(method)
    with torch.no_grad():
        trained.score.weight.normal_()
    want = trained(**batch).logits
    method.exporter(tmp_path)
    folder = tmp_path / "loda"
    meta = json.loads((folder / "loda_config.json").read_text())
    assert meta["method"]["name"] == "r_loda_plus" and meta["targets"] == QV
    assert set(load_file(folder / "adapter.safetensors")) == {
        n for n, p in trained.named_parameters() if p.requires_grad
    }
    fresh = tiny_gpt2()  # the same base weights (same seed), untouched
    loaded = loda_mod.load(fresh, folder)
    assert torch.equal(fresh(**batch).logits, want)
    assert loaded.param_counts() == method.param_counts()
    with pytest.raises(ConfigError, match="base energy"):
        loda_mod.load(tiny_gpt2(seed=1), folder)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, over, message",
    [
        ("loda", "method.base_rank=8", "use method=r_loda"),
        ("r_loda", "method.base_rank=null", "needs method.base_rank"),
        ("s_loda", "method.base_keep=1.5", r"in \(0, 1\]"),
        ("loda", "method.f1_order=[linear,relu]", "f1_order"),
        ("loda", "method.f1_order=[act,norm]", "at least one linear"),
        ("loda_plus", "method.f2=[linear]", "f2"),
        ("loda", "method.f1_init=ones", "f1_init"),
    ],
)
def test_bad_values_raise_named_errors(name, over, message):
    with pytest.raises(ConfigError, match=message):
        method_cfg(name, over)


def test_base_rank_above_module_dims_names_the_fix():
    with pytest.raises(ConfigError, match=r"set method.base_rank <= 32"):
        apply(tiny_gpt2(), "r_loda")  # default R = 300 > d = 32


# --- learning and end to end -------------------------------------------------------------------


def fit(name, steps=300):
    torch.manual_seed(0)
    base = nn.Linear(24, 24, bias=False)
    u, v = torch.randn(24, 2), torch.randn(2, 24)
    x = torch.randn(512, 24)
    y = base(x).detach() + torch.tanh(x @ u) @ v  # frozen layer + a rank-2 non-linear update
    net = nn.Sequential(base)
    method = apply(net, name, [r"0"], (), over=("method.rank=4", "method.alpha=4"))
    opt = torch.optim.Adam(method.trainable_parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = F.mse_loss(net(x), y)
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses[0], losses[-1]


def test_loda_learns_a_nonlinear_update_that_lora_cannot():
    """Measured (seeds 0-2): LoDA ends at 0.09-0.10 of the start loss, LoRA (same r, α) at 0.23-0.27."""
    start, loda_end = fit("loda")
    _, lora_end = fit("lora")
    assert loda_end < 0.25 * start
    assert loda_end < 0.6 * lora_end


@pytest.mark.slow
@pytest.mark.parametrize("name", LODA)
def test_every_loda_method_runs_end_to_end_on_tiny_gpt2_glue(name, cfg_factory, glue_dir):
    rec = run(
        cfg_factory(
            "model=tiny_gpt2",
            "task=glue/rte",
            f"task.data_dir={glue_dir}",
            "task.max_train_samples=64",
            "task.max_eval_samples=64",
            "train.epochs=1",
            f"method={name}",
            *TINY.get(name, ()),
        )
    )
    assert rec["status"] == "success" and rec["method"] == name
    assert rec["params"]["method_trainable"] == 4 * (2 * 4 * 32 + 2 * 16)  # 2 layers × (q, v)
    assert len(rec["diagnostics"]["modules"]) == 4
    assert ("base_approx" in rec["params"]) == name.startswith(("r_", "s_"))
    folder = rec["artifacts"]
    saved = load_file(f"{folder}/loda/adapter.safetensors")
    assert any("loda_f1" in k for k in saved)


@pytest.mark.slow
def test_loda_with_reg_weight_is_a_recorded_combination(cfg_factory, glue_dir):
    common = (
        "model=tiny_gpt2",
        "task=glue/rte",
        f"task.data_dir={glue_dir}",
        "task.max_train_samples=32",
        "task.max_eval_samples=32",
        "train.epochs=1",
        "method=loda",
    )
    rec = run(cfg_factory(*common, "method.reg_weight=0.1"))
    assert rec["config"]["method"]["reg_weight"] == 0.1
    assert rec["metrics"]["history"][0]["train_reg"] > 0
    assert METHODS[rec["method"]] is loda_mod


# --- Appendix A.1 energy curves -----------------------------------------------------------------


@pytest.mark.slow
def test_energy_curves_from_weights_alone_match_the_recorded_energies(tmp_path):
    from scripts.energy_curves import main

    out = main(["--model", "tiny_gpt2", "--out", str(tmp_path / "e.json")])
    assert json.loads((tmp_path / "e.json").read_text()) == out
    assert out["tensor"] == "transformer.h.0.attn.c_attn.weight" and out["shape"] == [32, 96]
    svd, mag = out["svd"]["energy"], out["magnitude"]["energy"]
    assert len(svd) == 32 and svd[-1] == pytest.approx(1.0, abs=1e-12)
    assert all(a <= b for a, b in zip(svd, svd[1:])) and all(a <= b for a, b in zip(mag, mag[1:]))
    # the top R directions / largest entries carry at least their share of the energy
    assert all(e >= (r + 1) / 32 - 1e-12 for r, e in enumerate(svd))
    assert all(e >= f - 1e-12 for f, e in zip(out["magnitude"]["fraction"], mag))
    # the same numbers R-/S-LoDA record for block 0 of the same model
    w = tiny_gpt2_from_conf().transformer.h[0].attn.c_attn.weight
    assert svd[7] == pytest.approx(loda_mod.approximate(w, "svd", rank=8)[1]["energy"], rel=1e-12)
    keep = loda_mod.approximate(w, "sparse", keep=0.4)[1]["energy"]
    assert out["paper_points"]["magnitude"]["0.4"] == pytest.approx(keep, rel=1e-12)
    # the same curves from a saved checkpoint (HF layout)
    tiny_gpt2_from_conf().save_pretrained(tmp_path / "ckpt")
    again = main(["--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "f.json")])
    assert again["svd"] == out["svd"] and again["magnitude"] == out["magnitude"]


def tiny_gpt2_from_conf():
    from models import hf
    from tests.conftest import make_cfg

    cfg = make_cfg("model=tiny_gpt2")
    return hf.build_model(cfg.model, None, hf.build_tokenizer(cfg.model, []))


# --- baselines of the LoDA table: Adapter^H, Adapter^L, PreLayer ---------------------------------


@pytest.mark.parametrize(
    "name, over, count",
    [
        ("adapter_l", ("method.bottleneck=6",), 368_784),  # 0.37M
        ("adapter_l", ("method.bottleneck=224",), 11_089_152),  # 11.09M
        ("adapter_h", ("method.bottleneck=112",), 11_064_576),  # 11.06M (quoted 11.09M: no integer m)
        ("prefix", ("method.num_virtual_tokens=7",), 344_064),  # 0.34M (quoted 0.35M: no integer p)
    ],
)
def test_gpt2_medium_baseline_counts(name, over, count):
    method = apply(gpt2_medium_meta(), name, over=over)
    counts = method.param_counts()
    assert counts["method_trainable"] == counts["method_inference"] == count
    assert counts["head"] == 2 * 1024
    m = int(over[0].split("=")[1])  # Hu et al.'s formula L_adpt·(2dm + m + d) + 2·L_LN·d; prefix p·2·L·d
    formula = {
        "adapter_l": 24 * (2 * 1024 * m + m + 1024) + 2 * 24 * 1024,
        "adapter_h": 48 * (2 * 1024 * m + m + 1024),
        "prefix": m * 2 * 24 * 1024,
    }
    assert formula[name] == count


def test_yaml_defaults_are_the_table_sizes():
    assert method_cfg("adapter_l").bottleneck == 6 and method_cfg("adapter_h").bottleneck == 112
    assert method_cfg("prefix").num_virtual_tokens == 7


@pytest.mark.parametrize("name", ["adapter_h", "adapter_l"])
def test_adapters_are_identity_at_init_and_follow_the_equation(name, batch):
    model = tiny_gpt2()
    before = model(**batch).logits
    method = apply(model, name, over=("method.bottleneck=5",))
    assert torch.equal(model(**batch).logits, before)
    hooked = model.transformer.h[1] if name == "adapter_l" else model.transformer.h[1].mlp.c_proj
    ad = hooked.adapter
    with torch.no_grad():
        ad.up.weight.normal_()
        ad.up.bias.normal_()
    x = torch.randn(2, 4, 32) if name == "adapter_l" else torch.randn(2, 4, 128)
    with torch.no_grad():
        hooks = dict(hooked._forward_hooks)
        hooked._forward_hooks.clear()  # the bare module, to compare with
        h = hooked(x)
        hooked._forward_hooks.update(hooks)
        n = F.layer_norm(h, (32,), ad.norm.weight, ad.norm.bias) if name == "adapter_l" else h
        want = h + F.linear(torch.relu(F.linear(n, ad.down.weight, ad.down.bias)), ad.up.weight, ad.up.bias)
        torch.testing.assert_close(hooked(x), want)
    assert (model(**batch).logits - before).abs().max() > 1e-4
    assert len([m for m in model.modules() if m.__class__.__name__ == "Bottleneck"]) == (
        2 if name == "adapter_l" else 4
    )
    assert method.extra_counts()["adapters"] == (2 if name == "adapter_l" else 4)


def test_prefix_trains_key_value_prefixes_through_peft(batch):
    model = tiny_gpt2()
    before = model(**batch).logits
    method = apply(model, "prefix", over=("method.num_virtual_tokens=3",))
    peft_model = method.model
    enc = peft_model.prompt_encoder["default"].embedding.weight
    assert enc.shape == (3, 2 * 2 * 32) and enc.requires_grad
    out = peft_model(**batch, labels=torch.tensor([0, 1, 0]))
    assert (out.logits - before).abs().max() > 1e-4  # the prefix enters every layer's attention
    out.loss.backward()
    assert enc.grad is not None and enc.grad.abs().sum() > 0
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable == {"prompt_encoder.default.embedding.weight", *method.head}
    assert method.head == ["base_model.score.modules_to_save.default.weight"]


def test_prefix_on_a_causal_lm_trains_and_beam_decodes():
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, vocab_size=101))
    method = apply(lm, "prefix", heads=(), over=("method.num_virtual_tokens=3",))
    assert method.param_counts()["method_trainable"] == 3 * 2 * 2 * 32 and method.head == []
    x = torch.randint(1, 101, (2, 5), generator=torch.Generator().manual_seed(0))
    out = method.model(input_ids=x, attention_mask=torch.ones_like(x), labels=x)
    out.loss.backward()
    assert method.model.prompt_encoder["default"].embedding.weight.grad.abs().sum() > 0
    gen = method.model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=4, num_beams=2)
    assert gen.shape == (2, 9)


def test_bad_baseline_values_raise_named_errors():
    for name, over, message in [
        ("adapter_h", "method.bottleneck=0", "bottleneck"),
        ("adapter_l", "method.activation=swish", "activation"),
        ("prefix", "method.num_virtual_tokens=0", "num_virtual_tokens"),
    ]:
        with pytest.raises(ConfigError, match=message):
            method_cfg(name, over)
    with pytest.raises(ConfigError, match="set method.modules to this model's module names"):
        apply(nn.Sequential(nn.Linear(4, 4)), "adapter_l", heads=())
    with pytest.raises(ConfigError, match="no PEFT task type"):
        apply(nn.Sequential(nn.Linear(4, 4)), "prefix", heads=())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["adapter_h", "adapter_l", "prefix"])
def test_baselines_run_end_to_end_on_tiny_gpt2_glue(name, cfg_factory, glue_dir):
    rec = run(
        cfg_factory(
            "model=tiny_gpt2",
            "task=glue/rte",
            f"task.data_dir={glue_dir}",
            "task.max_train_samples=64",
            "task.max_eval_samples=64",
            "train.epochs=1",
            f"method={name}",
        )
    )
    assert rec["status"] == "success" and rec["params"]["method_trainable"] > 0
    assert "diagnostics" not in rec


@pytest.mark.slow
@pytest.mark.parametrize("name", ["loda", "loda_plus"])
def test_loda_learns_end_to_end_on_the_synthetic_fnn(name, cfg_factory):
    """Measured (seed 0): loda's train loss 4.20 -> 1.63 over 4 epochs (lora: 4.61 -> 1.67)."""
    rec = run(cfg_factory(f"method={name}", "task.n_train=512", "task.n_test=256", "train.epochs=4"))
    history = rec["metrics"]["history"]
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    assert rec["params"]["method_trainable"] == 4 * (2 * 4 * 32 + 2 * 16)  # r = 4 on four 32×32 layers
