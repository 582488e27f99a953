"""E2E / DART: readers, LoRA's encoding and loss, grouped evaluation with saved files, end to end."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from core import ConfigError
from models.hf import build_model, build_tokenizer
from runners.config import TRAIN_KEYS, typed
from runners.train import run
from tasks import TASKS
from tasks.base import DataError, EvalContext, data_record
from tasks.dart import Config as DartConfig
from tasks.dart import Dart, official_text
from tasks.e2e import E2E, read_csv_file, read_lora_file
from tasks.e2e import Config as E2EConfig
from tasks.metrics import dart as dart_metrics
from tasks.metrics import e2e as e2e_metrics
from tasks.nlg import group_by_source, postprocess
from tests.conftest import SHARED, make_cfg
from tests.test_experiments import _sweep

E2E_DIR = SHARED / "e2e" / "lora_format"
DART_DIR = SHARED / "dart"
EOS, NEWLINES = 50256, 628


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(make_cfg("model=tiny_gpt2", "task=e2e").model, [])


def e2e_task(**kw) -> E2E:
    return E2E(
        E2EConfig(data_dir=str(E2E_DIR), train_split="validation[:20]", eval_splits=["validation"], **kw)
    )


def test_e2e_files_read_and_group_as_released():
    valid, test = read_lora_file(E2E_DIR / "valid.txt"), read_lora_file(E2E_DIR / "test.txt")
    assert (len(valid), len(group_by_source(valid))) == (4672, 547)
    assert (len(test), len(group_by_source(test))) == (4693, 630)
    assert test[0] == (
        "name : Blue Spice | Type : coffee shop | area : city centre",
        "A coffee shop in the city centre area called Blue Spice .",
    )
    csv = read_csv_file(SHARED / "e2e" / "devset.csv")
    assert (len(csv), len(group_by_source(csv))) == (4672, 547)
    assert csv[0][0] == "name[Alimentum], area[city centre], familyFriendly[no]"
    with pytest.raises(DataError, match="testset.csv has no references"):
        read_csv_file(SHARED / "e2e" / "testset.csv")


def test_grouping_keeps_first_appearance_order():
    pairs = [("b", "1"), ("a", "2"), ("b", "3"), ("c", "4"), ("a", "5")]
    assert group_by_source(pairs) == [("b", ["1", "3"]), ("a", ["2", "5"]), ("c", ["4"])]


def test_dart_json_linearised_as_lora_one_pair_per_annotation():
    cfg = DartConfig(data_dir=str(DART_DIR), train_split="validation", eval_splits=["test"])
    task = Dart(DartConfig(**{**cfg.__dict__, "files": {"test": "dart-v1.1.1-full-test.from_xml.json"}}))
    assert len(task.raw["train"]) == 6980
    assert sum(len(refs) for _, refs in task.sources["test"]) == 12552
    assert task.raw["train"][0] == (
        "Mars Hill College : joined : 1973 | Mars Hill College : location : Mars Hill, North Carolina",
        "A school from Mars Hill, North Carolina, joined in 1973.",
    )
    with pytest.raises(DataError, match=r"missing dart file .*full-test.json; set task.data_dir"):
        Dart(cfg)


def test_yaml_defaults_follow_the_reference():
    e2e, dart = make_cfg("task=e2e").task, make_cfg("task=dart").task
    assert (e2e.label_smoothing, e2e.length_penalty, dart.label_smoothing, dart.length_penalty) == (
        0.1,
        0.9,
        0,
        0.8,
    )
    for t in (e2e, dart):
        assert (t.num_beams, t.no_repeat_ngram_size, t.max_new_tokens) == (10, 4, 64)
        assert list(t.stop) == ["<|endoftext|>", "\n\n"]
    assert list(dart.eval_epochs) == [5, 10]


def test_encoding_and_smoothed_loss_match_lora(tokenizer):
    task = e2e_task(label_smoothing=0.1)
    torch.manual_seed(0)
    model = build_model(make_cfg("model=tiny_gpt2", "task=e2e").model, task.head, tokenizer)
    data = task.build(model, tokenizer)
    ctx, ref = task.raw["train"][0]
    item = data.train[0]
    c, r = tokenizer.encode(ctx), tokenizer.encode(" " + ref)
    assert item["input_ids"] == c + [EOS] + r + [EOS]
    assert item["labels"] == [-100] * (len(c) + 1) + r + [EOS]
    assert task.beam.stop_token_ids == (EOS, NEWLINES)
    batch = data.collate(data.train[:4])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    logp = torch.log_softmax(logits.double(), -1)
    nll = -logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    lora = ((0.9 * nll + 0.1 * -logp.mean(-1)) * mask).sum() / mask.sum()  # gpt2_ft.py's formula
    loss, preds, y = task.forward(model, batch)
    assert preds is None and len(y) == 4
    assert float(loss.detach()) == pytest.approx(float(lora), rel=1e-5)


def test_bad_stop_string_and_too_long_prompts_name_the_fix(tokenizer):
    model = SimpleNamespace(config=SimpleNamespace(n_positions=40))
    with pytest.raises(ConfigError, match="1-token strings"):
        e2e_task(stop=["<|endoftext|>", "the end"]).build(model, tokenizer)
    with pytest.raises(ConfigError, match="lower task.max_new_tokens"):
        e2e_task(max_new_tokens=30).build(model, tokenizer)


# ---------------------------------------------------------------------- evaluation with an oracle LM


class _Cache:
    """The two cache calls beam search makes, over per-row token lists."""

    def __init__(self, rows):
        self.rows = rows

    def batch_repeat_interleave(self, k):
        self.rows = [list(r) for r in self.rows for _ in range(k)]

    def reorder_cache(self, index):
        self.rows = [list(self.rows[i]) for i in index.tolist()]


class OracleLM(nn.Module):
    """Emits targets[prompt] token by token (log p ≈ 0), then eos; `base_model` gives the NLL path."""

    def __init__(self, targets: dict[tuple, list[int]], vocab: int):
        super().__init__()
        self.targets, self.vocab = targets, vocab
        self.config = SimpleNamespace(n_positions=1024)
        self.head = nn.Linear(1, vocab)

    def get_output_embeddings(self):
        return self.head

    def base_model(self, input_ids, attention_mask):
        return SimpleNamespace(last_hidden_state=torch.zeros(*input_ids.shape, 1))

    def forward(self, input_ids, attention_mask, past_key_values=None, **_):
        if past_key_values is None:
            past_key_values = _Cache([ids[m.bool()].tolist() for ids, m in zip(input_ids, attention_mask)])
        else:
            for row, tok in zip(past_key_values.rows, input_ids[:, -1].tolist()):
                row.append(tok)
        logits = torch.full((len(input_ids), 1, self.vocab), -30.0)
        for b, row in enumerate(past_key_values.rows):
            cut = row.index(EOS) + 1  # the prompt ends at the separator
            target = self.targets[tuple(row[:cut])]
            done = len(row) - cut
            logits[b, 0, target[done] if done < len(target) else EOS] = 0.0
        return SimpleNamespace(logits=logits, past_key_values=past_key_values)


def oracle_eval(
    task, tokenizer, tmp_path, tails, text=lambda i, refs: refs[0], autocast=contextlib.nullcontext
):
    """Evaluates `task` on its first split with an LM that writes `text(i, refs)` (default: each
    source's first reference) followed by `tails[i % len(tails)]`."""
    model = SimpleNamespace(config=SimpleNamespace(n_positions=1024))
    data = task.build(model, tokenizer)
    split = next(iter(data.evals))
    targets = {}
    for i, item in enumerate(data.evals[split]):
        targets[tuple(item["prompt"])] = tokenizer.encode(" " + text(i, item["refs"])) + tails[i % len(tails)]
    oracle = OracleLM(targets, len(tokenizer))
    ctx = EvalContext(lambda b: b, autocast, tmp_path / "out", 1, split)
    loader = [data.eval_collate(data.evals[split][i : i + 3]) for i in range(0, len(data.evals[split]), 3)]
    return task.evaluate(oracle, loader, ctx), data.evals[split], ctx.out_dir


def test_e2e_evaluation_decodes_groups_scores_and_saves(tokenizer, tmp_path):
    task = e2e_task(num_beams=2, max_new_tokens=40, max_eval_samples=7, java_metrics=False)
    # after the reference: eos | "\n\n" then more text (cut there) | a single newline then eos
    tails = [
        [EOS],
        [NEWLINES] + tokenizer.encode(" more"),
        tokenizer.encode("\n") + tokenizer.encode("x") + [EOS],
    ]
    scores, items, out = oracle_eval(task, tokenizer, tmp_path, tails)
    hyps = (out / "hypotheses.txt").read_text().splitlines()
    expected = [
        it["refs"][0] + (" x" if i % 3 == 2 else "") for i, it in enumerate(items)
    ]  # newline -> space
    assert hyps == expected
    assert [g for g in e2e_metrics.read_files(out / "hypotheses.txt", out / "references.txt")[1]] == [
        it["refs"] for it in items
    ]
    rescored = e2e_metrics.score_files(out / "hypotheses.txt", out / "references.txt", coco=False)["scores"]
    assert {k: scores[k] for k in rescored} == rescored
    assert 0.9 < scores["BLEU"] <= 1.0 and scores["NIST"] > 3
    assert task.notes() == {
        "unavailable_metrics": dict.fromkeys(("METEOR", "ROUGE_L", "CIDEr"), "not requested"),
        "decode_precision": "fp32",
    }
    assert (out / "scores.json").is_file()


def _dart_eval_cfg(max_eval_samples: int) -> DartConfig:
    """A small DART evaluation on the dev file: 2 beams, no Java metrics."""
    return DartConfig(
        data_dir=str(DART_DIR),
        train_split="validation[:5]",
        eval_splits=["validation"],
        num_beams=2,
        max_new_tokens=60,
        max_eval_samples=max_eval_samples,
        java_metrics=False,
    )


def test_dart_evaluation_writes_generation_eval_layout(tokenizer, tmp_path):
    cfg = _dart_eval_cfg(max_eval_samples=5)
    scores, items, out = oracle_eval(Dart(cfg), tokenizer, tmp_path, [[EOS]])
    refs = [(out / f"reference{k}").read_text().splitlines() for k in range(6)]
    for i, it in enumerate(items):
        group = it["refs"][:6] + [it["refs"][0]] * (6 - len(it["refs"][:6]))
        assert [refs[k][i] for k in range(6)] == [official_text(r) for r in group]
    rescored = dart_metrics.score_files(
        out / "hypotheses.txt", [out / f"reference{k}" for k in range(6)], meteor=False
    )
    assert {k: scores[k] for k in rescored["scores"]} == rescored["scores"]
    assert scores["BLEU"] == pytest.approx(100.0) and scores["TER"] == 0.0


def test_dart_files_are_what_eval_py_reads_and_give_the_record_numbers(tokenizer, tmp_path):
    """LoRA writes DART files with `gpt2_decode.py --tokenize --lower` and eval.py scores them as
    they are: the written files, scored without any preprocessing, give the record's numbers."""
    cfg = _dart_eval_cfg(max_eval_samples=6)
    # outputs unlike their references in case and spacing: upper-cased, a reference, a shortened one
    texts = [lambda r: r[0].upper(), lambda r: r[-1], lambda r: " ".join(r[0].split()[:-2])]
    scores, items, out = oracle_eval(Dart(cfg), tokenizer, tmp_path, [[EOS]], lambda i, r: texts[i % 3](r))
    hyps = (out / "hypotheses.txt").read_text(encoding="utf-8").splitlines()
    assert hyps[0] == dart_metrics.lora_tokenize(items[0]["refs"][0].lower())  # lower, then tokenise
    lines = "\n".join(hyps + (out / "reference0").read_text(encoding="utf-8").splitlines())
    assert lines == lines.lower() and not re.search(r"\w[^\w\s]|[^\w\s]\w", lines)  # no glued punctuation
    refs = [out / f"reference{k}" for k in range(6)]
    as_eval_py = dart_metrics.score_files(out / "hypotheses.txt", refs, preprocess=False, meteor=False)
    assert as_eval_py["scores"] == {k: scores[k] for k in ("BLEU", "TER")}
    assert 20 < scores["BLEU"] < 100  # an honest mix of hits and misses, not a trivial case


def test_decoding_runs_in_fp32_by_default_and_the_record_says_so(tokenizer, tmp_path):
    """Evaluation under a bf16 autocast (as on CUDA): beam search leaves it (task.decode_precision=fp32,
    LoRA's gpt2_beam.py decodes the fp32 model); bf16 decodes under it. scores.json and notes say which."""
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    dtypes = []
    real = OracleLM.forward

    def spy(self, *a, **kw):  # whether the model runs under autocast when beam search calls it
        dtypes.append(torch.is_autocast_enabled("cpu"))
        return real(self, *a, **kw)

    for precision, expect in (("fp32", "fp32"), ("bf16", "bf16 autocast")):
        task = e2e_task(
            num_beams=2, max_new_tokens=8, max_eval_samples=2, java_metrics=False, decode_precision=precision
        )
        dtypes.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(OracleLM, "forward", spy)
            _, _, out = oracle_eval(task, tokenizer, tmp_path / precision, [[EOS]], autocast=bf16)
        assert dtypes and set(dtypes) == {precision == "bf16"}  # autocast on inside decoding only for bf16
        assert task.notes()["decode_precision"] == expect
        assert f'"decode_precision": "{expect}"' in (out / "scores.json").read_text()
    with pytest.raises(ConfigError, match="task.decode_precision must be fp32 or bf16"):
        e2e_task(decode_precision="fp16")


def _runs(exp: str):
    for arm in _sweep(exp)["arm"]:
        yield make_cfg(f"experiment={exp}", f"arm={arm}", "seed=1")


@pytest.mark.parametrize("exp", ["loda_table1_e2e", "loda_table2_dart"])
def test_loda_tables_train_gpt2_without_backbone_dropout(exp):
    """microsoft/LoRA examples/NLG/src/model.py has no dropout besides the adapter's (REFERENCE.md):
    every run of both LoDA tables sets HF GPT-2's three dropouts to 0 (in the record's model config)."""
    for cfg in _runs(exp):
        assert cfg.model.name == "gpt2_medium"
        assert {
            k: cfg.model.config.get(k) for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")
        } == dict.fromkeys(("resid_pdrop", "embd_pdrop", "attn_pdrop"), 0.0), cfg.method.name


def test_e2e_table_reads_loras_files_and_the_record_names_them():
    """LoDA Table 1 reads microsoft/LoRA's E2E files by default (not the Hub's e2e_nlg); offline its
    train.txt is missing and the error says so; the data record names the files and their sha256."""
    cfg = make_cfg("experiment=loda_table1_e2e", "arm=e2e/lora", "seed=1")
    task_cfg = typed(TASKS["e2e"].Config, cfg.task, "task", drop=TRAIN_KEYS)
    assert task_cfg.format == "lora" and Path(task_cfg.data_dir).resolve() == E2E_DIR.resolve()
    with pytest.raises(DataError, match=r"train.txt is not in the offline shared data.*validation\[:N\]"):
        E2E(task_cfg)
    smoke = make_cfg("experiment=loda_table1_e2e_smoke", "arm=e2e/lora", "seed=1")
    record = data_record(E2E, typed(TASKS["e2e"].Config, smoke.task, "task", drop=TRAIN_KEYS))
    assert (
        record["source"]
        == f"files: {smoke.task.data_dir} (microsoft/LoRA examples/NLG/data/e2e MR||ref files)"
    )
    assert set(record["files"]) == {"valid.txt", "test.txt"} and len(record["fingerprint"]) == 64
    hub = E2EConfig(format="hub", data_dir=None)
    assert data_record(E2E, hub) == {"source": "hub: e2e_nlg", "files": {}, "fingerprint": None}
    with pytest.raises(ConfigError, match="task.format=lora reads files: set task.data_dir"):
        E2EConfig(data_dir=None)
    csv = E2EConfig(format="csv", data_dir=str(SHARED / "e2e"), train_split="validation")
    assert set(data_record(E2E, csv)["files"]) == {"devset.csv", "testset_w_refs.csv"}


def test_postprocess_cuts_at_the_first_stop_string():
    assert postprocess(" a b\n\nc<|endoftext|>d", ["<|endoftext|>", "\n\n"]) == "a b"
    assert postprocess(" a<|endoftext|>b\n\nc", ["<|endoftext|>", "\n\n"]) == "a"
    assert postprocess(" a\nb ", ["<|endoftext|>", "\n\n"]) == "a b"


# ---------------------------------------------------------------------- end to end (runner)

TINY = [
    "model=tiny_gpt2",
    "task.num_beams=2",
    "task.max_new_tokens=12",
    "train.batch_size=8",
    "task.max_eval_samples=4",
]


@pytest.mark.slow
def test_e2e_lora_run_writes_every_metric_and_the_hypotheses(tmp_path):
    cfg = make_cfg(
        *TINY,
        "task=e2e",
        "method=lora",
        f"task.data_dir={E2E_DIR}",
        'task.train_split="validation[:8]"',
        "task.eval_splits=[test]",
        "task.max_eval_samples=2",
        "train.epochs=1",
        results_dir=tmp_path,
    )
    record = run(cfg)
    assert record["status"] == "success" and record["task"] == "e2e"
    scores = record["metrics"]["final"]["test"]
    unavailable = record.get("task_notes", {}).get("unavailable_metrics", {})
    for metric in ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"):
        assert metric in scores or metric in unavailable  # Java missing: listed with the reason
    assert all("java" in reason.lower() for reason in unavailable.values())
    out = tmp_path / "runs" / record["run_id"] / "attempt-1" / "outputs" / "epoch_1" / "test"
    assert len((out / "hypotheses.txt").read_text().splitlines()) == 2
    assert len(e2e_metrics.read_files(out / "hypotheses.txt", out / "references.txt")[1]) == 2
    assert record["params"]["method_trainable"] > 0
    assert set(record["data"]["files"]) == {"valid.txt", "test.txt"}  # what was read, with sha256s
    assert record["task_notes"]["decode_precision"] == "fp32"


@pytest.mark.slow
def test_e2e_and_dart_runs_learn(tmp_path):
    """Full fine-tuning of the tiny random GPT-2 (LoRA on it cannot sharpen the frozen tied LM head)."""
    common = [
        *TINY,
        "method=ft",
        "train.lr=1e-2",
        "train.epochs=4",
        "train.eval_epochs=[1]",
        "task.java_metrics=false",
    ]
    e2e = make_cfg(
        *common,
        "task=e2e",
        f"task.data_dir={E2E_DIR}",
        'task.train_split="validation[:48]"',
        'task.eval_splits=["validation[:48]"]',
        results_dir=tmp_path,
    )
    dart = make_cfg(
        *common,
        "task=dart",
        f"task.data_dir={DART_DIR}",
        'task.train_split="validation[:48]"',
        'task.eval_splits=["validation[:48]"]',
        results_dir=tmp_path,
    )
    for cfg in (e2e, dart):
        record = run(cfg)
        first, last = record["metrics"]["history"][0]["eval"], record["metrics"]["final"]
        split = next(iter(last))
        assert last[split]["loss"] < first[split]["loss"] - 2.0  # nats per reference token
        assert (
            record["metrics"]["history"][-1]["train_loss"]
            < 0.7 * record["metrics"]["history"][0]["train_loss"]
        )


# ------------------------------------------------------------------ faulty files (issue 26 #4)


def _with_latin1(path: Path, line: int, after: bytes) -> int:
    """Puts a latin-1 é after the first `after` of line `line`; returns its byte offset."""
    raw = path.read_bytes()
    start = sum(len(x) for x in raw.splitlines(keepends=True)[: line - 1])
    at = raw.index(after, start) + len(after)
    path.write_bytes(raw[:at] + b"\xe9" + raw[at:])
    return at


def _head(src: Path, dst: Path, n: int) -> Path:
    dst.write_bytes(b"".join(src.read_bytes().splitlines(keepends=True)[:n]))
    return dst


def _nlg_task(cls, cfg_cls, folder, files, split="validation", **kw):
    return cls(
        cfg_cls(data_dir=str(folder), files=files, train_split="validation", eval_splits=[split], **kw)
    )


def test_latin1_byte_in_e2e_and_dart_files_names_file_and_line(tmp_path):
    lora = _head(E2E_DIR / "valid.txt", tmp_path / "valid.txt", 30)
    at = _with_latin1(lora, 7, b" ")
    with pytest.raises(DataError, match=rf"valid.txt:7: byte 0xe9 at offset {at} is not UTF-8.*re-save"):
        _nlg_task(E2E, E2EConfig, tmp_path, {"validation": "valid.txt"})
    csv_file = _head(SHARED / "e2e" / "devset.csv", tmp_path / "devset.csv", 20)
    _with_latin1(csv_file, 5, b"[")
    with pytest.raises(DataError, match=r"devset.csv:5: byte 0xe9"):
        _nlg_task(E2E, E2EConfig, tmp_path, {"validation": "devset.csv"}, format="csv")
    entries = json.loads((DART_DIR / "dart-v1.1.1-full-dev.json").read_text(encoding="utf-8"))[:5]
    dart = tmp_path / "dev.json"
    dart.write_text(json.dumps(entries, indent=1), encoding="utf-8")
    line = next(i for i, x in enumerate(dart.read_bytes().splitlines(), 1) if b'"text"' in x)
    _with_latin1(dart, line, b'"text": "')
    with pytest.raises(DataError, match=rf"dev.json:{line}: byte 0xe9"):
        _nlg_task(Dart, DartConfig, tmp_path, {"validation": "dev.json"})


def test_an_empty_e2e_split_names_its_file(tmp_path):
    (tmp_path / "valid.txt").write_text("\n")
    with pytest.raises(DataError, match=r"valid.txt holds no e2e pairs; is the file complete"):
        _nlg_task(E2E, E2EConfig, tmp_path, {"validation": "valid.txt"})
    _head(E2E_DIR / "valid.txt", tmp_path / "valid.txt", 30)
    with pytest.raises(
        DataError, match=r"valid.txt: split 'validation\[40:\]' selects none of its 30 e2e pairs"
    ):
        _nlg_task(E2E, E2EConfig, tmp_path, {"validation": "valid.txt"}, split="validation[40:]")
    (tmp_path / "devset.csv").write_text("mr,ref\nname[A],\n")  # a row without its reference
    with pytest.raises(DataError, match=r"devset.csv:2: empty or missing mr / ref"):
        _nlg_task(E2E, E2EConfig, tmp_path, {"validation": "devset.csv"}, format="csv")
