"""SQuAD v1.1 (Rajpurkar et al., 2016): extractive QA with a span head (start / end logits per token).

Data: `datasets.load_dataset("squad")` by default; with `task.data_dir` the original JSON layout
(`{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question", "answers"}]}]}]}`),
files named by `task.files` (offline: only the reconstructed dev set exists, so tests train on a
slice of it). Splits accept question-level slices: `validation[:64]`.

Features (HF `run_qa.py`): question + context, context truncated into overlapping windows of at
most `max_length` tokens that share `doc_stride` tokens (the tokenizer's `stride`, HF's meaning of
doc_stride). Training label of a window: the answer's first / last token, or the CLS token (index
0 where the tokenizer has none) when the answer is not wholly inside it.

Prediction: for each window the `n_best` highest start and end logits; a pair (s, e) is a
candidate when both tokens are context tokens, e ≥ s and e − s + 1 ≤ `max_answer_length`, with
score start_logit[s] + end_logit[e]; the example's answer is the text
context[offset(s).start : offset(e).end] (stripped) of its best candidate over all its windows ("" if
none). EM / F1: `tasks.metrics.squad` (evaluate-v1.1.py). Each evaluation writes
`predictions.json` ({id: answer}, the official format) and `dataset.json` (the evaluated questions
in SQuAD layout) to its output folder: `python -m tasks.metrics squad dataset.json predictions.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core import ConfigError, atomic_write
from tasks.base import DataError, EvalContext, Task, TaskData, not_empty, read_text
from tasks.batching import encoder_pads, pad_collate
from tasks.glue import SPLIT, parse_split
from tasks.metrics.squad import squad_scores


@dataclass
class Config:
    name: str = "squad"
    hub_id: str = "squad"
    data_dir: str | None = None
    files: dict = field(default_factory=lambda: {"train": "train-v1.1.json", "validation": "dev-v1.1.json"})
    train_split: str = "train"
    eval_splits: list[str] = field(default_factory=lambda: ["validation"])
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_length: int = 384
    doc_stride: int = 128  # tokens shared by consecutive windows
    n_best: int = 20
    max_answer_length: int = 30

    def __post_init__(self):
        check_common(self)
        for split in [self.train_split, *self.eval_splits]:
            if not SPLIT.match(split):
                raise ConfigError(
                    f"bad split {split!r}; use a name with an optional slice, e.g. validation[:256]"
                )
        if not 0 <= self.doc_stride < self.max_length:
            raise ConfigError(f"task.doc_stride must be in [0, max_length), got {self.doc_stride}")
        if self.n_best < 1 or self.max_answer_length < 1:
            raise ConfigError("task.n_best and task.max_answer_length must be >= 1")


def check_common(cfg) -> None:
    """Sample caps are integers >= 1 or null; at least one eval split."""
    for key in ("max_train_samples", "max_eval_samples"):
        value = getattr(cfg, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"task.{key} must be an integer >= 1 or null (all), got {value!r}")
    if not cfg.eval_splits:
        raise ConfigError("task.eval_splits is empty; give at least one split, e.g. [validation]")
    if cfg.max_length < 16:
        raise ConfigError(f"task.max_length must be >= 16 tokens, got {cfg.max_length}")


def check_questions(rows: list[dict], where: str) -> list[dict]:
    """Every question has an id of its own and >= 1 answer (text, int start): what training labels
    and the v1.1 metric need (evaluate-v1.1.py takes max() over the answers: none crashes it)."""
    seen = set()
    for r in rows:
        qid, answers = r["id"], r["answers"]
        if qid in seen:
            raise DataError(
                f"{where}: question id {qid!r} occurs twice (predictions are keyed by id); make ids unique"
            )
        seen.add(qid)
        if not answers["text"]:
            raise DataError(
                f"{where}: question {qid!r} has no answers; SQuAD v1.1 scores every question against its "
                f"answers (v2.0 unanswerable questions are not supported): remove it or add its answers"
            )
        bad = [t for t in answers["text"] if not isinstance(t, str)]
        bad += [s for s in answers["answer_start"] if isinstance(s, bool) or not isinstance(s, int)]
        if bad:
            raise DataError(
                f"{where}: question {qid!r}: answer field {bad[0]!r} is not a text / integer start"
            )
    return rows


def read_squad_json(path: Path) -> list[dict]:
    """Questions of a SQuAD v1.1 JSON file in file order: {id, title, context, question, answers}."""
    try:
        data = json.loads(read_text(path))["data"]
        rows = [
            {
                "id": qa["id"],
                "title": article.get("title", ""),
                "context": paragraph["context"],
                "question": qa["question"],
                "answers": {
                    "text": [a["text"] for a in qa["answers"]],
                    "answer_start": [a["answer_start"] for a in qa["answers"]],
                },
            }
            for article in data
            for paragraph in article["paragraphs"]
            for qa in paragraph["qas"]
        ]
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {e.lineno}: invalid JSON ({e.msg}); is the file complete?") from None
    except (KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{path}: not a SQuAD v1.1 JSON file ({type(e).__name__}: {e})") from None
    return check_questions(rows, str(path))


def load_split(cfg: Config, split: str) -> list[dict]:
    name, part = parse_split(split)
    if cfg.data_dir:
        if name not in cfg.files:
            raise ConfigError(f"no file for split {name!r}; set task.files.{name}=<file in task.data_dir>")
        path = Path(cfg.data_dir) / cfg.files[name]
        if not path.is_file():
            raise DataError(
                f"missing SQuAD file {path}; set task.data_dir / task.files.{name} "
                f"(offline: task.files.{name}=dev-v1.1.reconstructed.json) or task.data_dir=null for the Hub"
            )
        return not_empty(read_squad_json(path), part, str(path), split, "questions")
    import datasets

    try:
        ds = datasets.load_dataset(cfg.hub_id, split=split)
    except Exception as e:  # offline machines land here
        raise DataError(
            f"could not load {cfg.hub_id} {split} from the Hub ({type(e).__name__}); "
            f"set task.data_dir to a folder of SQuAD JSON files"
        ) from e
    rows = [
        {k: r[k] for k in ("id", "title", "context", "question")}
        | {
            "answers": {
                "text": list(r["answers"]["text"]),
                "answer_start": list(r["answers"]["answer_start"]),
            }
        }
        for r in ds
    ]
    return not_empty(
        check_questions(rows, f"{cfg.hub_id} {split}"), slice(None), cfg.hub_id, split, "questions"
    )


def as_squad_dataset(examples: list[dict]) -> list[dict]:
    """The "data" list of a SQuAD v1.1 file holding `examples` (one paragraph per question)."""
    return [
        {
            "title": ex["title"],
            "paragraphs": [
                {
                    "context": ex["context"],
                    "qas": [
                        {
                            "id": ex["id"],
                            "question": ex["question"],
                            "answers": [
                                {"text": t, "answer_start": s}
                                for t, s in zip(ex["answers"]["text"], ex["answers"]["answer_start"])
                            ],
                        }
                    ],
                }
            ],
        }
        for ex in examples
    ]


def make_features(
    examples: list[dict], tokenizer, max_length: int, stride: int, keep_meta: bool
) -> list[dict]:
    """Overlapping windows of every example, with start / end labels (and offsets for evaluation)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("SQuAD needs a fast tokenizer (offset mappings); set model.tokenizer to one")
    enc = tokenizer(
        [ex["question"].lstrip() for ex in examples],
        [ex["context"] for ex in examples],
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    cls_id = tokenizer.cls_token_id
    features = []
    for i, offsets in enumerate(enc["offset_mapping"]):
        ex_index = enc["overflow_to_sample_mapping"][i]
        ex = examples[ex_index]
        seq = enc.sequence_ids(i)
        ids = enc["input_ids"][i]
        cls = ids.index(cls_id) if cls_id is not None and cls_id in ids else 0
        ctx = [j for j, s in enumerate(seq) if s == 1]
        start = end = cls
        if ex["answers"]["text"]:
            a_start = ex["answers"]["answer_start"][0]
            a_end = a_start + len(ex["answers"]["text"][0])
            if offsets[ctx[0]][0] <= a_start and offsets[ctx[-1]][1] >= a_end:
                start = next(j for j in reversed(ctx) if offsets[j][0] <= a_start)
                end = next(j for j in ctx if offsets[j][1] >= a_end)
        feature = {k: enc[k][i] for k in enc if k not in ("offset_mapping", "overflow_to_sample_mapping")}
        feature.update(start_positions=start, end_positions=end)
        if keep_meta:
            feature["meta"] = (ex_index, [tuple(o) if s == 1 else None for o, s in zip(offsets, seq)])
        features.append(feature)
    return features


def best_answer(
    windows: list[tuple[np.ndarray, np.ndarray, list]], context: str, n_best: int, max_answer_length: int
) -> str:
    """Best span over all windows of one example (see the module docstring).

    Args:
        windows: per window (start_logits, end_logits, offsets) with offsets[j] = (char start, char end)
            for context tokens and None for every other token; logits may be longer (padding).
    """
    best, text = -np.inf, ""
    for start_logits, end_logits, offsets in windows:
        n = len(offsets)
        starts = np.argsort(start_logits[:n])[::-1][:n_best]
        ends = np.argsort(end_logits[:n])[::-1][:n_best]
        for s in starts:
            if offsets[s] is None:
                continue
            for e in ends:
                if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                    continue
                score = start_logits[s] + end_logits[e]
                if score > best:
                    best, text = score, context[offsets[s][0] : offsets[e][1]]
    return text.strip()


class Squad(Task):
    name, main_metric, higher_is_better = "squad", "f1", True

    @classmethod
    def data_source(cls, cfg) -> str:
        return f"files: {cfg.data_dir} (SQuAD JSON)" if cfg.data_dir else f"hub: {cfg.hub_id}"

    @classmethod
    def data_files(cls, cfg) -> dict[str, Path]:
        if not cfg.data_dir:
            return {}
        names = {parse_split(s)[0] for s in [cfg.train_split, *cfg.eval_splits]}
        return {cfg.files[n]: Path(cfg.data_dir) / cfg.files[n] for n in sorted(names) if n in cfg.files}

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.raw = {"train": self._take(load_split(cfg, cfg.train_split), cfg.max_train_samples)}
        for split in cfg.eval_splits:
            self.raw[split] = self._take(load_split(cfg, split), cfg.max_eval_samples)

    @staticmethod
    def _take(rows, n):
        return rows if n is None else rows[:n]

    @property
    def head(self) -> dict:
        return {"type": "question_answering"}

    def texts(self):
        for ex in self.raw["train"]:
            yield ex["question"]
            yield ex["context"]

    def build(self, model: nn.Module, tokenizer) -> TaskData:
        positions = getattr(model.config, "max_position_embeddings", None) or getattr(
            model.config, "n_positions", None
        )
        if positions and self.cfg.max_length > positions:
            raise ConfigError(
                f"task.max_length={self.cfg.max_length} exceeds the model's {positions} positions; "
                f"set task.max_length<={positions} (and task.doc_stride below it)"
            )
        c = self.cfg
        train = make_features(self.raw["train"], tokenizer, c.max_length, c.doc_stride, keep_meta=False)
        evals = {
            split: make_features(rows, tokenizer, c.max_length, c.doc_stride, keep_meta=True)
            for split, rows in self.raw.items()
            if split != "train"
        }
        pads = encoder_pads(tokenizer)
        return TaskData(train, evals, pad_collate(pads), pad_collate(pads, passthrough=("meta",)), pads)

    def forward(self, model, batch):
        out = model(**{k: v for k, v in batch.items() if k != "meta"})
        return out.loss, None, batch["start_positions"]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, ctx: EvalContext) -> dict[str, float]:
        model.eval()
        examples = self.raw[ctx.split]
        windows: dict[int, list] = {}
        total, n = 0.0, 0
        for batch in loader:
            batch = ctx.to_device(batch)
            with ctx.autocast():
                out = model(**{k: v for k, v in batch.items() if k != "meta"})
            total = total + out.loss.detach().float() * len(batch["meta"])
            n += len(batch["meta"])
            starts, ends = out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
            for (ex_index, offsets), s, e in zip(batch["meta"], starts, ends):
                windows.setdefault(ex_index, []).append((s, e, offsets))
        c = self.cfg
        predictions = {
            ex["id"]: best_answer(windows.get(i, []), ex["context"], c.n_best, c.max_answer_length)
            for i, ex in enumerate(examples)
        }
        dataset = as_squad_dataset(examples)
        scores = squad_scores(dataset, predictions, warn=False)
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        _write_json(ctx.out_dir / "predictions.json", predictions)
        _write_json(ctx.out_dir / "dataset.json", {"version": "1.1", "data": dataset})
        return {"loss": float(total) / max(n, 1), **scores}


def _write_json(path: Path, obj) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False)

    atomic_write(path, write)


TASK = Squad
