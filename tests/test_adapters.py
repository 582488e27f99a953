"""Method math: zero init, what trains, parameter counts, Eq. 10, Algorithm 1, diagnostics."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModelForSequenceClassification

from adapters import METHODS
from adapters.lowrank import LowRankLinear, lowrank_diagnostics
from adapters.orthogonal import orthogonality_penalty
from core import ConfigError
from models import fnn as fnn_builder
from models import hf as hf_builder
from runners.config import heads_for, typed
from tasks.glue import Config as GlueConfig
from tasks.glue import Glue
from tests.conftest import make_cfg

LOW_RANK = ["lora", "r_lora", "gm_lora", "rm_lora"]
ALL = ["ft", *LOW_RANK]


def method_cfg(name, **over):
    cfg = make_cfg(f"method={name}", *[f"method.{k}={v}" for k, v in over.items()])
    return typed(METHODS[cfg.method.name].Config, cfg.method, "method")


def cls_heads(model_cfg) -> list[str]:
    """The model's head modules for a sequence-classification head (head_modules may be per type)."""
    return heads_for(OmegaConf.to_container(model_cfg, resolve=True), {"type": "sequence_classification"})


def fnn(width=16, depth=3, seed=0):
    return fnn_builder.FNN(width, depth, torch.Generator().manual_seed(seed))


def apply(model, name, targets=(r"layers\.\d+",), heads=(), seed=0, **over):
    cfg = method_cfg(name, **over)
    return METHODS[cfg.name].apply(
        model, cfg, list(targets), list(heads), torch.Generator().manual_seed(seed)
    )


@pytest.fixture(scope="module")
def tiny_deberta_parts(glue_dir):
    cfg = make_cfg("model=tiny_deberta", "task=glue/sst2")
    task = Glue(
        GlueConfig(
            subset="sst2",
            data_dir=str(glue_dir),
            train_split="validation[:64]",
            eval_splits=["validation[64:96]"],
        )
    )
    tok = hf_builder.build_tokenizer(cfg.model, task.texts())
    batch = tok([r["text"][0] for r in task.raw["train"][:8]], padding=True, return_tensors="pt")
    return cfg.model, task.head, tok, dict(batch)


def tiny_deberta(parts):
    model_cfg, head, tok, _ = parts
    return hf_builder.build_model(model_cfg, head, tok).eval()


# --- zero init, what trains --------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_output_unchanged_at_step_zero_fnn(name):
    model = fnn()
    x = torch.randn(5, 16)
    before = model(x)
    apply(model, name)
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)


@pytest.mark.parametrize("name", ALL)
def test_output_unchanged_at_step_zero_tiny_deberta(name, tiny_deberta_parts):
    model_cfg, *_, batch = tiny_deberta_parts
    model = tiny_deberta(tiny_deberta_parts)
    before = model(**batch).logits
    apply(model, name, model_cfg.target_modules, cls_heads(model_cfg))
    torch.testing.assert_close(model(**batch).logits, before, rtol=0, atol=0)


@pytest.mark.parametrize("name", ALL)
def test_only_method_parameters_train_and_move(name, tiny_deberta_parts):
    model_cfg, *_, batch = tiny_deberta_parts
    model = tiny_deberta(tiny_deberta_parts)
    method = apply(model, name, model_cfg.target_modules, cls_heads(model_cfg))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if name == "ft":
        assert trainable == {n for n, _ in model.named_parameters()}
    else:
        expected = {
            n
            for n, _ in model.named_parameters()
            if n.endswith((".lora_A", ".lora_B")) or n.startswith(("pooler.dense.", "classifier."))
        }
        assert trainable == expected
        assert all(".base." not in n for n in trainable)
    for m in method.lowrank.values():  # make B nonzero so that A receives gradient too
        torch.nn.init.normal_(m.lora_B, std=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(method.trainable_parameters(), lr=1e-2, weight_decay=0.0)
    labels = torch.tensor([0, 1] * 4)
    loss = model(**batch, labels=labels).loss
    extra = method.extra_loss()
    (loss if extra is None else loss + extra).backward()
    method.before_step(opt, 1)
    opt.step()
    method.after_step(opt, 1)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and moved <= trainable
    if name != "ft":
        assert any(n.endswith("lora_A") for n in moved) and "classifier.weight" in moved


# --- parameter counts --------------------------------------------------------------------------


@pytest.mark.parametrize("rank", [1, 4, 8])
def test_trainable_count_closed_form_fnn(rank):
    width, depth = 16, 3
    counts = apply(fnn(width, depth), "lora", rank=rank).param_counts()
    assert counts["trainable"] == counts["inference"] == 2 * rank * width * depth
    assert counts["total"] == width * width * depth + 2 * rank * width * depth


@pytest.mark.parametrize(("rank", "paper_m"), [(4, 1.26), (8, 1.92)])
def test_deberta_v3_base_counts_match_rm_lora_table1(rank, paper_m):
    """DeBERTa-v3-base shapes on the meta device (no weights): 12 layers x (q,k,v,o: 768->768,
    FFN 768->3072->768). Σ R(d_in+d_out) = 12·R·13824; head = pooler 768²+768 + classifier 768·2+2.
    RM-LoRA Table 1 prints 1.26M (R=4) and 1.92M (R=8): adapters + head."""
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
        model = AutoModelForSequenceClassification.from_config(config)
    m = make_cfg("model=deberta_v3_base").model
    counts = apply(model, "lora", m.target_modules, cls_heads(m), rank=rank).param_counts()
    adapter = 12 * rank * (4 * (768 + 768) + (768 + 3072) + (3072 + 768))
    head = 768 * 768 + 768 + 768 * 2 + 2
    assert counts["method_trainable"] == counts["method_inference"] == adapter
    assert counts["head"] == head
    assert counts["trainable"] == counts["inference"] == adapter + head
    assert round(counts["trainable"] / 1e6, 2) == paper_m


def test_ft_counts_every_parameter():
    counts = apply(fnn(16, 3), "ft").param_counts()
    assert counts["trainable"] == counts["inference"] == counts["total"] == 16 * 16 * 3


# --- R-LoRA regularizer (Eq. 10) ---------------------------------------------------------------


def _module(a, b):
    return SimpleNamespace(
        lora_A=torch.tensor(a, dtype=torch.float32), lora_B=torch.tensor(b, dtype=torch.float32)
    )


def test_regularizer_matches_hand_computation_both_forms():
    # module 1: AAᵀ = diag(1, 4) -> gap diag(0, 3): ‖·‖² = 9; BᵀB = [[1,1],[1,1]] -> gap [[0,1],[1,0]]: ‖·‖² = 2
    m1 = _module([[1, 0, 0], [0, 2, 0]], [[1, 1], [0, 0], [0, 0]])
    # module 2: A has orthonormal rows -> 0; B = 0 -> gap -I: ‖·‖² = 2
    m2 = _module([[1, 0, 0], [0, 1, 0]], [[0, 0], [0, 0], [0, 0]])
    assert float(orthogonality_penalty([m1, m2], "paper")) == pytest.approx(9 + 2 + 0 + 2)
    assert float(orthogonality_penalty([m1, m2], "reference")) == pytest.approx(
        (3 + math.sqrt(2) + 0 + math.sqrt(2)) / 4
    )


def test_regularizer_weight_and_form_reach_the_loss():
    model = fnn()
    method = apply(model, "r_lora", reg_weight=0.5, reg_form="reference")
    expected = 0.5 * orthogonality_penalty(list(method.lowrank.values()), "reference")
    torch.testing.assert_close(method.extra_loss(), expected)
    assert apply(fnn(), "lora").extra_loss() is None


# --- GM-LoRA mask (Algorithm 1) ----------------------------------------------------------------


def _masked_step(method, model, opt, x):
    loss = model(x).pow(2).mean()
    extra = method.extra_loss()
    (loss if extra is None else loss + extra).backward()
    method.before_step(opt, 1)
    opt.step()
    method.after_step(opt, 1)
    opt.zero_grad()


def _masked_lora(width, depth, weight_decay=0.0, **over):
    """FNN + GM-LoRA with B made nonzero (so A receives gradient) and its AdamW optimizer."""
    torch.manual_seed(0)
    model = fnn(width, depth)
    method = apply(model, "gm_lora", **over)
    for m in method.lowrank.values():
        torch.nn.init.normal_(m.lora_B)
    return model, method, torch.optim.AdamW(method.trainable_parameters(), lr=1e-2, weight_decay=weight_decay)


def _changed(before, after, dim):
    other = 1 - dim
    return set((before != after).any(dim=other).nonzero().flatten().tolist())


@pytest.mark.parametrize("shared", [True, False])
def test_one_masked_step_changes_exactly_r_hat_rows_and_columns(shared):
    model, method, opt = _masked_lora(16, 3, rank=6, mask_directions=2, mask_shared=shared)
    before = {n: (m.lora_A.detach().clone(), m.lora_B.detach().clone()) for n, m in method.lowrank.items()}
    _masked_step(method, model, opt, torch.randn(32, 16))
    mask = method.hooks[0]
    draws_differ = False
    for name, m in method.lowrank.items():
        rows, cols = (set(t.tolist()) for t in mask.kept[name])
        assert len(rows) == len(cols) == 2
        assert _changed(before[name][0], m.lora_A, 0) == rows
        assert _changed(before[name][1], m.lora_B, 1) == cols
        if shared:
            assert rows == cols
        draws_differ |= rows != cols
    assert draws_differ == (not shared)


def test_grad_mode_lets_momentum_move_masked_rows_strict_mode_does_not():
    def setup(mode):
        model, method, opt = _masked_lora(16, 2, weight_decay=0.1, rank=4, mask_directions=1, mask_mode=mode)
        x = torch.randn(32, 16)
        for _ in range(3):  # unmasked steps build up AdamW state
            model(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
        return model, method, opt, x

    for mode in ("grad", "strict"):
        model, method, opt, x = setup(mode)
        before = {
            n: (
                m.lora_A.detach().clone(),
                m.lora_B.detach().clone(),
                {k: v.clone() for k, v in opt.state[m.lora_A].items()},
            )
            for n, m in method.lowrank.items()
        }
        _masked_step(method, model, opt, x)
        for name, m in method.lowrank.items():
            rows, cols = (set(t.tolist()) for t in method.hooks[0].kept[name])
            changed_a = _changed(before[name][0], m.lora_A, 0)
            changed_b = _changed(before[name][1], m.lora_B, 1)
            if mode == "strict":
                assert changed_a == rows and changed_b == cols
                masked = sorted(set(range(4)) - rows)
                for key in ("exp_avg", "exp_avg_sq"):
                    torch.testing.assert_close(
                        opt.state[m.lora_A][key][masked], before[name][2][key][masked], rtol=0, atol=0
                    )
            else:  # momentum and weight decay move every row
                assert changed_a == set(range(4)) and changed_b == set(range(4))


def test_head_is_not_masked_by_default(tiny_deberta_parts):
    model_cfg, *_, batch = tiny_deberta_parts
    model = tiny_deberta(tiny_deberta_parts)
    method = apply(
        model, "gm_lora", model_cfg.target_modules, cls_heads(model_cfg), rank=4, mask_directions=1
    )
    model(**batch, labels=torch.tensor([0, 1] * 4)).loss.backward()
    head_grads = {n: p.grad.clone() for n, p in model.named_parameters() if n.startswith("classifier.")}
    method.before_step(torch.optim.AdamW(method.trainable_parameters()), 1)
    for n, g in head_grads.items():
        assert torch.equal(dict(model.named_parameters())[n].grad, g) and g.abs().sum() > 0


def test_mask_draws_follow_the_run_seed():
    def draws(seed):
        method = apply(fnn(), "gm_lora", seed=seed, rank=8, mask_directions=3)
        opt = torch.optim.AdamW(method.trainable_parameters())
        method.before_step(opt, 1)
        return [t.tolist() for pair in method.hooks[0].kept.values() for t in pair]

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)


def test_mask_fraction_gives_half_the_rank():
    assert method_cfg("rm_lora", rank=8).directions == 4
    assert method_cfg("rm_lora", rank=4).directions == 2
    assert method_cfg("lora").directions is None


# --- diagnostics -------------------------------------------------------------------------------


def test_rank_and_orthogonality_diagnostics_match_direct_computation():
    torch.manual_seed(0)
    base = torch.nn.Linear(12, 10, bias=False)
    m = LowRankLinear(base, rank=5, alpha=10.0)
    with torch.no_grad():
        m.lora_B.normal_()
        m.lora_A[4] = m.lora_A[0] * 2  # make ΔW rank 4 of R = 5
    d = lowrank_diagnostics({"m": m})["modules"]["m"]
    dw = (m.scaling * m.lora_B.double() @ m.lora_A.double()).detach()
    assert d["rank"] == 4 == int(torch.linalg.matrix_rank(dw, rtol=d["rank_rtol"]))
    expected = float(((dw @ dw.T - torch.eye(10, dtype=torch.float64)) ** 2).sum())
    assert d["orth_loss"] == pytest.approx(expected, rel=1e-9)


def test_zero_delta_has_rank_zero_and_orth_loss_d_out():
    m = LowRankLinear(torch.nn.Linear(6, 4), rank=2, alpha=2.0)
    d = lowrank_diagnostics({"m": m})
    assert d["modules"]["m"]["rank"] == 0 and d["mean_orth_loss"] == pytest.approx(4.0)


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"rank": 0}, "method.rank must be >= 1"),
        ({"mask_directions": 0}, "must be in [1, R=8]"),
        ({"mask_directions": 9}, "must be in [1, R=8]"),
        ({"reg_weight": -0.1}, "reg_weight must be >= 0"),
        ({"reg_form": "other"}, "valid: paper, reference"),
    ],
)
def test_bad_method_values_raise_named_errors(over, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        method_cfg("lora", **over)


def test_rank_above_module_dims_and_unmatched_patterns_raise():
    with pytest.raises(ConfigError, match=r"rank 17 exceeds min\(d_in, d_out\) = 16"):
        apply(fnn(16), "lora", rank=17)
    with pytest.raises(ConfigError, match="target pattern 'nope' matches no module"):
        apply(fnn(16), "lora", targets=("nope",))
