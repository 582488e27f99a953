"""scripts/bench_e2e.py end to end on CPU (tiny model), its phase plan, and the random-weight
DeBERTa-v3-base config (conf/model/deberta_v3_base_random.yaml) at real shapes on the meta device."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import time

import pytest
import torch

from core import ConfigError
from models import hf
from runners.config import ROOT
from tests.conftest import make_cfg

SCRIPT = ROOT / "scripts" / "bench_e2e.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_e2e", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# microsoft/deberta-v3-base config.json (the architecture; vocab_size is the embedding's rows)
DEBERTA_V3_BASE = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "vocab_size": 128100,
    "relative_attention": True,
    "position_buckets": 256,
    "norm_rel_ebd": "layer_norm",
    "share_att_key": True,
    "pos_att_type": ["p2c", "c2p"],
    "layer_norm_eps": 1e-7,
    "max_relative_positions": -1,
    "position_biased_input": False,
    "type_vocab_size": 0,
    "max_position_embeddings": 512,
    "hidden_act": "gelu",
}


def deberta_params(V=128100, H=768, L=12, inter=3072, buckets=256, labels=2) -> int:
    """Parameter count of DebertaV2ForSequenceClassification with share_att_key, no position or
    token-type embeddings, layer-norm on the relative embeddings, by hand."""
    linear = lambda i, o: i * o + o  # noqa: E731
    ln = 2 * H
    embeddings = V * H + ln
    layer = 4 * linear(H, H) + ln + linear(H, inter) + linear(inter, H) + ln  # q k v o, FFN, 2 LNs
    rel = 2 * buckets * H + ln
    head = linear(H, H) + linear(H, labels)  # pooler.dense, classifier
    return embeddings + L * layer + rel + head


@pytest.mark.slow  # ~3-5 s: transformers' DeBERTa import + compose
def test_random_deberta_v3_base_has_the_real_shapes():
    cfg = make_cfg("model=deberta_v3_base_random", "task=glue/cola", "method=lora")
    tok = hf.train_wordpiece(
        ["a small text to train on", "another sentence"], cfg.model.tokenizer_train_vocab
    )
    with torch.device("meta"):
        model = hf.build_model(cfg.model, {"type": "sequence_classification", "num_labels": 2}, tok)
    c = model.config
    assert {k: getattr(c, k) for k in DEBERTA_V3_BASE} == DEBERTA_V3_BASE
    assert len(tok) < 100  # the trained tokenizer is tiny, the embedding keeps the real 128100 rows
    assert model.get_input_embeddings().weight.shape == (128100, 768)
    n = sum(p.numel() for p in model.parameters())
    assert n == deberta_params() == 184_423_682
    assert model.deberta.embeddings.position_embeddings is None  # position_biased_input: false
    assert model.deberta.encoder.rel_embeddings.weight.shape == (512, 768)
    # the baseline's PEFT config adapts the 72 matrices of conf/model/deberta_v3_base.yaml and trains the head
    from omegaconf import OmegaConf
    from peft import get_peft_model

    resolved = OmegaConf.to_container(cfg, resolve=True)
    peft_model = get_peft_model(
        model, load_script().peft_lora_config(resolved, {"type": "sequence_classification"})
    )
    lora = sum(1 for n, _ in peft_model.named_modules() if n.endswith("lora_A.default"))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    R, H, inter = 8, 768, 3072
    per_layer = 4 * R * (H + H) + 2 * R * (H + inter)  # q k v o, intermediate, output
    assert lora == 72 and trainable == 12 * per_layer + (H * H + H) + (H * 2 + 2) == 1_919_234


def test_config_vocab_size_below_the_tokenizer_is_refused():
    cfg = make_cfg("model=tiny_deberta", "task=glue/cola", "+model.config.vocab_size=10")
    tok = hf.train_wordpiece(["some words here"], 100)
    with pytest.raises(ConfigError, match="vocab_size=10 is smaller"):
        hf.build_model(cfg.model, None, tok)


def test_plan_reuses_the_first_variants_cache_with_the_next_seed(tmp_path, monkeypatch):
    mod = load_script()
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    args = mod.parse(["--runner-overrides", "", "--runner-overrides", "train.bf16=false", "--reuse-cache"])
    phases = mod.plan_phases(args, tmp_path)
    assert [p["kind"] for p in phases] == ["baseline", "runner", "runner", "runner_artifacts", "runner_warm"]
    _, v0, v1, shared, warm = phases
    assert v0["overrides"] == [] and v1["overrides"] == ["train.bf16=false"]
    assert v0["cache"] != v1["cache"]  # each variant starts cold
    assert warm["cache"] == v0["cache"] and warm["overrides"] == v0["overrides"]
    assert warm["seed"] == v0["seed"] + 1
    # issue 28: a fresh node (its own empty inductor dir) with the first variant's compile artifacts
    assert shared["cache"] not in (v0["cache"], v1["cache"]) and shared["artifacts_from"] == v0["results_dir"]
    assert shared["overrides"] == v0["overrides"] and shared["seed"] == warm["seed"]
    assert len({p["results_dir"] for p in phases[1:]}) == 4  # fresh results dir each
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    caches = [p["cache"] for p in mod.plan_phases(args, tmp_path)[1:]]
    assert caches.count(str(tmp_path / "mine")) == 3 and caches[2] == shared["cache"]


def test_bad_data_dir_is_one_line_before_any_phase(tmp_path):
    mod = load_script()
    with pytest.raises(SystemExit, match="set --data-dir") as e:
        mod.main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "o.json")])
    assert "\n" not in str(e.value)
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "o.work").exists()


def test_a_phase_past_its_time_is_stopped_and_later_ones_skipped(tmp_path, glue_dir, monkeypatch):
    mod = load_script()
    with open(tmp_path / "log", "w") as log:
        tic = time.perf_counter()
        assert mod._run([sys.executable, "-c", "import time; time.sleep(30)"], {}, log, 0.5) == "timeout"
        assert time.perf_counter() - tic < 20
    monkeypatch.setattr(mod.subprocess, "run", lambda *a, **k: None)  # the untimed import warm-up
    # and the untimed bytecode prime (a one-step baseline of the default 184M model: minutes on a CPU)
    monkeypatch.setattr(mod, "prime", lambda args, work: {"wall_s": 0.0})
    out = tmp_path / "o.json"
    assert mod.main(["--data-dir", str(glue_dir), "--budget-s", "0", "--out", str(out)]) == 1
    res = json.loads(out.read_text())
    assert [p["rc"] for p in res["phases"]] == ["skipped", "skipped"]
    assert res["budget_s"] == 0 and "--budget-s 0" in res["command"]


@pytest.mark.slow
def test_baseline_and_runner_train_the_same_thing_on_cpu(tmp_path, glue_dir):
    out = tmp_path / "e2e.json"
    cmd = [sys.executable, str(SCRIPT), "--model", "tiny_deberta", "--data-dir", str(glue_dir)]
    cmd += ["--max-steps", "3", "--max-train-samples", "200", "--max-eval-samples", "64", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads(out.read_text())
    for key in ("date", "command", "device", "versions", "env", "note", "phases"):
        assert key in res
    assert res["versions"]["torch"] and res["versions"]["peft"]
    base, runner = res["phases"]
    assert (base["kind"], runner["kind"]) == ("baseline", "runner")
    for row in (base, runner):
        assert row["rc"] == 0 and row["steps"] == 3
        assert math.isfinite(row["final_train_loss"]) and 0 < row["final_train_loss"] < 5
        assert row["main_metric"] == "mcc" and -1 <= row["final_dev"]["mcc"] <= 1
        assert row["wall_s"] > row["train_s"] > 0
    # the same adapted modules, rank and head: PEFT's trainable count equals the runner's
    assert base["trainable"] == runner["trainable"] > 0
    assert runner["timing"]["wall_s"] > 0 and runner["speedup_vs_baseline"] > 0
    assert base["speedup_vs_baseline"] == 1.0
    assert "baseline (PEFT eager)" in proc.stdout and "×base" in proc.stdout
