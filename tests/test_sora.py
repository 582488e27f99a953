"""SoRA's gate step as the official `SparseAdamW` (TsinghuaC3I/SoRA src/sparse_optimizer.py), the
worst-case gate-survival analysis behind `check_plan`, and the SoRA/SQuAD settings of Tables 2-3."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from adapters import METHODS
from adapters.base import Plan
from adapters.sora import (
    Config,
    GateStep,
    all_zero_by,
    check_plan,
    official_threshold,
    schedules,
    soft_threshold,
    survival,
)
from core import ConfigError
from runners.config import CONF, typed

SST2_STEPS = 6315  # 67,349 examples / batch 32 → 2,105 steps per epoch × 3 epochs (RM-LoRA Table 4)


def plan(total: int) -> Plan:
    return Plan(total_steps=total, steps_per_epoch=total, epochs=1, batch_size=32, num_processes=1,
                train_examples=32 * total)  # fmt: skip


def literal_masks(p: torch.Tensor, xi: float) -> torch.Tensor:
    """SparseAdamW's three lines, verbatim in meaning (boolean-mask assignment, in order)."""
    p = p.clone()
    p[p > xi] -= xi
    p[p < -xi] += xi
    p[abs(p) < xi] = 0.0
    return p


def gate_hook(gates: list[torch.Tensor], **over) -> GateStep:
    """A `GateStep` over bare gate tensors (no model): all the hook reads is `lowrank[*].sora_gate`."""
    cfg = Config(**over)
    params = [torch.nn.Parameter(g.clone()) for g in gates]
    method = SimpleNamespace(lowrank={str(i): SimpleNamespace(sora_gate=p) for i, p in enumerate(params)})
    return GateStep(method, cfg)


# --- the step -----------------------------------------------------------------------------------


def test_official_masks_on_reference_vector_and_random():
    # REFERENCE.md: ξ = 0.1, [0.12, 0.15, 0.19, −0.15] → all 0 (net: |p| < 2ξ is zeroed)
    ref = torch.tensor([0.12, 0.15, 0.19, -0.15])
    assert official_threshold(ref, 0.1).tolist() == [0.0] * 4
    assert literal_masks(ref, 0.1).tolist() == [0.0] * 4
    # the textbook soft threshold keeps them (shrunk): the named option differs on exactly these
    torch.testing.assert_close(soft_threshold(ref, 0.1), torch.tensor([0.02, 0.05, 0.09, -0.05]))
    # larger ones shrink by ξ once: 0.25 → 0.15, −0.3 → −0.2, 0.21 → 0.11, 0.05 → 0
    torch.testing.assert_close(
        official_threshold(torch.tensor([0.25, -0.3, 0.21, 0.05]), 0.1), torch.tensor([0.15, -0.2, 0.11, 0.0])
    )
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(0)) * 0.3
    assert torch.equal(official_threshold(x, 0.1), literal_masks(x, 0.1))


def test_gate_step_is_hf_adamw_then_masks_by_hand():
    # lr 0.1, ξ 0.05, eps 1e-6, step 1 (no warm-up): m = 0.1·g, v = 0.001·g², step size
    # lr·√(1−β2)/(1−β1) = 0.1·√0.001/0.1 = 0.0316228; update = −0.0316228·m/(√v + 1e-6):
    #   grad  1.0: −0.0316228·0.1/(0.0316228 + 1e-6) = −0.0999968
    #   grad −0.5: +0.0316228·0.05/(0.0158114 + 1e-6) = +0.0999937
    #   grad  0.0: 0
    hook = gate_hook([torch.tensor([0.5, -0.3, 0.0123, 2.0, 0.04, 0.17])], gate_lr=0.1, sparse_lambda=0.05)
    (g,) = hook.gates
    g.grad = torch.tensor([1.0, 1.0, -0.5, 0.0, 0.0, 1.0])
    hook.after_step(None, 1)
    # after Adam: 0.4000032, −0.3999968, 0.1122937, 2.0, 0.04, 0.0700032; masks: −ξ / +ξ, then
    # |p| < ξ → 0 (the last: 0.0200032 < ξ → 0, where the textbook soft threshold keeps 0.02)
    want = torch.tensor([0.3500032, -0.3499968, 0.0622937, 1.95, 0.0, 0.0])
    torch.testing.assert_close(g.detach(), want, atol=2e-7, rtol=0)


def official_reference(gates, grads_per_step, lr, xi, warmup, total, betas=(0.9, 0.999), eps=1e-6):
    """SparseAdamW.step + get_linear_schedule_with_warmup, one parameter at a time, float64."""
    ps = [g.double().clone() for g in gates]
    state = [{"step": 0, "m": torch.zeros_like(p), "v": torch.zeros_like(p)} for p in ps]
    for index, grads in enumerate(grads_per_step):  # scheduler index 0 at the first step
        factor = (
            index / max(1, warmup) if index < warmup else max(0.0, (total - index) / max(1, total - warmup))
        )
        for p, grad, st in zip(ps, grads, state):
            grad = grad.double()
            st["step"] += 1
            st["m"].mul_(betas[0]).add_(grad, alpha=1 - betas[0])
            st["v"].mul_(betas[1]).addcmul_(grad, grad, value=1 - betas[1])
            denom = st["v"].sqrt().add_(eps)
            size = lr * factor * math.sqrt(1 - betas[1] ** st["step"]) / (1 - betas[0] ** st["step"])
            p.add_(st["m"] / denom * (-size))
            p.copy_(literal_masks(p, xi))
    return ps


def test_gate_step_follows_official_schedule_and_resumes_exactly():
    gen = torch.Generator().manual_seed(1)
    gates = [torch.randn(4, generator=gen) * 0.05, torch.randn(3, generator=gen) * 0.05]
    steps, total = 12, 20
    grads = [[torch.randn(4, generator=gen), torch.randn(3, generator=gen)] for _ in range(steps)]
    over = {"gate_lr": 0.01, "sparse_lambda": 0.002, "gate_warmup_ratio": 0.2}  # warm-up 4 steps
    hook = gate_hook(gates, **over)
    hook.setup(plan(total))
    assert [hook.lr(s) for s in (1, 2, 5, 20)] == pytest.approx([0.0, 0.0025, 0.01, 0.01 / 16])
    for step in range(1, 7):
        for g, gr in zip(hook.gates, grads[step - 1]):
            g.grad = gr.clone()
        hook.after_step(None, step)
    saved = ({k: [t.clone() for t in v] if k != "count" else list(v) for k, v in hook.state_dict().items()},
             [g.detach().clone() for g in hook.gates])  # fmt: skip
    resumed = gate_hook(saved[1], **over)
    resumed.setup(plan(total))
    resumed.load_state_dict(saved[0])
    for step in range(7, steps + 1):
        for g, gr in zip(resumed.gates, grads[step - 1]):
            g.grad = gr.clone()
        resumed.after_step(None, step)
    want = official_reference(gates, grads, lr=0.01, xi=0.002, warmup=4, total=total)
    for got, ref in zip(resumed.gates, want):
        torch.testing.assert_close(got.detach().double(), ref, atol=1e-6, rtol=0)
    assert any(bool((g != 0).any()) for g in resumed.gates) and any(
        bool((g == 0).any()) for g in resumed.gates
    )


def test_soft_threshold_option_and_bad_rule():
    hook = gate_hook(
        [torch.tensor([0.12, -0.3])], gate_lr=1e-9, sparse_lambda=0.1, gate_rule="soft_threshold"
    )
    hook.gates[0].grad = torch.zeros(2)
    hook.after_step(None, 1)
    torch.testing.assert_close(hook.gates[0].detach(), torch.tensor([0.02, -0.2]))
    with pytest.raises(ConfigError, match="gate_rule"):
        Config(gate_rule="prox")


def test_record_counts_say_rule_and_sparsity():
    model = torch.nn.Sequential(torch.nn.Linear(6, 5))
    cfg = typed(METHODS["sora"].Config, {"rank": 4, "sparse_lambda": 0.1}, "m")
    method = METHODS["sora"].apply(model, cfg, ["0"], [], torch.Generator().manual_seed(0))
    with torch.no_grad():
        method.lowrank["0"].sora_gate.copy_(torch.tensor([0.0, 1.0, 0.0, 0.0]))
    method.finish()
    extra = method.extra_counts()
    assert extra["gate_rule"] == "official" and extra["gate_sparsity"] == 0.75
    assert (extra["ranks_kept"], extra["ranks_initial"]) == (1, 4)


def test_every_rank_pruned_is_a_result_not_a_failed_export(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(6, 5))
    cfg = typed(METHODS["sora"].Config, {"rank": 4}, "m")
    method = METHODS["sora"].apply(model, cfg, ["0"], [], torch.Generator().manual_seed(0))
    with torch.no_grad():
        method.lowrank["0"].sora_gate.zero_()
    method.finish()
    assert method.exporter(tmp_path) is None  # was: ConfigError "nothing to export" after training
    extra = method.extra_counts()
    assert extra["gate_sparsity"] == 1.0 and extra["peft_export"].startswith("skipped")


# --- long-horizon dynamics ----------------------------------------------------------------------


def brute_force_final(g0: torch.Tensor, cfg: Config, total: int, steps: int | None = None) -> torch.Tensor:
    """The rule itself, with every Adam step pushing each gate outward by its full lr_t: the first
    `steps` (default all) steps of a `total`-step run."""
    lrs, xis = schedules(cfg, total)
    rule = official_threshold if cfg.gate_rule == "official" else soft_threshold
    x = g0.double().clone()
    for lr, xi in list(zip(lrs.tolist(), xis.tolist()))[:steps]:
        x = rule(x + lr * torch.where(x >= 0, 1.0, -1.0), xi)
    return x


@pytest.mark.parametrize("rule", ["official", "soft_threshold"])
def test_survival_bound_is_exact_on_a_brute_force_run(rule):
    cfg = Config(sparse_lambda=0.005, gate_lr=1e-3, gate_warmup_ratio=0.06, gate_rule=rule)
    total = 300
    s = survival(cfg, total)
    # offset: a gate exactly at ξ (or 2ξ, 3ξ … with zero gradient) is a fixed point of the masks
    # (|p| < ξ is false): a measure-zero edge the bound ignores
    grid = torch.linspace(0.0, 3.0, 3001, dtype=torch.float64) + 1.234e-4
    alive = brute_force_final(grid, cfg, total) != 0
    eps = 1e-9
    assert not alive[grid < s.worst_case - eps].any() and alive[grid > s.worst_case + eps].all()
    # zero gradient: the rule alone
    zero = grid.clone()
    for xi in schedules(cfg, total)[1].tolist():
        zero = (official_threshold if rule == "official" else soft_threshold)(zero, xi)
    assert not (zero[grid < s.zero_grad - eps] != 0).any() and (zero[grid > s.zero_grad + eps] != 0).all()
    # hand check (official, fixed ξ, ξ > lr_t): bound = ξ·(T + 1) − Σ lr_t
    if rule == "official":
        assert s.worst_case == pytest.approx(0.005 * (total + 1) - schedules(cfg, total)[0].sum())


def test_no_guarantee_when_gate_lr_can_regrow_a_zero_gate():
    # ξ = 5e-4 < lr/2 = 5e-4? lr 2e-3 >= 2ξ: a zeroed gate pushed outward comes back
    assert survival(Config(sparse_lambda=5e-4, gate_lr=2e-3), 1000).worst_case is None
    assert check_plan(Config(sparse_lambda=5e-4, gate_lr=2e-3), plan(1000)) == []


def test_check_plan_sst2_prunes_every_rank_and_bad_plan_raises():
    cfg = Config(sparse_lambda=0.005, gate_lr=1e-3, gate_warmup_ratio=0.06)
    (finding,) = check_plan(cfg, plan(SST2_STEPS))
    assert "every rank is pruned in 6315 steps" in finding and "xi=0.005 exceeds the gate lr 0.001" in finding
    s = survival(cfg, SST2_STEPS)
    assert s.worst_case == pytest.approx(28.42, abs=0.01) and s.kept_fraction < 1e-170
    lrs, xis = schedules(cfg, SST2_STEPS)
    by = all_zero_by("official", 4.0, lrs, xis)
    assert f"by step {by}" in finding and by < SST2_STEPS
    assert (brute_force_final(torch.tensor([4.0, -4.0]), cfg, SST2_STEPS, by) == 0).all()
    assert (brute_force_final(torch.tensor([4.0]), cfg, SST2_STEPS, by - 1) != 0).all()
    with pytest.raises(ConfigError, match="at least one optimizer step"):
        check_plan(cfg, plan(0))


@pytest.mark.slow
def test_official_rule_zeroes_every_gate_over_sst2s_step_count():
    """The real hook, 72 modules × 16 gates ~ N(0, 1), 6,315 steps, every gradient pushing its gate
    outward (the most survival-friendly sign): every gate is zero long before the end."""
    gen = torch.Generator().manual_seed(0)
    hook = gate_hook([torch.randn(16, generator=gen) for _ in range(72)], gate_lr=1e-3, sparse_lambda=0.005,
                     gate_warmup_ratio=0.06)  # fmt: skip
    hook.setup(plan(SST2_STEPS))
    last_alive = 0
    for step in range(1, SST2_STEPS + 1):
        for g in hook.gates:
            g.grad = -torch.where(g.detach() >= 0, 1.0, -1.0)  # loss −|g|: grows |g|
        hook.after_step(None, step)
        if step % 50 == 0:
            if any(bool((g != 0).any()) for g in hook.gates):
                last_alive = step
            else:
                break
    assert all(bool((g == 0).all()) for g in hook.gates)
    assert last_alive < 1500  # max |g0| of 1,152 N(0,1) draws is ≈ 3.5: gone by step ~830
    print(f"last step with a nonzero gate (50-step resolution): {last_alive}")


# --- Tables 2 and 3: SoRA's ξ and FT's lr as composed ------------------------------------------


@pytest.fixture(scope="module")
def composer():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield lambda *o: compose("config", overrides=list(o))
    GlobalHydra.instance().clear()


@pytest.mark.parametrize(
    ("exp", "arms"),
    [
        ("rm_table2_squad_deberta", ["sora_r16", "sora_r8"]),
        ("rm_table3_squad_gpt2", ["sora_r32", "sora_r16"]),
    ],
)
def test_squad_tables_compose_sora_xi_5e4_and_ft_lr_1e5(composer, exp, arms):
    for arm in arms:  # the tables label SoRA "λ2 = 5e-4" (λ2 = ξ = official sparse_lambda_2)
        cfg = composer(f"experiment={exp}", f"arm={arm}", "seed=1")
        assert cfg.method.name == "sora" and cfg.method.sparse_lambda == 5e-4, (exp, arm)
    ft = composer(f"experiment={exp}", "arm=ft", "seed=1")
    assert ft.train.lr == 1e-5  # Table 4's FT lr; the paper states none for SQuAD (conf/task/squad.yaml)
    lora = composer(f"experiment={exp}", "arm=lora_r8", "seed=1")
    assert lora.train.lr == 1e-3


def test_glue_sora_keeps_table4_xi(composer):
    for task, xi in [("sst2", 0.005), ("cola", 0.001), ("qnli", 0.0001), ("wnli", 0.01)]:
        cfg = composer("experiment=rm_table1_glue", f"task=glue/{task}", "arm=sora_r16", "seed=1")
        assert cfg.method.sparse_lambda == xi and cfg.method.gate_rule == "official"
        assert cfg.method.gate_warmup_ratio == cfg.train.warmup_ratio and cfg.method.gate_eps == 1e-6
