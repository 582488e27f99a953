"""Baselines: AdaLoRA (PEFT), SoRA, partial fine-tuning; PEFT-format export and merge; counts."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

from adapters import METHODS, export, partial_ft
from adapters.base import Plan
from adapters.sora import SoraLinear
from core import ConfigError
from models import hf as hf_builder
from runners.config import heads_for, typed
from runners.train import run
from tests.conftest import make_cfg

PLAIN_LORA = ["lora", "r_lora", "gm_lora", "rm_lora", "sora"]
WHOLE_MODULE = {"sora", "adalora"}


def method_cfg(name, model="tiny_deberta", **over):
    cfg = make_cfg(f"method={name}", f"model={model}", *[f"method.{k}={v}" for k, v in over.items()])
    return typed(METHODS[cfg.method.name].Config, cfg.method, "method")


def plan(total: int) -> Plan:
    return Plan(
        total_steps=total, steps_per_epoch=total, epochs=1, batch_size=8, num_processes=1, train_examples=8
    )


@pytest.fixture(params=["tiny_deberta", "tiny_gpt2"])
def parts(request, deberta_parts, gpt2_parts):
    return deberta_parts if request.param == "tiny_deberta" else gpt2_parts


def build(parts):
    model_cfg, head, tok, *_ = parts
    return hf_builder.build_model(model_cfg, head, tok).eval()


def adapt(parts, name, seed=0, **over):
    """A fresh tiny model with method `name` applied (model YAML targets and heads)."""
    model_cfg, head, *_ = parts
    model = build(parts)
    cfg = method_cfg(name, model_cfg.name, **over)
    m = dict(model_cfg)
    # SoRA and AdaLoRA adapt whole modules: on GPT-2 they run with model.placement=attn
    whole = name in WHOLE_MODULE and "placements" in m
    targets = list(m["placements"]["attn"] if whole else m["target_modules"])
    heads = heads_for(m, head)
    return METHODS[cfg.name].apply(model, cfg, targets, heads, torch.Generator().manual_seed(seed))


def logits(model, parts):
    with torch.no_grad():
        return model(**parts[3]).logits


def train_steps(method, parts, steps, lr=1e-2, start=1, optimizer=None):
    """The runner's step order: backward, before_step, opt.step, after_step, zero_grad."""
    model, batch, labels = method.model, parts[3], parts[4]
    model.train()
    if optimizer is None:
        optimizer = torch.optim.AdamW([p for _, p in method.optimizer_parameters()], lr=lr, weight_decay=0.0)
    for step in range(start, start + steps):
        loss = model(**batch, labels=labels).loss
        extra = method.extra_loss()
        (loss if extra is None else loss + extra).backward()
        method.before_step(optimizer, step)
        optimizer.step()
        method.after_step(optimizer, step)
        model.zero_grad(set_to_none=True)
    model.eval()
    return optimizer


def perturb(method, std=0.3, seed=1):
    """Nonzero B (and head) so that exports and merges are tested on a real ΔW."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in method.lowrank.values():
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * std)
        params = dict(method.model.named_parameters())
        for n in method.head:
            params[n].add_(torch.randn(params[n].shape, generator=g) * 0.1)


# --- SoRA --------------------------------------------------------------------------------------


def test_sora_forward_is_gated_lora_and_gate_step_is_official_sparse_adamw():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    model = torch.nn.Sequential(base)
    cfg = typed(METHODS["sora"].Config, {"rank": 4, "alpha": 8.0, "sparse_lambda": 0.3, "gate_lr": 0.1}, "m")
    method = METHODS["sora"].apply(model, cfg, ["0"], [], torch.Generator().manual_seed(0))
    m = method.lowrank["0"]
    assert isinstance(m, SoraLinear) and method.own_params == [m.sora_gate]
    assert all(p is not m.sora_gate for _, p in method.optimizer_parameters())
    with torch.no_grad():
        m.lora_B.normal_()
    x = torch.randn(3, 6)
    a, b, g = m.lora_A.detach(), m.lora_B.detach(), m.sora_gate.detach().clone()
    expected = base(x) + 2.0 * ((x @ a.T) * g) @ b.T  # s = 8 / 4
    torch.testing.assert_close(model(x), expected)
    torch.testing.assert_close(m.delta_weight(), 2.0 * b @ torch.diag(g) @ a)
    # one gate step == HF AdamW's first step (m̂/(√v̂ + eps) with the bias-corrected step size, eps
    # 1e-6), then SparseAdamW's three masks with ξ itself (tests/test_sora.py tests the rule in depth)
    model(x).pow(2).sum().backward()
    grad = m.sora_gate.grad.clone()
    p = g - 0.1 * (0.1 * grad) / ((0.001 * grad**2).sqrt() + 1e-6) * (0.001**0.5 / 0.1)
    p[p > 0.3] -= 0.3
    p[p < -0.3] += 0.3
    p[p.abs() < 0.3] = 0.0
    method.after_step(None, 1)
    torch.testing.assert_close(m.sora_gate.detach(), p)


def test_sora_xi_schedule_and_l1_term():
    model = torch.nn.Sequential(torch.nn.Linear(6, 5))
    over = {"rank": 4, "sparse_lambda": 0.01, "xi_schedule": "linear", "xi_max": 0.05, "xi_stages": 5}
    cfg = typed(METHODS["sora"].Config, {**over, "l1_weight": 0.5}, "m")
    method = METHODS["sora"].apply(model, cfg, ["0"], [], torch.Generator().manual_seed(0))
    hook = method.hooks[0]
    hook.setup(plan(100))
    assert [hook.xi(s) for s in (1, 20, 21, 100)] == pytest.approx([0.01, 0.01, 0.02, 0.05])
    g = method.lowrank["0"].sora_gate
    torch.testing.assert_close(method.extra_loss(), 0.5 * g.abs().sum() / 4)


def test_sora_removal_keeps_outputs_and_counts(parts):
    method = adapt(parts, "sora", rank=8, sparse_lambda=0.0)
    perturb(method)
    with torch.no_grad():  # zero some gates by hand: 3 of 8 in the first module, all in the second
        mods = list(method.lowrank.values())
        mods[0].sora_gate[[1, 4, 6]] = 0.0
        mods[1].sora_gate.zero_()
    before = logits(method.model, parts)
    counts_t = method.param_counts()
    method.finish()
    torch.testing.assert_close(logits(method.model, parts), before, rtol=1e-5, atol=1e-6)
    names = list(method.extra_counts()["rank_per_module"])
    first = method.model.get_submodule(names[0])
    assert type(first).__name__ == "LowRankLinear" and first.lora_A.shape[0] == first.rank == 5
    assert names[1] not in method.lowrank  # rank 0: the plain base layer is back
    assert not any("sora_gate" in n for n, _ in method.model.named_parameters())
    extra = method.extra_counts()
    assert extra["rank_per_module"][names[0]] == 5 and extra["rank_per_module"][names[1]] == 0
    shapes = {n: (m.lora_A.shape[1] + m.lora_B.shape[0]) for n, m in method.lowrank.items()}
    assert method.param_counts()["method_inference"] == sum(
        extra["rank_per_module"][n] * shapes[n] for n in shapes
    )
    gates = sum(extra["initial_rank_per_module"].values())
    assert extra["gate_sparsity"] == pytest.approx(1 - sum(extra["rank_per_module"].values()) / gates)
    assert counts_t["trainable"] > method.param_counts()["inference"]


def test_sora_combines_with_rm_lora_reg_and_mask(parts):
    method = adapt(parts, "sora", rank=4, reg_weight=0.1, mask_fraction=0.5)
    kinds = {type(t).__name__ for t in method.loss_terms} | {type(h).__name__ for h in method.hooks}
    assert kinds >= {"OrthogonalityRegularizer", "DirectionMask", "GateStep"}
    train_steps(method, parts, 2)  # masks read lora_A / lora_B through the wrapper


# --- AdaLoRA -----------------------------------------------------------------------------------


def test_adalora_orthogonal_term_is_in_the_backpropagated_loss(parts):
    """PEFT adds w·mean‖G−I‖_F only in PeftModel.forward; the runner calls the model directly, so
    the method's loss term must be exactly PEFT's term, and its gradient must reach P and Q."""
    torch.manual_seed(0)
    method = adapt(parts, "adalora", init_r=4, target_r=2, tinit=1, tfinal=1)
    assert method.hooks[0].peft_config.orth_reg_weight == 0.1
    model, batch, labels = method.model, parts[3], parts[4]
    peft_model = method.hooks[0].peft_model
    plain = model(**batch, labels=labels).loss
    with_orth = peft_model.base_model(**batch, labels=labels).loss  # AdaLoraModel.forward adds it
    extra = method.extra_loss()
    assert float(extra.detach()) > 0.01
    torch.testing.assert_close(plain + extra, with_orth)
    ours = torch.autograd.grad(
        plain + extra, [p for _, p in method.optimizer_parameters()], retain_graph=True
    )
    peft = torch.autograd.grad(
        peft_model.base_model(**batch, labels=labels).loss, [p for _, p in method.optimizer_parameters()]
    )
    for a, b in zip(ours, peft, strict=True):
        torch.testing.assert_close(a, b)
    qs = [n for n, _ in method.optimizer_parameters() if "lora_A" in n]
    reg_grad = torch.autograd.grad(extra, [dict(model.named_parameters())[qs[0]]])[0]
    assert reg_grad.abs().sum() > 0


def test_adalora_reaches_target_budget_prunes_and_keeps_outputs(parts):
    torch.manual_seed(0)
    method = adapt(parts, "adalora", init_r=4, target_r=2, tinit=2, tfinal=2, deltaT=1)
    modules = len(method.lowrank)
    counts_t = method.param_counts()
    shapes = {n: v.layer.in_features + v.layer.out_features for n, v in method.lowrank.items()}
    assert counts_t["method_trainable"] == sum(4 * (s + 1) for s in shapes.values())
    method.setup(plan(12))
    assert method.hooks[0].peft_config.total_step == 12
    train_steps(method, parts, 12)
    extra = method.extra_counts()
    assert extra["rank_budget"] == extra["target_budget"] == 2 * modules
    ranks = extra["rank_per_module"]
    before = logits(method.model, parts)
    method.finish()
    torch.testing.assert_close(logits(method.model, parts), before, rtol=1e-5, atol=1e-6)
    for n, v in method.lowrank.items():  # physically pruned to the kept triplets
        assert v.layer.lora_A["default"].shape[0] == ranks[n] == v.kept()
    assert method.param_counts()["method_inference"] == sum(k * (shapes[n] + 1) for n, k in ranks.items())
    assert method.param_counts()["method_inference"] < counts_t["method_trainable"]


@pytest.mark.slow
def test_adalora_resume_continues_exactly(parts):
    """4 steps, checkpoint (params, optimizer, hook state), fresh model, load, 3 more steps == 7 steps
    in one go: same allocator EMAs and rank pattern; then the same weights at the end of the run."""
    over = {"init_r": 4, "target_r": 2, "tinit": 2, "tfinal": 2, "deltaT": 1}

    def fresh():
        torch.manual_seed(0)
        method = adapt(parts, "adalora", **over)
        method.setup(plan(10))
        return method

    full = fresh()
    opt_full = train_steps(full, parts, 7)
    half = fresh()
    opt = train_steps(half, parts, 4)
    saved = (
        {n: p.detach().clone() for n, p in half.model.named_parameters()},
        copy.deepcopy(opt.state_dict()),
        copy.deepcopy(half.state_dict()),
    )
    resumed = fresh()
    with torch.no_grad():
        for n, p in resumed.model.named_parameters():
            p.copy_(saved[0][n])
    opt2 = torch.optim.AdamW([p for _, p in resumed.optimizer_parameters()], lr=1e-2, weight_decay=0.0)
    opt2.load_state_dict(saved[1])
    resumed.load_state_dict(saved[2])
    train_steps(resumed, parts, 3, start=5, optimizer=opt2)
    # step 7, still budgeting: the allocator's EMAs agree exactly
    want, got = full.state_dict()[0], resumed.state_dict()[0]
    assert (
        want["rank_pattern"] == got["rank_pattern"]
        and want["exp_avg_ipt"].keys() == got["exp_avg_ipt"].keys()
    )
    for key in ("exp_avg_ipt", "exp_avg_unc"):
        for n in want[key]:
            torch.testing.assert_close(want[key][n], got[key][n], rtol=0, atol=0, msg=n)
    train_steps(full, parts, 3, start=8, optimizer=opt_full)
    train_steps(resumed, parts, 3, start=8, optimizer=opt2)
    a, b = dict(full.model.named_parameters()), dict(resumed.model.named_parameters())
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=0, atol=0, msg=n)
    assert full.extra_counts()["rank_per_module"] == resumed.extra_counts()["rank_per_module"]
    # without the allocator state the EMAs restart: they differ (the test can fail)
    blank = fresh()
    with torch.no_grad():
        for n, p in blank.model.named_parameters():
            p.copy_(saved[0][n])
    opt3 = torch.optim.AdamW([p for _, p in blank.optimizer_parameters()], lr=1e-2, weight_decay=0.0)
    opt3.load_state_dict(saved[1])
    train_steps(blank, parts, 3, start=5, optimizer=opt3)
    other = blank.state_dict()[0]["exp_avg_ipt"]
    assert any(not torch.equal(want["exp_avg_ipt"][n], other[n]) for n in other)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"target_r": 16, "init_r": 8}, "target_r"),
        ({"reg_weight": 0.1}, "PΛQ"),
        ({"mask_fraction": 0.5}, "PΛQ"),
        ({"orth_reg_weight": -1}, "orth_reg_weight"),
    ],
)
def test_adalora_bad_config_is_one_line(over, message):
    with pytest.raises(ConfigError, match=message) as e:
        method_cfg("adalora", **over)
    assert "\n" not in str(e.value)


def test_adalora_schedule_too_long_for_the_plan(parts):
    # issue 25: schedule=fixed keeps the old refusal; the default (fit) shrinks the schedule instead
    method = adapt(parts, "adalora", init_r=4, target_r=2, tinit=50, tfinal=50, schedule="fixed")
    with pytest.raises(ConfigError, match="tinit < total_steps - tfinal"):
        method.setup(plan(60))
    method = adapt(parts, "adalora", init_r=4, target_r=2, tinit=50, tfinal=50)
    method.setup(plan(60))  # fit: 50 / 50 -> 15 / 15 (half the run), deltaT 10 kept
    counts = method.extra_counts()
    assert (counts["tinit"], counts["tfinal"], counts["deltaT"], counts["total_step"]) == (15, 15, 10, 60)


# --- partial fine-tuning -----------------------------------------------------------------------


def test_ft_qv_gpt2_split_trains_q_and_v_blocks_only(gpt2_parts):
    parts = gpt2_parts
    model = build(parts)
    before_out = logits(model, parts)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = method_cfg("ft_qv", "tiny_gpt2")
    method = partial_ft.apply(model, cfg, [], heads_for(dict(parts[0]), parts[1]), torch.Generator())
    torch.testing.assert_close(logits(model, parts), before_out, rtol=0, atol=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"transformer.h.{i}.attn.c_attn.weight__part{k}" for i in (0, 1) for k in (0, 2)} | {
        "score.weight"
    }
    d = 32
    assert method.param_counts()["method_trainable"] == 2 * 2 * d * d
    assert method.param_counts()["total"] == sum(p.numel() for p in base.values())
    opt = torch.optim.AdamW([p for _, p in method.optimizer_parameters()], lr=1e-2, weight_decay=0.1)
    train_steps(method, parts, 2, optimizer=opt)
    partial_ft.merge_splits(model)
    after = dict(model.named_parameters())
    assert set(after) == set(base)
    w0, w1 = base["transformer.h.0.attn.c_attn.weight"], after["transformer.h.0.attn.c_attn.weight"]
    assert torch.equal(w0[:, d : 2 * d], w1[:, d : 2 * d])  # k block: not even weight decay moved it
    assert not torch.equal(w0[:, :d], w1[:, :d]) and not torch.equal(w0[:, 2 * d :], w1[:, 2 * d :])
    assert torch.equal(base["transformer.h.0.attn.c_attn.bias"], after["transformer.h.0.attn.c_attn.bias"])


def test_partial_ft_deberta_patterns(deberta_parts):
    parts = deberta_parts
    for name, expect in (
        ("ft_qv", lambda n: n.endswith(("query_proj.weight", "value_proj.weight"))),
        ("ft_top2", lambda n: n.startswith("deberta.encoder.layer.")),
    ):
        model = build(parts)
        cfg = method_cfg(name, "tiny_deberta")
        method = partial_ft.apply(model, cfg, [], heads_for(dict(parts[0]), parts[1]), torch.Generator())
        trained = {n for n, p in model.named_parameters() if p.requires_grad} - set(method.head)
        assert trained == {n for n, _ in model.named_parameters() if expect(n)}


def test_partial_ft_bad_patterns_fail_with_one_line():
    with pytest.raises(ConfigError, match="matches no parameter"):
        cfg = typed(partial_ft.Config, {"name": "ft_qv", "patterns": ["nothing\\..*"]}, "method")
        partial_ft.apply(torch.nn.Sequential(torch.nn.Linear(2, 2)), cfg, [], [], torch.Generator())
    with pytest.raises(ConfigError, match="partial_ft.qv"):
        method_cfg("ft_qv", "fnn")
    with pytest.raises(ConfigError, match="parts >= 2"):
        typed(partial_ft.Config, {"patterns": [{"param": "x", "parts": 1, "keep": [0]}]}, "method")


# --- parameter counts on real shapes (meta device) ---------------------------------------------


def deberta_v3_base_meta():
    config = AutoConfig.for_model(
        "deberta-v2",
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        vocab_size=128100,
        relative_attention=True,
        position_buckets=256,
        share_att_key=True,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        num_labels=2,
    )
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(config)


ADAPTER_PER_RANK = 12 * (4 * (768 + 768) + (768 + 3072) + (3072 + 768))  # Σ (d_in + d_out) = 165,888
DEBERTA_HEAD = 768 * 768 + 768 + 768 * 2 + 2  # pooler + classifier = 592,130


@pytest.mark.parametrize(
    ("name", "over", "trainable", "paper_t"),
    [
        # RM-LoRA Table 1: AdaLoRA # T 1.92M (8->4, R=4 row) and 3.25M (16->8, R=8 row); P, Q + Λ + head
        ("adalora", {"init_r": 8, "target_r": 4}, 8 * ADAPTER_PER_RANK + 8 * 72 + DEBERTA_HEAD, 1.92),
        ("adalora", {"init_r": 16, "target_r": 8}, 16 * ADAPTER_PER_RANK + 16 * 72 + DEBERTA_HEAD, 3.25),
        # SoRA # T 1.92M (r=8) / 3.25M (r=16): A, B + gates + head
        ("sora", {"rank": 8}, 8 * ADAPTER_PER_RANK + 8 * 72 + DEBERTA_HEAD, 1.92),
        ("sora", {"rank": 16}, 16 * ADAPTER_PER_RANK + 16 * 72 + DEBERTA_HEAD, 3.25),
        # LoRA R=4 / R=8: 1.26M / 1.92M with head, 0.67M / 1.33M without (Tables 1, 2)
        ("lora", {"rank": 4}, 4 * ADAPTER_PER_RANK + DEBERTA_HEAD, 1.26),
        ("lora", {"rank": 8}, 8 * ADAPTER_PER_RANK + DEBERTA_HEAD, 1.92),
    ],
)
def test_deberta_v3_base_trainable_counts_match_rm_lora_tables(name, over, trainable, paper_t):
    model = deberta_v3_base_meta()
    m = make_cfg("model=deberta_v3_base").model
    cfg = method_cfg(name, "deberta_v3_base", **over)
    method = METHODS[name].apply(
        model,
        cfg,
        list(m.target_modules),
        heads_for(OmegaConf.to_container(m, resolve=True), {"type": "sequence_classification"}),
        torch.Generator().manual_seed(0),
    )
    counts = method.param_counts()
    assert counts["head"] == DEBERTA_HEAD
    assert counts["trainable"] == trainable
    assert round(counts["trainable"] / 1e6, 2) == paper_t
    if name == "lora":  # Table 2 (SQuAD) prints 0.67M / 1.33M: adapters + the QA head 768·2 + 2
        assert round((counts["method_trainable"] + 768 * 2 + 2) / 1e6, 2) == {4: 0.67, 8: 1.33}[over["rank"]]


def gpt2_medium_meta():
    config = AutoConfig.for_model("gpt2", n_embd=1024, n_layer=24, n_head=16, n_positions=1024)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize(("name", "count"), [("ft_qv", 50_331_648), ("ft_top2", 25_192_448)])
def test_gpt2_medium_partial_ft_counts_match_loda_table1(name, count):
    """FT^{Wq,Wv}: 2·1024²·24 = 50,331,648 = 48.00·2^20 ("48.00M"); FT^Top2: blocks 22, 23 = 25.19M."""
    model = gpt2_medium_meta()
    cfg = method_cfg(name, "gpt2_medium")
    method = partial_ft.apply(model, cfg, [], [], torch.Generator())
    counts = method.param_counts()
    assert counts["trainable"] == counts["method_trainable"] == count
    assert counts["total"] == sum(p.numel() for p in gpt2_medium_meta().parameters())
    if name == "ft_qv":
        assert count / 2**20 == 48.0


# --- export (PEFT format) and merge ------------------------------------------------------------


@pytest.mark.parametrize("name", PLAIN_LORA)
def test_peft_export_round_trip_same_logits(name, parts, tmp_path):
    torch.manual_seed(0)
    over = {"rank": 4} | ({"sparse_lambda": 0.0} if name == "sora" else {})
    method = adapt(parts, name, **over)
    perturb(method)
    if name == "sora":
        with torch.no_grad():  # per-module surviving ranks differ: rank_pattern / alpha_pattern
            for i, m in enumerate(method.lowrank.values()):
                m.sora_gate[: i % 3] = 0.0
    method.finish()
    ours = logits(method.model, parts)
    method.exporter(tmp_path)
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["modules_to_save"]
    loaded = PeftModel.from_pretrained(build(parts), str(tmp_path / "peft")).eval()
    theirs = logits(loaded, parts)
    assert (ours - build(parts)(**parts[3]).logits).abs().max() > 1e-3  # the adapter matters
    diff = float((theirs - ours).abs().max())
    print(f"PEFT round trip {name} {parts[0].name}: max |Δlogit| = {diff:.3g}")
    assert diff < 1e-5


def test_adalora_peft_export_round_trip(parts, tmp_path):
    torch.manual_seed(0)
    method = adapt(parts, "adalora", init_r=4, target_r=2, tinit=1, tfinal=1, deltaT=1)
    method.setup(plan(6))
    train_steps(method, parts, 6, lr=5e-2)
    method.finish()
    ours = logits(method.model, parts)
    method.exporter(tmp_path)
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["peft_type"] == "ADALORA" and config["rank_pattern"]
    loaded = PeftModel.from_pretrained(build(parts), str(tmp_path / "peft")).eval()
    diff = float((logits(loaded, parts) - ours).abs().max())
    print(f"PEFT round trip adalora {parts[0].name}: max |Δlogit| = {diff:.3g}")
    assert diff < 1e-5


@pytest.mark.parametrize("name", ["lora", "rm_lora", "sora", "adalora"])
def test_merge_equals_unmerged(name, parts):
    torch.manual_seed(0)
    over = {"init_r": 4, "target_r": 2, "tinit": 1, "tfinal": 1} if name == "adalora" else {"rank": 4}
    method = adapt(parts, name, **over)
    if name == "adalora":
        method.setup(plan(4))
        train_steps(method, parts, 4, lr=5e-2)
    else:
        perturb(method)
    method.finish()
    unmerged = logits(method.model, parts)
    model = export.merge(method)
    assert not any("lora_" in n for n, _ in model.named_parameters())
    torch.testing.assert_close(logits(model, parts), unmerged, rtol=1e-4, atol=1e-5)


def test_export_refuses_sora_before_removal(parts, tmp_path):
    method = adapt(parts, "sora", rank=4)
    with pytest.raises(ConfigError, match="finish"):
        export.peft_lora(method, tmp_path)


# --- end to end --------------------------------------------------------------------------------

E2E = (
    "task=glue/rte",
    "task.max_train_samples=64",
    "task.max_eval_samples=32",
    "train.epochs=2",
    "train.batch_size=8",
)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny_deberta", "tiny_gpt2"])
def test_baselines_run_end_to_end(model, cfg_factory, glue_dir):
    data = f"task.data_dir={glue_dir}"
    whole = ("model.placement=attn",) if model == "tiny_gpt2" else ()  # SoRA / AdaLoRA: whole modules
    ada = ("method.init_r=4", "method.target_r=2", "method.tinit=2", "method.tfinal=2", "method.deltaT=1")
    recs = {
        "adalora": run(cfg_factory("method=adalora", f"model={model}", data, *whole, *E2E, *ada)),
        "sora": run(
            cfg_factory("method=sora", f"model={model}", data, *whole, *E2E, "method.sparse_lambda=0.1")
        ),
        "ft_qv": run(cfg_factory("method=ft_qv", f"model={model}", data, *E2E)),
        "ft_top2": run(cfg_factory("method=ft_top2", f"model={model}", data, *E2E)),
    }
    for name, rec in recs.items():
        assert rec["status"] == "success", name
        assert rec["params"]["convention"]
    a = recs["adalora"]["params"]
    assert a["rank_budget"] == a["target_budget"] and a["pruned"] and a["inference"] < a["trainable"]
    s = recs["sora"]["params"]
    assert s["gates_removed"] and 0 < s["gate_sparsity"] < 1 and s["inference"] < s["trainable"]
    for name in ("adalora", "sora"):
        folder = recs[name]["artifacts"]
        assert (Path(folder) / "peft" / "adapter_model.safetensors").is_file()
    print(
        {
            n: {k: r["params"].get(k) for k in ("trainable", "inference", "rank_budget", "gate_sparsity")}
            for n, r in recs.items()
        }
    )


FNN = ("task.n_train=512", "task.n_test=256", "train.epochs=4")


@pytest.mark.parametrize(
    ("name", "over"),
    [
        ("adalora", ("method.init_r=8", "method.target_r=4", "method.tinit=4", "method.tfinal=4")),
        ("sora", ("method.rank=8", "method.sparse_lambda=0.02")),
        ("ft_qv", ("method.patterns=['layers\\.(1|2)\\.weight']", "train.lr=1e-2")),
    ],
)
def test_baselines_learn_the_synthetic_task(name, over, cfg_factory):
    rec = run(cfg_factory(f"method={name}", *FNN, *over))
    history = rec["metrics"]["history"]
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    p = rec["params"]
    if name == "adalora":
        assert p["rank_budget"] == p["target_budget"] == 4 * 4 and p["pruned"]
        assert p["inference"] < p["trainable"]  # pruned triplets
    elif name == "sora":
        assert 0 < p["gate_sparsity"] < 1 and p["gates_removed"]
        assert p["inference"] < p["trainable"]  # removed ranks
    else:  # partial FT by a pattern: exactly the chosen weights trained and were saved
        assert set(load_file(rec["weights"])) == {"layers.1.weight", "layers.2.weight"}
        assert p["trainable"] == p["inference"] == 2 * 32 * 32


@pytest.mark.slow
def test_adalora_run_interrupted_and_resumed_equals_uninterrupted(cfg_factory, tmp_path, monkeypatch):
    """The runner's checkpoint carries the RankAllocator's state: crash after step 13, rerun resumes
    from the step-12 checkpoint and ends exactly where an uninterrupted run ends. (An integration
    check of the runner's checkpoint path; that the allocator's EMAs themselves must be restored is
    shown by test_adalora_resume_continues_exactly, which fails without them.)"""
    from adapters import adalora
    from runners.train import RunStopped

    args = (
        "method=adalora",
        *FNN,
        "method.init_r=8",
        "method.target_r=4",
        "method.tinit=4",
        "method.tfinal=4",
        "method.deltaT=2",
        "train.checkpoint_every=12",
    )
    whole = run(make_cfg(*args, results_dir=tmp_path / "whole"))
    original = adalora.RankBudget.after_step

    def crash(self, optimizer, step):
        if step == 13:
            raise KeyboardInterrupt("simulated crash")
        original(self, optimizer, step)

    monkeypatch.setattr(adalora.RankBudget, "after_step", crash)
    with pytest.raises((KeyboardInterrupt, RunStopped)):
        run(cfg_factory(*args))
    monkeypatch.setattr(adalora.RankBudget, "after_step", original)
    resumed = run(cfg_factory(*args))
    assert resumed["resumed_from_step"] == 12
    assert resumed["metrics"]["final"] == whole["metrics"]["final"]
    assert resumed["params"]["rank_per_module"] == whole["params"]["rank_per_module"]
    a, b = load_file(whole["weights"]), load_file(resumed["weights"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("name", "over", "per_rank_extra"),
    [("lora", {"rank": 4}, 0), ("sora", {"rank": 8}, 1), ("adalora", {"init_r": 8, "target_r": 4}, 1)],
)
def test_gpt2_medium_lowrank_counts_standard_placement(name, over, per_rank_extra):
    """GPT-2 medium, adapters on c_attn, attn c_proj, c_fc, mlp c_proj (`model.placement=all`):
    Σ (d_in + d_out) = (1024+3072) + (1024+1024) + (1024+4096) + (4096+1024) = 16,384 per layer."""
    model = gpt2_medium_meta()
    m = make_cfg("model=gpt2_medium", "model.placement=all").model  # every Conv1D, whole modules
    cfg = method_cfg(name, "gpt2_medium", **over)
    method = METHODS[name].apply(model, cfg, list(m.target_modules), [], torch.Generator().manual_seed(0))
    r = over.get("rank", over.get("init_r"))
    assert method.param_counts()["trainable"] == 24 * r * (16_384 + 4 * per_rank_extra)


def test_sora_xi_per_task_from_table4_and_negative_xi_refused():
    assert method_cfg("sora", "tiny_deberta").sparse_lambda == 0.005  # no GLUE task: default
    cfg = make_cfg("method=sora", "model=tiny_deberta", "task=glue/qnli")
    assert cfg.method.sparse_lambda == 0.0001
    assert make_cfg("method=sora", "model=tiny_deberta", "task=glue/wnli").method.sparse_lambda == 0.01
    with pytest.raises(ConfigError, match="sparse_lambda") as e:
        method_cfg("sora", sparse_lambda=-0.1)
    assert "\n" not in str(e.value)


class _Fused(torch.nn.Module):
    """Stands in for a wrapper whose factors are not a plain LoRA but that has an equivalent one."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)

    def peft_equivalent(self):
        return self.inner


def test_export_uses_peft_equivalent_and_round_trips(tmp_path):
    torch.manual_seed(0)

    def net():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3)).eval()

    model = net()
    cfg = typed(METHODS["lora"].Config, {"rank": 2}, "method")
    method = METHODS["lora"].apply(model, cfg, ["0"], ["2"], torch.Generator().manual_seed(0))
    perturb(method)
    model[0] = _Fused(model[0])
    method.lowrank["0"] = model[0]
    x = torch.randn(4, 6)
    method.exporter(tmp_path)
    loaded = PeftModel.from_pretrained(net(), str(tmp_path / "peft")).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-6)
        assert (model(x) - net()(x)).abs().max() > 1e-3


def test_sora_gate_optimizer_state_resumes_exactly(deberta_parts):
    """2 + 2 steps with the gates' Adam state saved and restored == 4 steps in one go."""
    parts = deberta_parts

    def fresh():
        torch.manual_seed(0)
        method = adapt(parts, "sora", rank=4, sparse_lambda=0.01)
        method.setup(plan(4))
        return method

    full = fresh()
    train_steps(full, parts, 4)
    half = fresh()
    opt = train_steps(half, parts, 2)
    saved = (
        {n: p.detach().clone() for n, p in half.model.named_parameters()},
        opt.state_dict(),
        half.state_dict(),
    )
    resumed = fresh()
    with torch.no_grad():
        for n, p in resumed.model.named_parameters():
            p.copy_(saved[0][n])
    opt2 = torch.optim.AdamW([p for _, p in resumed.optimizer_parameters()], lr=1e-2, weight_decay=0.0)
    opt2.load_state_dict(copy.deepcopy(saved[1]))
    resumed.load_state_dict(copy.deepcopy(saved[2]))
    train_steps(resumed, parts, 2, start=3, optimizer=opt2)
    a, b = dict(full.model.named_parameters()), dict(resumed.model.named_parameters())
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=0, atol=0, msg=n)
