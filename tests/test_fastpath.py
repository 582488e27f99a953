"""The fast path (batched regularizer, device-side foreach masks) trains exactly like the plain loops."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from adapters import METHODS
from adapters.masking import DirectionMask, draw_directions
from adapters.orthogonal import orthogonality_penalty, orthogonality_penalty_loop, row_matrix_groups
from runners import fastpath
from runners.config import typed
from tests.conftest import make_cfg

QV = [{"module": r".*\.attn\.c_attn", "blocks": ["q", "k", "v"], "adapt": ["q", "v"]}]
WHOLE = [r".*\.mlp\.c_fc", r".*\.mlp\.c_proj"]  # d -> 4d and 4d -> d: three factor shapes in all


def method_cfg(name, **over):
    cfg = make_cfg(f"method={name}", *[f"method.{k}={v}" for k, v in over.items()])
    return typed(METHODS[cfg.method.name].Config, cfg.method, "method")


def tiny_gpt2(seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=32,
        vocab_size=101,
        num_labels=2,
        pad_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,  # no dropout: the global RNG plays no part
    )
    return GPT2ForSequenceClassification(config)


def build(name, seed=0, **over):
    model = tiny_gpt2(seed)
    cfg = method_cfg(name, **over)
    method = METHODS[cfg.name].apply(model, cfg, QV + WHOLE, ["score"], torch.Generator().manual_seed(seed))
    return model, method


def batches(n=6):
    g = torch.Generator().manual_seed(1)
    return [
        {
            "input_ids": torch.randint(1, 101, (4, 12), generator=g),
            "labels": torch.randint(0, 2, (4,), generator=g),
        }
        for _ in range(n)
    ]


def train(model, method, data, optimizer=None):
    """The runner's step sequence: loss + autograd terms, backward, analytic terms' gradients, clip,
    before_step, step, after_step, zero grads."""
    params = [p for _, p in method.optimizer_parameters()]
    optimizer = optimizer or torch.optim.AdamW(params, lr=2e-2, weight_decay=0.01)
    losses = []
    for step, batch in enumerate(data, 1):
        loss = model(**batch).loss
        reg = method.autograd_loss()
        total = loss if reg is None else loss + reg
        total.backward()
        analytic = method.add_loss_grads()
        total = total if analytic is None else total.detach() + analytic
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        method.before_step(optimizer, step)
        optimizer.step()
        method.after_step(optimizer, step)
        model.zero_grad(set_to_none=True)
        losses.append(float(total.detach()))
    return losses, optimizer


# --- regularizer --------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["paper", "reference"])
def test_batched_regularizer_equals_the_loop_values_and_gradients(form):
    _, method = build("r_lora", rank=4)
    mods = list(method.lowrank.values())
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in mods:  # B = 0 at init: make both factors generic
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.3)
    # 2 layers; row matrices (4, 32): q/v A and Bᵀ, c_fc A, c_proj Bᵀ; (4, 128): c_fc Bᵀ, c_proj A
    assert [len(g) for g in row_matrix_groups(mods)] == [2 * (4 + 2), 2 * 2]
    results = []
    for fn in (orthogonality_penalty, orthogonality_penalty_loop):
        value = fn(mods, form)
        grads = torch.autograd.grad(value, [p for m in mods for p in (m.lora_A, m.lora_B)])
        results.append((value, grads))
    (fast, fast_grads), (loop, loop_grads) = results
    torch.testing.assert_close(fast, loop, rtol=1e-5, atol=1e-6)
    assert float(loop.detach()) > 1.0  # a nontrivial penalty, not 0 == 0
    for a, b in zip(fast_grads, loop_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert a.abs().sum() > 0


@pytest.mark.parametrize("form", ["paper", "reference"])
def test_analytic_regularizer_gradient_is_autograds(form):
    """add_grad adds exactly what autograd of weight · Reg gives (times the scale) to existing and
    missing .grad tensors, and returns the value; the fast term skips autograd in the runner."""
    _, method = build("r_lora", rank=4, reg_form=form, reg_weight=0.3)
    term = method.loss_terms[0]
    assert term.analytic and method.autograd_terms == [] and method.autograd_loss() is None
    mods = list(method.lowrank.values())
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in mods:
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.3)
    factors = [p for m in mods for p in (m.lora_A, m.lora_B)]
    value = term()
    expected = torch.autograd.grad(value, factors)
    before = [torch.randn(p.shape, generator=g) for p in factors]
    for p, b in zip(factors[::2], before[::2]):  # A's grads exist, B's are None
        p.grad = b.clone()
    added = method.add_loss_grads(scale=0.25)
    torch.testing.assert_close(added, value.detach(), rtol=1e-5, atol=1e-6)
    for i, (p, e) in enumerate(zip(factors, expected, strict=True)):
        start = before[i] if i % 2 == 0 else torch.zeros_like(p)
        torch.testing.assert_close(p.grad, start + 0.25 * e, rtol=1e-5, atol=1e-6)
        assert e.abs().sum() > 0


def test_analytic_reference_form_has_zero_gradient_at_an_orthogonal_factor():
    """‖G − I‖_F is not differentiable at G = I; like autograd's norm backward, the gradient there is 0."""
    _, method = build("r_lora", rank=4, reg_form="reference")
    m = next(iter(method.lowrank.values()))
    with torch.no_grad():
        m.lora_A.copy_(torch.eye(4, m.lora_A.shape[1]))
    method.add_loss_grads()
    assert torch.isfinite(m.lora_A.grad).all() and m.lora_A.grad.abs().sum() == 0


@pytest.mark.parametrize("fast", [True, False])
def test_regularizer_is_float32_under_bf16_autocast(fast):
    """The runner calls loss terms inside bf16 autocast; the Gram products must stay float32."""
    _, method = build("r_lora", rank=4, fast=fast)
    with torch.no_grad():
        for m in method.lowrank.values():
            m.lora_B.normal_(std=0.3)
    exact = method.extra_loss()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = method.extra_loss()
    assert under.dtype == torch.float32
    torch.testing.assert_close(under, exact, rtol=1e-6, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what autocast alone would have computed
        bf16 = method.loss_terms[0].weight * orthogonality_penalty(list(method.lowrank.values()), fast=fast)
    assert abs(float(bf16.detach()) - float(exact.detach())) > 1e-6 * float(exact.detach())


def test_regularizer_switch_reaches_the_loss_term():
    for fast in (True, False):
        _, method = build("r_lora", rank=4, fast=fast)
        assert method.loss_terms[0].fast is fast


# --- mask ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,over",
    [
        ("rm_lora", {"mask_shared": True, "mask_mode": "grad", "reg_form": "paper"}),
        ("rm_lora", {"mask_shared": False, "mask_mode": "grad"}),
        ("rm_lora", {"mask_shared": False, "mask_mode": "strict", "reg_form": "reference"}),
        # paper form, as this case ran before reference became the default: with the reference form
        # the two runs drift apart the same way (1e-7 after step 1, Adam-amplified to 8e-5 by step 6 in
        # 2 of 128 entries of one factor), just past this test's atol
        ("loda", {"reg_weight": 0.1, "mask_fraction": 0.5, "mask_mode": "strict", "reg_form": "paper"}),
        # the authors' GM step: first step unmasked, then the head ("score") masked too
        ("rm_lora", {"mask_shared": False, "mask_head": True, "mask_start": 2}),
    ],
)
def test_fast_run_has_the_plain_runs_loss_curve(name, over):
    """Same seed, fast vs plain: the loss curve and the trained factors agree (CPU, float tolerance)."""
    data = batches()
    runs = {}
    for fast in (True, False):
        model, method = build(name, rank=4, fast=fast, **over)
        assert method.hooks[0].fast is fast
        losses, _ = train(model, method, data)
        runs[fast] = (losses, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    torch.testing.assert_close(
        torch.tensor(runs[True][0]), torch.tensor(runs[False][0]), rtol=1e-5, atol=1e-6
    )
    assert runs[True][0][0] != runs[True][0][-1]  # it trained
    for n, p in runs[True][1].items():  # Adam normalises tiny gradient differences: a looser atol
        torch.testing.assert_close(p, runs[False][1][n], rtol=1e-4, atol=2e-5)


def test_fast_mask_masks_exactly_the_undrawn_directions_without_nonzero(monkeypatch):
    model, method = build("gm_lora", rank=4, mask_directions=1, mask_shared=False)
    model(**batches(1)[0]).loss.backward()
    with torch.no_grad():
        for m in method.lowrank.values():  # B = 0 gives A no gradient: give every factor one
            m.lora_A.grad = torch.randn_like(m.lora_A)
            m.lora_B.grad = torch.randn_like(m.lora_B)
    grads = {n: (m.lora_A.grad.clone(), m.lora_B.grad.clone()) for n, m in method.lowrank.items()}

    def no_sync(*a, **k):
        raise AssertionError("nonzero() on the fast path (a host sync on CUDA)")

    monkeypatch.setattr(torch.Tensor, "nonzero", no_sync)
    method.before_step(torch.optim.AdamW(method.trainable_parameters()), 1)
    for name, m in method.lowrank.items():
        rows, cols = method.hooks[0].kept[name]
        keep_a = torch.zeros(4, dtype=torch.bool).index_fill_(0, rows, True)
        keep_b = torch.zeros(4, dtype=torch.bool).index_fill_(0, cols, True)
        torch.testing.assert_close(m.lora_A.grad, grads[name][0] * keep_a[:, None], rtol=0, atol=0)
        torch.testing.assert_close(m.lora_B.grad, grads[name][1] * keep_b[None, :], rtol=0, atol=0)


def test_device_draws_are_distinct_and_cover_every_direction():
    gen = torch.Generator().manual_seed(0)
    idx = draw_directions(gen, 4000, 8, 3)
    assert idx.shape == (4000, 3)
    assert all(len(set(row)) == 3 for row in idx.tolist())
    counts = torch.bincount(idx.flatten(), minlength=8).float()
    # uniform: each direction kept 4000·3/8 = 1500 times; binomial sd ≈ 36, allow > 6 sd
    assert (counts - 1500).abs().max() < 250


def test_fast_mask_resumes_exactly_from_its_state_dict():
    """3 steps, checkpoint (model, optimizer, hook states), fresh objects, 3 more == 6 uninterrupted."""
    data = batches()
    model, method = build("rm_lora", rank=4, mask_mode="strict")
    full, _ = train(model, method, data)
    ref = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    model, method = build("rm_lora", rank=4, mask_mode="strict")
    first, opt = train(model, method, data[:3])
    ckpt = copy.deepcopy(
        {"model": model.state_dict(), "opt": opt.state_dict(), "method": method.state_dict()}
    )
    assert ckpt["method"][0]["device_generator"] is not None
    model, method = build("rm_lora", rank=4, mask_mode="strict", seed=0)
    model.load_state_dict(ckpt["model"])
    method.load_state_dict(ckpt["method"])
    opt = torch.optim.AdamW([p for _, p in method.optimizer_parameters()], lr=2e-2, weight_decay=0.01)
    opt.load_state_dict(ckpt["opt"])
    rest, _ = train(model, method, data[3:], opt)
    # train() restarts its step counter; the hooks ignore the index, the draws follow the generators
    assert first + rest == full
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, ref[n]), n


def test_resume_refuses_a_generator_from_another_device_type():
    _, method = build("gm_lora", rank=4)
    mask = method.hooks[0]
    assert isinstance(mask, DirectionMask)
    mask.load_state_dict(
        {
            "generator": torch.Generator().get_state(),
            "device_generator": {"device_type": "cuda", "state": None},
        }
    )
    with pytest.raises(ValueError, match="same device type"):
        mask._gen()


@pytest.mark.slow
def test_bench_tiny_writes_a_report(tmp_path, capsys):
    """`make bench`'s CPU version runs and reports every requested row (timings are not asserted)."""
    import json

    from scripts import bench

    out = tmp_path / "bench.json"
    rows = "peft_lora,lora,gm_lora,gm_lora_plain"
    assert (
        bench.main(
            ["--workload", "tiny_gpt2", "--rows", rows, "--steps", "1", "--warmup", "0", "--out", str(out)]
        )
        == 0
    )
    report = json.loads(out.read_text())
    got = report["workloads"]["tiny_gpt2"]["rows"]
    assert [r["row"] for r in got] == rows.split(",")
    by = {r["row"]: r for r in got}
    assert by["peft_lora"]["vs_peft"] == 1.0 and by["lora"]["vs_lora"] == 1.0
    assert by["lora"]["trainable"] == 2 * 24 * 4 * (64 + 64) + 64 * 2  # q, v branches + the score head
    assert set(by["gm_lora_plain"]["parts"]) == {"mask_hooks_ms"} and "parts" not in by["lora"]
    assert report["versions"]["torch"] == torch.__version__ and "tiny_gpt2" in capsys.readouterr().out


def test_bench_repeats_rotate_the_row_order(tmp_path):
    """`--repeats`: every row runs once per round, each round starting one row later (no row is always
    first), and the report keeps every round's time."""
    import json

    from scripts import bench

    log = tmp_path / "rows.jsonl"
    argv = ["--workload", "tiny_gpt2", "--rows", "lora,gm_lora", "--steps", "1", "--warmup", "0"]
    assert (
        bench.main([*argv, "--repeats", "2", "--rows-log", str(log), "--out", str(tmp_path / "b.json")]) == 0
    )
    assert [json.loads(line)["row"] for line in log.read_text().splitlines()] == [
        "lora",
        "gm_lora",
        "gm_lora",
        "lora",
    ]
    rows = json.loads((tmp_path / "b.json").read_text())["workloads"]["tiny_gpt2"]["rows"]
    assert [len(r["all_ms_per_step"]) for r in rows] == [2, 2]


def test_table1_cost_model_counts_the_papers_steps():
    """Steps per (row, seed): epochs × ⌈n_train / 32⌉ over the 9 GLUE tasks, by hand."""
    from scripts import bench

    steps = bench.table1_steps()
    assert steps["cola"] == 3 * 268 and steps["mrpc"] == 5 * 115 and steps["mnli"] == 3 * 12272
    assert sum(steps.values()) == 89319
    est = bench.table1_estimate([{"row": "peft_lora", "ms_per_step": 100.0}], eval_overhead=0.0)
    assert est["runs"] == 297 and est["rows_at_peft_lora_ms"] == 11
    assert est["gpu_hours"] == pytest.approx(3 * 89319 * 11 * 100.0 / 3.6e6)


# --- the runner's compiled path (runners/fastpath.py) -------------------------------------------


def test_fast_path_auto_policy():
    from runners.config import TrainConfig
    from runners.fastpath import resolve

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    auto = TrainConfig(compile="auto", compile_min_steps=1000)
    assert resolve(auto, cpu, 10_000).compile_mode is None  # never on CPU under auto
    long_run = resolve(auto, cuda, 1000)
    assert (long_run.compile_mode, long_run.pad_to_multiple_of, long_run.fused_optimizer) == (
        "reduce-overhead",
        32,
        True,
    )
    short = resolve(auto, cuda, 999)  # too short to pay back the warm-up: eager, exact padding
    assert (short.compile_mode, short.pad_to_multiple_of, short.fused_optimizer) == (None, None, True)
    assert short.note == "compile auto: 999 steps < train.compile_min_steps=1000, eager"
    forced = resolve(TrainConfig(compile=True, compile_mode="default", pad_to_multiple_of=8), cpu, 1)
    assert (forced.compile_mode, forced.pad_to_multiple_of, forced.fused_optimizer) == ("default", 8, False)
    # the shipped default (dataclass and conf/config.yaml): auto, i.e. long CUDA runs compile
    assert TrainConfig().compile == make_cfg().train.compile == "auto"
    assert resolve(TrainConfig(), cuda, 10**6).compile_mode == "reduce-overhead"
    assert resolve(TrainConfig(), cpu, 10**6).compile_mode is None
    accum = resolve(TrainConfig(compile=True, grad_accum=2), cuda, 10)  # graphs + accumulation: wrong grads
    assert accum.compile_mode == "default" and "grad_accum" in accum.note


def test_bucketed_collate_pads_each_key_with_its_value():
    from runners.fastpath import bucketed
    from tasks.batching import pad_collate

    pads = {"input_ids": 7, "attention_mask": 0, "labels": -100}
    collate = bucketed(pad_collate(pads), pads, 16)
    items = [{"input_ids": [1] * n, "attention_mask": [1] * n, "labels": [2] * n, "y": 1} for n in (3, 17)]
    batch = collate(items)
    assert batch["input_ids"].shape == batch["labels"].shape == (2, 32)
    assert batch["input_ids"][0, 3:].eq(7).all() and batch["input_ids"][1, 17:].eq(7).all()
    assert batch["attention_mask"].sum(1).tolist() == [3, 17]
    assert batch["labels"][1, 17:].eq(-100).all() and batch["labels"][1, :17].eq(2).all()
    assert batch["y"].tolist() == [1, 1]
    exact = bucketed(pad_collate(pads), pads, 16)(items[1:])  # 17 → 32; a multiple stays as it is
    assert exact["input_ids"].shape == (1, 32)
    assert (
        bucketed(pad_collate(pads), pads, 16)([{**items[0], "input_ids": [1] * 16}])["input_ids"].shape[1]
        == 16
    )


@pytest.mark.parametrize("arch", ["deberta", "gpt2"])
def test_extra_padding_leaves_the_logits_unchanged(arch):
    """Bucketing pads further with the tasks' pad values; masked positions change nothing."""
    from transformers import DebertaV2ForSequenceClassification

    from scripts.bench import model_config

    config = model_config(arch, "tiny")
    torch.manual_seed(0)
    cls = DebertaV2ForSequenceClassification if arch == "deberta" else GPT2ForSequenceClassification
    model = cls(config).eval()
    g = torch.Generator().manual_seed(0)
    lengths = [5, 11, 9]
    ids = torch.zeros(3, 11, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, config.vocab_size, (n,), generator=g)
    mask = (ids != 0).long()
    padded_ids = torch.nn.functional.pad(ids, (0, 21), value=0)
    padded_mask = torch.nn.functional.pad(mask, (0, 21), value=0)
    with torch.no_grad():
        exact = model(input_ids=ids, attention_mask=mask).logits
        bucket = model(input_ids=padded_ids, attention_mask=padded_mask).logits
    torch.testing.assert_close(bucket, exact, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compiled_runner_trains_like_the_eager_runner(tmp_path, glue_dir):
    """train.compile=true (inductor, dynamic shapes, bucketed padding, eager first step) gives the eager
    run's loss curve on CPU; same run_id; the kernels land in the results dir's cache."""
    from runners.train import run
    from tests.conftest import make_cfg

    common = (
        "model=tiny_deberta",
        "task=glue/rte",
        f"task.data_dir={glue_dir}",
        "method=rm_lora",
        "train.max_steps=4",
        "train.epochs=1",
        "+task.max_train_samples=64",
        "+task.max_eval_samples=16",
    )
    eager = run(make_cfg(*common, results_dir=tmp_path / "eager"))
    compiled = run(make_cfg(*common, "train.compile=true", results_dir=tmp_path / "compiled"))
    assert eager["run_id"] == compiled["run_id"]
    assert eager["env"]["fast_path"]["compile_mode"] is None
    assert compiled["env"]["fast_path"]["compile_mode"] == "reduce-overhead"
    assert compiled["env"]["fast_path"]["pad_to_multiple_of"] == fastpath.AUTO_PAD_MULTIPLE == 32
    assert compiled["env"]["fast_path"]["compiled"] == "2 blocks (DebertaV2Layer)"  # compile_scope=blocks
    history = [(h["train_loss"], h["train_reg"]) for h in eager["metrics"]["history"]]
    history_c = [(h["train_loss"], h["train_reg"]) for h in compiled["metrics"]["history"]]
    torch.testing.assert_close(torch.tensor(history_c), torch.tensor(history), rtol=1e-4, atol=1e-5)
    assert any((tmp_path / "compiled" / ".cache" / "inductor").rglob("*.py"))  # compiled kernels, cached


def _constants_moved(fn, *args, **kwargs):
    """(how many, the devices of the graph's torch.tensor nodes) after `device_constants` to `meta`,
    run on a copy of the graph Dynamo captures; the call itself runs the graph as traced."""
    seen = {}

    def backend(gm, example_inputs):
        moved = copy.deepcopy(gm)
        seen["moved"] = fastpath.device_constants(moved, torch.device("meta"))
        ctors = (torch.tensor, torch._refs.tensor)
        seen["ctors"] = [n.kwargs.get("device") for n in moved.graph.nodes if n.target in ctors]
        return gm.forward

    torch._dynamo.reset()
    torch.compile(fn, backend=backend, dynamic=True)(*args, **kwargs)
    return seen["moved"], seen["ctors"]


def test_device_constants_moves_debertas_host_scalars_and_nothing_else():
    """DeBERTa-v2 builds host-tensor constants (3 attention scales per layer, 2 log-bucket bounds);
    in a CUDA graph each would be a CPU kernel. The pass gives them the device and leaves tensors that
    name a device, or are not Python scalars, alone. The target here is `meta`, so that a moved
    constant is visible on a CPU-only machine."""
    import transformers

    cfg = transformers.DebertaV2Config(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        relative_attention=True, position_buckets=16, norm_rel_ebd="layer_norm", share_att_key=True,
        pos_att_type=["p2c", "c2p"], position_biased_input=False, max_relative_positions=-1,
    )  # fmt: skip
    model = transformers.DebertaV2ForSequenceClassification(cfg).eval()
    x = torch.randint(0, 50, (2, 7))
    moved, ctors = _constants_moved(model, input_ids=x, attention_mask=torch.ones_like(x))
    assert moved == 3 * cfg.num_hidden_layers + 2
    assert len(ctors) == moved and all(d == torch.device("meta") for d in ctors)

    def f(x):
        scale = torch.sqrt(torch.tensor(16.0)) * torch.tensor(x.shape[0])  # a constant, a symbolic size
        return x / scale + torch.tensor([1.0, 2.0]) + torch.tensor(1.0, device="cpu")

    moved, ctors = _constants_moved(f, torch.ones(2))
    assert moved == 2 and ctors.count(torch.device("meta")) == 2  # not the list, not the explicit cpu
    torch._dynamo.reset()
    x = torch.randn(2)
    assert torch.allclose(fastpath.compile(f, "default", torch.device("cpu"))(x), f(x))


def test_compile_traces_float_attributes_as_constants(monkeypatch):
    """A LoRA `scaling` float must not become a 0-dim CPU tensor input of the graph (Dynamo's default
    under dynamic shapes): its casts would run as CPU kernels inside a GPU step."""
    graphs = []
    real = fastpath.device_constants
    monkeypatch.setattr(fastpath, "device_constants", lambda gm, d: graphs.append(gm) or real(gm, d))

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.scaling = torch.nn.Linear(3, 3), 0.5

        def forward(self, x):
            return self.lin(x) * self.scaling

    torch._dynamo.reset()
    m, x = Scaled(), torch.randn(4, 3)
    assert torch.allclose(fastpath.compile(m, "default", torch.device("cpu"))(x), m(x))
    values = [n.meta.get("example_value") for g in graphs for n in g.graph.nodes if n.op == "placeholder"]
    assert graphs and not [v for v in values if torch.is_tensor(v) and v.ndim == 0]
    assert torch._dynamo.config.specialize_float is False  # the process's setting is left as it was


def test_compiled_blocks_trace_one_layer_for_all_and_only_while_active(stub_inductor):
    """Regional compilation: the encoder's layers are found; one graph serves every layer, batch size
    and padded length (also sizes equal to the width); outside `active()` the layers run eager; the
    compiled layers give the eager loss and gradients."""
    import transformers

    graphs = stub_inductor()  # the graphs Dynamo hands inductor, run as traced: no C++ build here
    cfg = transformers.DebertaV2Config(
        vocab_size=50, hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
        relative_attention=True, position_buckets=16, norm_rel_ebd="layer_norm", share_att_key=True,
        pos_att_type=["p2c", "c2p"], position_biased_input=False, max_relative_positions=-1,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    model = transformers.DebertaV2ForSequenceClassification(cfg)
    assert fastpath.repeated_blocks(model) == list(model.deberta.encoder.layer)

    def loss_and_grads(x):
        model.zero_grad()
        labels = torch.arange(len(x)) % 2
        loss = model(input_ids=x, attention_mask=torch.ones_like(x), labels=labels).loss
        loss.backward()
        return [loss.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None]

    # sizes equal to the width (16) and to each other: duck shapes would specialize them and recompile
    shapes = [(16, 16), (3, 16), (2, 7)]
    inputs = [torch.randint(0, 50, s, generator=torch.Generator().manual_seed(s[1])) for s in shapes]
    eager = [loss_and_grads(x) for x in inputs]
    torch._dynamo.reset()
    blocks = fastpath.CompiledBlocks(model, "default", torch.device("cpu"))
    assert blocks.describe() == "4 blocks (DebertaV2Layer)"
    again = [loss_and_grads(x) for x in inputs]
    assert not graphs  # inactive: the eager forward, nothing traced
    assert all(torch.equal(g, w) for got, want in zip(again, eager) for g, w in zip(got, want))
    with blocks.active():
        compiled = [loss_and_grads(x) for x in inputs]
    assert len(graphs) == 1  # one trace for 4 layers and 3 shapes (dynamic shapes, no duck sizing)
    for got, want in zip(compiled, eager):
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def _tiny_gpt2_eager_then_compiled(frozen: int):
    """Tiny GPT-2 from models/hf.py with its embeddings and first `frozen` blocks frozen, one loss and
    its gradients eager and then through `CompiledBlocks`: (model, blocks, eager, compiled, whether
    block 0's output required grad, per call)."""
    from models.hf import build_model
    from tasks.nlg import NLGTask

    torch.manual_seed(0)
    model = build_model(make_cfg("model=tiny_gpt2", "task=e2e").model, {"type": "causal_lm"}, None)
    for module in (model.transformer.wte, model.transformer.wpe, *model.transformer.h[:frozen]):
        module.requires_grad_(False)
    seen = []
    model.transformer.h[0].register_forward_hook(lambda m, i, out: seen.append(out[0].requires_grad))
    x = torch.randint(0, 100, (3, 9), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x}

    def loss_and_grads():
        model.zero_grad()
        loss = NLGTask.lm_loss(model, batch, 0.0)[0]
        loss.backward()
        return [loss.detach()] + [p.grad.clone() for p in model.parameters() if p.requires_grad]

    eager = loss_and_grads()
    torch._dynamo.reset()
    blocks = fastpath.CompiledBlocks(model, "default", torch.device("cpu"))
    with blocks.active():
        compiled = loss_and_grads()
    return model, blocks, eager, compiled, seen


def test_compiled_gpt2_blocks_trace_once_because_training_keeps_no_kv_cache(stub_inductor):
    """A decoder built by models/hf.py trains without a KV cache: with one, every layer's
    `cache.update(layer_idx)` is guarded on its index and each layer recompiles (GPT-2 medium's 24
    layers hit Dynamo's recompile limit and ran eager on the H200). Frozen embeddings (as under LoRA)
    give the first layer an input without grad: it is flagged, not traced a second time."""
    graphs = stub_inductor()
    model, blocks, eager, compiled, _ = _tiny_gpt2_eager_then_compiled(frozen=0)
    assert model.config.use_cache is False and len(model.transformer.h) == 2
    assert blocks.describe() == "2 blocks (GPT2Block)"
    assert len(graphs) == 1  # one trace serves both layers
    assert model.transformer.wte.weight.grad is None  # the flag on layer 0's input stops there
    for got, want in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_compiled_blocks_flag_no_input_of_a_frozen_block(stub_inductor):
    """Partial fine-tuning (the lower blocks frozen): a frozen block keeps its grad-less input, so the
    backward stops at the first trained block as it does eager; that block's input is flagged."""
    graphs = stub_inductor()
    _, _, eager, compiled, seen = _tiny_gpt2_eager_then_compiled(frozen=1)
    assert seen == [False, False]  # the frozen block's output needs no gradient, eager or compiled
    assert len(graphs) == 2  # the frozen block's graph and the trained block's
    for got, want in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def _compiled_block_saves(name):
    """(forward outputs of a compiled GPT-2 block after AOT partitioning, eager and compiled losses and
    gradients): the outputs beyond the block's own are the tensors the backward saved."""
    from functorch.compile import min_cut_rematerialization_partition
    from torch._dynamo.backends.common import aot_autograd

    model, method = build(name, rank=4)
    with torch.no_grad():
        for m in method.lowrank.values():
            m.lora_B.normal_(std=0.3)
    saved = []

    def fw(gm, example_inputs):
        saved.append(len(next(n for n in gm.graph.nodes if n.op == "output").args[0]))
        return gm.forward

    backend = aot_autograd(fw_compiler=fw, bw_compiler=lambda gm, _: gm.forward,
                           partition_fn=min_cut_rematerialization_partition)  # fmt: skip
    block = model.transformer.h[0]
    x = torch.randn(2, 12, 32, generator=torch.Generator().manual_seed(2), requires_grad=True)
    params = [p for p in block.parameters() if p.requires_grad]

    def loss_and_grads(forward):
        out = forward(x)
        out = out[0] if isinstance(out, tuple) else out
        return [out.pow(2).sum(), *torch.autograd.grad(out.pow(2).sum(), [x, *params])]

    eager = loss_and_grads(block.forward)
    torch._dynamo.reset()
    compiled = torch.compile(block.forward, backend=backend, dynamic=True)
    with fastpath.tracing_config():
        got = loss_and_grads(compiled)
    return saved[0], eager, got


def test_compiled_loda_block_saves_little_more_than_lora():
    """Compiled, LoDA's f1 is recomputed in the backward from z (a checkpoint inside the fused q/v
    branch): with q/v, c_fc and c_proj adapted, its GPT-2 block saves 46 tensors against LoRA's 38 (66
    without the checkpoint; each is host work at every CUDA-graph replay), and it computes the eager
    block's values and gradients."""
    lora, _, _ = _compiled_block_saves("lora")
    loda, eager, compiled = _compiled_block_saves("loda")
    assert loda <= lora + 12, (loda, lora)  # torch 2.13 on CPU: 46 vs 38; 66 without the checkpoint
    for got, want in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_compile_failure_names_the_switch_that_runs_eager(tmp_path, glue_dir, monkeypatch):
    """train.compile is on by default for long CUDA runs: when it fails, the record and stderr say
    how to run without it."""
    from runners.train import run

    def broken(gm, example_inputs, **kwargs):
        raise RuntimeError("no kernel for this op")

    monkeypatch.setattr(torch, "_TorchCompileInductorWrapper", lambda *a: broken)
    over = ("model=tiny_deberta", "task=glue/rte", f"task.data_dir={glue_dir}", "method=lora")
    over += ("+task.max_train_samples=32", "train.batch_size=8", "train.epochs=1", "train.compile=true")
    with pytest.raises(Exception, match="no kernel for this op"):
        run(make_cfg(*over, results_dir=tmp_path))
    (path,) = (tmp_path / "runs").glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["status"] == "failed" and "no kernel for this op" in rec["error"]
    assert rec["error"].endswith("(raised by torch.compile: train.compile=false runs this eager)")


# One row per kind of method hook (PEFT-built AdaLoRA / prefix, SoRA's proximal gates, bottleneck
# adapters, partial-FT gradient masks, full FT, LoDA's residual; the lora family is the inductor test
# above): compiled layers under Dynamo + AOT autograd (`aot_eager`: inductor's C++ build would take
# half a minute per row here). scripts/gpu_checks.sh `methods` runs them with inductor + CUDA graphs.
COMPILED_ROWS = [
    ("tiny_deberta", "ft"),
    ("tiny_deberta", "adalora"),
    ("tiny_deberta", "sora"),
    ("tiny_gpt2", "adapter_h"),
    ("tiny_deberta", "ft_qv"),
    ("tiny_gpt2", "prefix"),
    ("tiny_gpt2", "loda_plus"),
    ("tiny_deberta", "peft/dora"),  # PEFT's own LoRA layers (issue 29): DoRA's weight norm inside the layer
    ("tiny_deberta", "peft/vera"),  # shared frozen buffers across layers
]
# Rows whose layer code Dynamo cannot trace whole: PEFT 0.21's DoRA reads its base weight through
# peft/utils/integrations.py `dequantize_module_weight` (`type(w).__module__`), a graph break, so parts of
# each layer run eager (one graph per piece, per layer). Same results, less speed: docs/PERFORMANCE.md.
GRAPH_BREAKS = {"peft/dora"}


@pytest.mark.slow
@pytest.mark.parametrize("model,method", COMPILED_ROWS)
def test_every_kind_of_method_trains_compiled_like_eager(model, method, tmp_path, glue_dir, stub_inductor):
    """train.compile=true traces each method's layers once (no per-layer or per-step recompiles) and
    gives the eager run's loss curve."""
    from runners.train import run

    graphs = stub_inductor(aot=True)
    short_adalora = (
        "method.init_r=4",
        "method.target_r=2",
        "method.tinit=1",
        "method.tfinal=1",
        "method.deltaT=1",
    )
    common = (
        f"model={model}", "task=glue/rte", f"task.data_dir={glue_dir}", f"method={method}",
        "+task.max_train_samples=48", "+task.max_eval_samples=8", "train.batch_size=8", "train.epochs=1",
        "train.max_steps=5", "train.checkpoint=false", *(short_adalora if method == "adalora" else ()),
    )  # fmt: skip
    eager = run(make_cfg(*common, results_dir=tmp_path / "eager"))
    compiled = run(make_cfg(*common, "train.compile=true", results_dir=tmp_path / "compiled"))
    assert compiled["env"]["fast_path"]["compiled"].startswith("2 blocks (")
    if method in GRAPH_BREAKS:
        assert len(graphs) > 2  # the break is still there: when PEFT removes it, move the row back
    else:
        assert 1 <= len(graphs) <= 2, f"{len(graphs)} graphs: a layer recompiled"  # the layer (+ loss terms)
    curve = lambda r: torch.tensor([h["train_loss"] for h in r["metrics"]["history"]])  # noqa: E731
    torch.testing.assert_close(curve(compiled), curve(eager), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode,compiled_rows", [("reduce-overhead", {8}), ("default", {8, 4})])
def test_under_cuda_graphs_an_epochs_smaller_last_batch_runs_eager(
    mode, compiled_rows, tmp_path, glue_dir, stub_inductor, monkeypatch
):
    """44 examples in batches of 8: each epoch ends with a batch of 4. Under CUDA graphs that shape
    would be recorded for one step an epoch, so it runs eager; without graphs it runs compiled."""
    from runners.train import run

    rows = []  # the batch size of every compiled layer call

    def backend(gm, example_inputs, **kwargs):
        def call(*args):
            rows.append(max(a.shape[0] for a in args if torch.is_tensor(a) and a.ndim == 3))
            return gm.forward(*args)

        return call

    monkeypatch.setattr(torch, "_TorchCompileInductorWrapper", lambda *args: backend)
    common = (
        "model=tiny_deberta", "task=glue/rte", f"task.data_dir={glue_dir}", "method=lora",
        "+task.max_train_samples=44", "+task.max_eval_samples=8", "train.batch_size=8", "train.epochs=2",
        "train.checkpoint=false",
    )  # fmt: skip
    eager = run(make_cfg(*common, results_dir=tmp_path / "eager"))
    over = ("train.compile=true", f"train.compile_mode={mode}")
    compiled = run(make_cfg(*common, *over, results_dir=tmp_path / "compiled"))
    assert set(rows) == compiled_rows
    # 2 layers; 12 steps: the first runs eager, and under graphs so do the 2 epochs' batches of 4
    assert len(rows) == 2 * (11 if mode == "default" else 9)
    curve = lambda r: torch.tensor([h["train_loss"] for h in r["metrics"]["history"]])  # noqa: E731
    torch.testing.assert_close(curve(compiled), curve(eager), rtol=1e-4, atol=1e-5)


def test_inductor_cache_dir_follows_each_runs_results_dir_but_keeps_the_users(tmp_path, monkeypatch):
    """Runs of one process (a sweep worker, a test session) with other results dirs each get their own
    inductor cache; a TORCHINDUCTOR_CACHE_DIR the user set is never replaced."""
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setattr(fastpath, "_ours", None)
    first = fastpath.use_cache_dir(tmp_path / "a")
    assert first == str((tmp_path / "a" / ".cache" / "inductor").resolve())
    assert fastpath.use_cache_dir(tmp_path / "b") == str((tmp_path / "b" / ".cache" / "inductor").resolve())
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert fastpath.use_cache_dir(tmp_path / "c") == str(tmp_path / "mine")
