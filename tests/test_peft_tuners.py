"""method=peft (adapters/peft_tuner.py): any PEFT tuner, its presets, and R-/GM-/RM- modifiers on PEFT's
LoRA variants. Tiny DeBERTa / GPT-2 on real SST-2 sentences (tests/test_baselines.py's helpers)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from peft import PeftModel

from adapters import METHODS, peft_tuner
from adapters.masking import DirectionMask
from adapters.orthogonal import OrthogonalityRegularizer, orthogonality_penalty_loop
from core import ConfigError
from runners.config import heads_for, typed
from runners.train import run
from tests.conftest import make_cfg
from tests.test_baselines import build, logits, perturb
from tests.test_runner import check_record

# combinations peft 0.21.2 cannot run, found by trying every preset on both tiny models (module docstring)
REFUSED = {("tiny_gpt2", p): "Conv1D" for p in ("olora", "loha", "lokr", "oft")}
NOT_AB = ("vera", "loha", "lokr", "ia3", "oft", "fourierft")  # no (A, B) pair: modifiers refused
LORA_FAMILY = ("dora", "rslora", "pissa", "olora")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():  # PEFT warns about Conv1D fan_in_fan_out, missing CUDA kernels, ...
        warnings.simplefilter("ignore")
        yield


def method_cfg(method: str, model: str, *over: str):
    """(typed method config, resolved model config) as the runner composes them; GPT-2 on whole c_attn."""
    placement = ["model.placement=attn"] if model == "tiny_gpt2" else []
    cfg = make_cfg(f"method={method}", f"model={model}", *placement, *over)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    mcfg = typed(METHODS[cfg.method.name].Config, cfg.method, "method")
    getattr(METHODS[mcfg.name], "validate", lambda *a: None)(mcfg, model_cfg)
    return mcfg, model_cfg


def adapt(parts, method: str, *over: str, seed: int = 0):
    """A fresh tiny model (same init for the same model) with `method` applied from the model YAML."""
    _, head, *_ = parts
    mcfg, model_cfg = method_cfg(method, parts[0].name, *over)
    model = build(parts)
    targets, heads = model_cfg["target_modules"], heads_for(model_cfg, head)
    return METHODS[mcfg.name].apply(model, mcfg, targets, heads, torch.Generator().manual_seed(seed))


def losses(method, parts, steps: int, lr: float = 1e-2) -> list[float]:
    """The runner's step order (loss + autograd terms, backward, analytic terms, hooks); the task losses."""
    model, batch, labels = method.model, parts[3], parts[4]
    opt = torch.optim.AdamW([p for _, p in method.optimizer_parameters()], lr=lr, weight_decay=0.0)
    model.train()
    seen = []
    for step in range(1, steps + 1):
        loss = model(**batch, labels=labels).loss
        extra = method.autograd_loss()
        (loss if extra is None else loss + extra).backward()
        method.add_loss_grads()
        method.before_step(opt, step)
        opt.step()
        method.after_step(opt, step)
        model.zero_grad(set_to_none=True)
        seen.append(float(loss))
    model.eval()
    return seen


# --- plain LoraConfig == our lora -------------------------------------------------------------------


def test_plain_loraconfig_trains_exactly_like_our_lora(deberta_parts):
    """Same model, same r = 8 and alpha = 16, same initial factors -> same logits and loss curve.

    Init alignment: both draw A ~ Kaiming-uniform(a=√5) = U(±1/√d_in) and set B = 0 (PEFT's default,
    `reset_lora_parameters`; ours, adapters/lowrank.py), but from different RNG streams (PEFT's nn.Linear
    constructors draw first), so the same seed gives different A. We check both A lie in the same bound,
    then copy PEFT's A into ours: what is compared is the forward, backward and step, not the draw."""
    ours = adapt(deberta_parts, "lora")
    theirs = adapt(deberta_parts, "peft", "+method.kwargs.r=8", "+method.kwargs.lora_alpha=16")
    assert set(ours.lowrank) == set(theirs.lowrank) and len(ours.lowrank) == 12
    base = logits(build(deberta_parts), deberta_parts)
    torch.testing.assert_close(logits(ours.model, deberta_parts), base, rtol=0, atol=0)  # B = 0
    torch.testing.assert_close(logits(theirs.model, deberta_parts), base, rtol=0, atol=0)
    with torch.no_grad():
        for name, mine in ours.lowrank.items():
            peft_layer = theirs.lowrank[name]
            bound = 1 / math.sqrt(mine.lora_A.shape[1])
            assert mine.lora_A.abs().max() <= bound and peft_layer.lora_A.abs().max() <= bound
            assert peft_layer.scaling == mine.scaling == 2.0 and not peft_layer.lora_B.any()
            mine.lora_A.copy_(peft_layer.lora_A)
    counts = ours.param_counts(), theirs.param_counts()
    for key in ("trainable", "inference", "head", "method_trainable", "method_inference"):
        assert counts[0][key] == counts[1][key], key
    curve_ours, curve_theirs = losses(ours, deberta_parts, 6), losses(theirs, deberta_parts, 6)
    assert curve_ours == pytest.approx(curve_theirs, rel=1e-5, abs=1e-6)
    assert curve_ours[-1] < curve_ours[0]  # it trained: the comparison is not between two frozen runs
    torch.testing.assert_close(logits(ours.model, deberta_parts), logits(theirs.model, deberta_parts))


def test_different_alpha_gives_a_different_curve(deberta_parts):
    """The equivalence test above can fail: PEFT's default alpha (8, scaling 1) is not our lora's 16."""
    ours, theirs = adapt(deberta_parts, "lora"), adapt(deberta_parts, "peft")
    with torch.no_grad():
        for name, mine in ours.lowrank.items():
            mine.lora_A.copy_(theirs.lowrank[name].lora_A)
    assert losses(ours, deberta_parts, 4)[1:] != pytest.approx(losses(theirs, deberta_parts, 4)[1:], rel=1e-5)


# --- DoRA, PiSSA ----------------------------------------------------------------------------------


def test_dora_magnitude_vector_trains_and_is_counted(deberta_parts):
    method = adapt(deberta_parts, "peft/dora")
    magnitudes = {n: p for n, p in method.model.named_parameters() if "lora_magnitude_vector" in n}
    assert len(magnitudes) == 12 and all(p.requires_grad for p in magnitudes.values())
    before = {n: p.detach().clone() for n, p in magnitudes.items()}
    perturb(method)  # nonzero B: DoRA's normalisation then depends on the factors
    model = method.model
    model(**deberta_parts[3], labels=deberta_parts[4]).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in magnitudes.values())
    model.zero_grad(set_to_none=True)
    losses(method, deberta_parts, 2)
    assert all(not torch.equal(before[n], p) for n, p in magnitudes.items())
    # # T = Σ r·(d_in + d_out) + d_out (the magnitude) per module, + head
    expected = sum(
        8 * (m.lora_A.shape[1] + m.lora_B.shape[0]) + m.lora_B.shape[0] for m in method.lowrank.values()
    )
    assert method.param_counts()["method_trainable"] == method.param_counts()["method_inference"] == expected


@pytest.mark.parametrize("model", ["tiny_deberta", "tiny_gpt2"])
def test_pissa_starts_at_the_base_models_output(model, deberta_parts, gpt2_parts):
    parts = deberta_parts if model == "tiny_deberta" else gpt2_parts
    base = logits(build(parts), parts)
    method = adapt(parts, "peft/pissa")
    torch.testing.assert_close(logits(method.model, parts), base, rtol=1e-5, atol=1e-5)
    views = list(method.lowrank.values())
    assert views and all(v.lora_A.abs().sum() > 0 and v.lora_B.abs().sum() > 0 for v in views)  # not B = 0
    fourier = adapt(parts, "peft/fourierft")  # the check can fail: FourierFT starts from a random spectrum
    assert not torch.allclose(logits(fourier.model, parts), base, rtol=1e-5, atol=1e-5)


# --- every preset -----------------------------------------------------------------------------------


@pytest.mark.slow  # 20 tiny models, a few seconds each (make test runs it)
@pytest.mark.parametrize("model", ["tiny_deberta", "tiny_gpt2"])
@pytest.mark.parametrize("preset", peft_tuner.PRESETS)
def test_every_preset_trains_or_is_refused_by_name(preset, model, deberta_parts, gpt2_parts):
    parts = deberta_parts if model == "tiny_deberta" else gpt2_parts
    if (model, preset) in REFUSED:
        with pytest.raises(ConfigError) as err:
            adapt(parts, f"peft/{preset}")
        line = str(err.value)
        assert "\n" not in line and REFUSED[(model, preset)] in line
        assert method_cfg(f"peft/{preset}", model)[0].tuner in line
        return
    method = adapt(parts, f"peft/{preset}")
    assert method.name == f"peft_{preset}" and method.extra_counts()["peft"]["kwargs"]
    assert bool(method.lowrank) == (preset in LORA_FAMILY)
    counts = method.param_counts()
    assert 0 < counts["method_trainable"] == counts["method_inference"] and counts["head"] > 0
    head = set(method.head)
    before = {n: p.detach().clone() for n, p in method.model.named_parameters() if p.requires_grad}
    curve = losses(method, parts, 3)
    frozen = [n for n, p in method.model.named_parameters() if n in before and torch.equal(before[n], p)]
    assert not frozen, frozen  # every trainable tensor moved, the tuner's and the head's
    assert all(math.isfinite(x) for x in curve) and curve[-1] != curve[0]
    assert head and head <= set(before)


def test_every_preset_has_a_yaml_and_a_registry_entry():
    presets = sorted(p.stem for p in (Path(__file__).parents[1] / "conf/method/peft").glob("*.yaml"))
    assert presets == sorted(peft_tuner.PRESETS)
    assert all(METHODS[f"peft_{p}"] is peft_tuner for p in presets) and METHODS["peft"] is peft_tuner


# --- modifiers on PEFT's LoRA factors -----------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False])
def test_rm_dora_masks_the_gradient_of_its_factors(fast, deberta_parts):
    """RM-DoRA: the same DirectionMask as RM-LoRA keeps r̂ = 4 of 8 rows of A / columns of B per module;
    the masked ones have exactly zero gradient, the kept ones their full one (PEFT's own Parameters)."""
    method = adapt(
        deberta_parts, "peft/dora", "method.reg_weight=0.1", "method.mask_fraction=0.5", f"method.fast={fast}"
    )
    (mask,) = [h for h in method.hooks if isinstance(h, DirectionMask)]
    (reg,) = method.loss_terms
    assert isinstance(reg, OrthogonalityRegularizer) and reg.analytic == fast
    assert method.extra_counts()["gradient_mask"]["directions"] == 4
    perturb(method)
    model = method.model
    model(**deberta_parts[3], labels=deberta_parts[4]).loss.backward()
    full = {n: (v.lora_A.grad.clone(), v.lora_B.grad.clone()) for n, v in method.lowrank.items()}
    layer_params = {id(p) for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n}
    assert {id(p) for v in method.lowrank.values() for p in (v.lora_A, v.lora_B)} == layer_params
    method.before_step(torch.optim.AdamW(method.trainable_parameters()), 1)
    for name, view in method.lowrank.items():
        rows, cols = (sorted(t.tolist()) for t in mask.kept[name])
        dropped = sorted(set(range(8)) - set(rows))
        assert len(rows) == 4 and rows == cols
        assert not view.lora_A.grad[dropped].any() and not view.lora_B.grad[:, dropped].any()
        torch.testing.assert_close(view.lora_A.grad[rows], full[name][0][rows], rtol=0, atol=0)
        torch.testing.assert_close(view.lora_B.grad[:, cols], full[name][1][:, cols], rtol=0, atol=0)
        assert full[name][0][dropped].abs().sum() > 0  # there was something to mask


def test_regularizer_reads_pefts_factors(deberta_parts):
    """λ·Reg over PEFT's lora_A / lora_B weights, its analytic gradient equal to autograd's."""
    method = adapt(deberta_parts, "peft/pissa", "method.reg_weight=0.1")
    (reg,) = method.loss_terms
    layers = [method.model.get_submodule(n) for n in method.lowrank]
    pairs = [peft_tuner.LoraFactors(layer) for layer in layers]
    expected = 0.1 * orthogonality_penalty_loop(pairs, "reference")
    assert float(expected) > 0
    value = reg.add_grad()
    torch.testing.assert_close(value, expected.detach())
    analytic = [p.grad.clone() for v in pairs for p in (v.lora_A, v.lora_B)]
    method.model.zero_grad(set_to_none=True)
    expected.backward()
    autograd = [p.grad for v in pairs for p in (v.lora_A, v.lora_B)]
    for a, b in zip(analytic, autograd, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


# --- refusals: one line, naming the tuner and what it lacks ---------------------------------------


@pytest.mark.parametrize("preset", NOT_AB)
@pytest.mark.parametrize("modifier", ["method.reg_weight=0.1", "method.mask_fraction=0.5"])
def test_modifiers_are_refused_without_an_ab_factorisation(preset, modifier):
    with pytest.raises(ConfigError) as err:
        method_cfg(f"peft/{preset}", "tiny_deberta", modifier)
    line = str(err.value)
    tuner = OmegaConf.load(Path(__file__).parents[1] / f"conf/method/peft/{preset}.yaml").tuner
    assert "\n" not in line and tuner in line and "A·B" in line


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method.tuner=NopeConfig"], "not a PEFT config class"),
        (["method.tuner=AdaLoraConfig"], "method=adalora"),
        (["method.tuner=PrefixTuningConfig"], "method=prefix"),
        (["+method.kwargs.target_modules=[query_proj]"], "model YAML"),
        (["+method.kwargs.rnk=4"], "method.kwargs.rnk is not an argument of LoraConfig"),
        (["+method.kwargs.init_lora_weights=eva"], "data pass"),
        (["+method.kwargs.r=4", "method.mask_directions=5"], "mask_directions must be in"),
    ],
)
def test_bad_configs_fail_in_one_line_before_any_model(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        method_cfg("peft", "tiny_deberta", *overrides)
    assert "\n" not in str(err.value)


def test_gpt2_qv_blocks_are_refused_naming_the_placement():
    cfg = make_cfg("method=peft/dora", "model=tiny_gpt2")  # default placement qv: blocks of c_attn
    mcfg = typed(METHODS[cfg.method.name].Config, cfg.method, "method")
    with pytest.raises(ConfigError, match="model.placement=attn") as err:
        peft_tuner.validate(mcfg, OmegaConf.to_container(cfg.model, resolve=True))
    assert "\n" not in str(err.value)


# --- export, and the CLI-level run ---------------------------------------------------------------------


def test_export_is_pefts_save_pretrained_and_reloads_to_the_same_logits(deberta_parts, tmp_path):
    method = adapt(deberta_parts, "peft/dora")
    perturb(method)
    trained = logits(method.model, deberta_parts)
    out = method.exporter(tmp_path)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    loaded = PeftModel.from_pretrained(build(deberta_parts), out).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**deberta_parts[3]).logits, trained)


RTE = ("task=glue/rte", "model=tiny_deberta", "task.max_train_samples=16", "task.max_eval_samples=16",
       "task.max_length=32", "train.max_steps=4", "train.batch_size=4", "train.checkpoint=false")  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("modifiers", [[], ["method.reg_weight=0.1", "method.mask_fraction=0.5"]])
def test_cli_run_dora_and_rm_dora_on_rte(modifiers, cfg_factory, glue_dir):
    """`python run.py method=peft/dora task=glue/rte model=tiny_deberta task.data_dir=...` (+ RM-DoRA)."""
    rec = run(cfg_factory("method=peft/dora", f"task.data_dir={glue_dir}", *RTE, *modifiers))
    check_record(rec, low_rank=True)
    assert rec["method"] == "peft_dora" and rec["params"]["peft"]["kwargs"]["use_dora"] is True
    assert ("gradient_mask" in rec["params"]) == bool(modifiers) == ("regularizer" in rec["params"])
    assert (Path(rec["artifacts"]) / "peft" / "adapter_config.json").is_file()
