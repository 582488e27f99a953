"""Data-to-text generation with a causal LM, as microsoft/LoRA `examples/NLG` trains and decodes GPT-2.

Shared by `tasks.e2e` and `tasks.dart`, which only read their files and score. A pair is
(context, completion): the E2E meaning representation or the linearised DART triples, and one
human reference. Encoding (LoRA `gpt2_encode.py --add_bos --add_eos`):

    input  = tok(context) + [eos] + tok(' ' + completion) + [eos]      # eos = <|endoftext|> (50256)
    labels = -100 on tok(context) + [eos], the completion tokens and the final eos after it

Loss: token-mean cross entropy of the next token over the labelled positions, with label smoothing
ε (LoRA: (1 − ε)·nll + ε·mean over the vocabulary of −log p; the same as torch's). One training
example per reference (pairs, not sources).

Evaluation groups the pairs of a split by identical context, in order of first appearance: one
beam-search hypothesis per source (`tasks.decoding`, prompt = tok(context) + [eos]), decoded, cut
at the first stop string, line breaks made spaces, stripped. The split's references are those
of its source. Also reported: `loss`, the token-mean NLL of the references (no smoothing).
Each evaluation writes the hypotheses and grouped references in the official scripts' layouts and
`scores.json` (scores, settings and unavailable metrics with the reason) to its output folder.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core import ConfigError, atomic_write
from tasks.base import DataError, EvalContext, Task, TaskData, not_empty
from tasks.batching import pad_collate
from tasks.decoding import BeamConfig, beam_search_batch
from tasks.squad import check_common

SPLIT = re.compile(r"^(\w+)(?:\[(\d*):(\d*)\])?$")
DECODE_PRECISIONS = ("fp32", "bf16")


@dataclass
class Config:
    name: str = ""
    hub_id: str = ""
    data_dir: str | None = None
    files: dict | None = None  # split -> file name in data_dir; None: the dataset's usual names
    train_split: str = "train"
    eval_splits: list[str] = field(default_factory=lambda: ["validation"])
    max_train_samples: int | None = None  # pairs
    max_eval_samples: int | None = None  # sources (unique contexts)
    max_length: int = 512  # training sequence length (LoRA seq_len)
    label_smoothing: float = 0.0
    num_beams: int = 10
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 4
    max_new_tokens: int = 64
    stop: list[str] = field(default_factory=lambda: ["<|endoftext|>", "\n\n"])
    java_metrics: bool = True  # false: METEOR (and E2E's ROUGE_L / CIDEr) listed unavailable, "not requested"
    # fp32: beam search with autocast off, as microsoft/LoRA decodes (gpt2_beam.py runs the fp32 model,
    # no autocast); bf16: under the training's autocast (bf16 on CUDA), faster, changes some outputs
    decode_precision: str = "fp32"

    def __post_init__(self):
        check_common(self)
        for split in [self.train_split, *self.eval_splits]:
            if not SPLIT.match(split):
                raise ConfigError(
                    f"bad split {split!r}; use a name with an optional slice, e.g. validation[:256]"
                )
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"task.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.num_beams < 1 or self.max_new_tokens < 1 or self.no_repeat_ngram_size < 0:
            raise ConfigError(
                "task.num_beams and task.max_new_tokens must be >= 1, no_repeat_ngram_size >= 0"
            )
        if self.length_penalty < 0:
            raise ConfigError(f"task.length_penalty must be >= 0, got {self.length_penalty}")
        if self.decode_precision not in DECODE_PRECISIONS:
            raise ConfigError(f"task.decode_precision must be fp32 or bf16, got {self.decode_precision!r}")


def parse_split(split: str) -> tuple[str, slice]:
    name, lo, hi = SPLIT.match(split).groups()
    return name, slice(int(lo) if lo else None, int(hi) if hi else None)


def group_by_source(pairs: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """(context, [references]) per unique context, in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for context, ref in pairs:
        groups.setdefault(context, []).append(ref)
    return list(groups.items())


def one_line(text: str) -> str:
    """Line breaks (every kind the metric readers split on) become spaces; stripped."""
    return " ".join(text.splitlines()).strip()


def postprocess(text: str, stops: list[str]) -> str:
    """Cut at the first stop string, one line, stripped (LoRA gpt2_decode)."""
    for stop in stops:
        text = text.split(stop)[0]
    return one_line(text)


class NLGTask(Task):
    """E2E / DART: subclasses define `read_file` / `read_hub`, `score(hyps, refs)`, `write_outputs(...)`."""

    main_metric, higher_is_better = "BLEU", True
    default_files: dict = {}
    file_kind = "files"  # what the data source says the files are

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.files = self.file_names(cfg)
        self.unavailable: dict[str, str] = {}
        self.decoded_in: set[str] = set()  # the precision(s) beam search actually ran in
        self.raw = {"train": self._take(self.load(cfg.train_split), cfg.max_train_samples)}
        self.sources = {}
        for split in cfg.eval_splits:
            self.sources[split] = self._take(group_by_source(self.load(split)), cfg.max_eval_samples)

    @staticmethod
    def _take(rows, n):
        return rows if n is None else rows[:n]

    @classmethod
    def file_names(cls, cfg) -> dict:
        """split -> file name in `task.data_dir`."""
        return {**cls.default_files, **(cfg.files or {})}

    @classmethod
    def reads_files(cls, cfg) -> bool:
        return bool(cfg.data_dir)

    @classmethod
    def data_source(cls, cfg) -> str:
        return f"files: {cfg.data_dir} ({cls.file_kind})" if cls.reads_files(cfg) else f"hub: {cfg.hub_id}"

    @classmethod
    def data_files(cls, cfg) -> dict[str, Path]:
        if not cls.reads_files(cfg):
            return {}
        names, files = {parse_split(s)[0] for s in [cfg.train_split, *cfg.eval_splits]}, cls.file_names(cfg)
        return {files[n]: Path(cfg.data_dir) / files[n] for n in sorted(names) if n in files}

    def missing_hint(self, split: str) -> str:
        """The way forward when the file of `split` is missing."""
        return (
            f"set task.data_dir / task.files.{split}, or task.data_dir=null for the Hub ({self.cfg.hub_id})"
        )

    def load(self, split: str) -> list[tuple[str, str]]:
        name, part = parse_split(split)
        if self.reads_files(self.cfg):
            if name not in self.files:
                raise ConfigError(
                    f"no file for split {name!r}; set task.files.{name}=<file in task.data_dir>"
                )
            path = Path(self.cfg.data_dir) / self.files[name]
            if not path.is_file():
                raise DataError(f"missing {self.name} file {path}; {self.missing_hint(name)}")
            return not_empty(self.read_file(path), part, str(path), split, f"{self.name} pairs")
        import datasets

        try:
            ds = datasets.load_dataset(self.cfg.hub_id, split=split)
        except Exception as e:  # offline machines land here
            raise DataError(
                f"could not load {self.cfg.hub_id} {split} from the Hub ({type(e).__name__}); "
                f"set task.data_dir to a folder of the original {self.name} files"
            ) from e
        return not_empty(self.read_hub(ds), slice(None), self.cfg.hub_id, split, f"{self.name} pairs")

    def read_file(self, path: Path) -> list[tuple[str, str]]:
        raise NotImplementedError

    def read_hub(self, ds) -> list[tuple[str, str]]:
        raise NotImplementedError

    def score(self, hyps: list[str], refs: list[list[str]]) -> dict:
        raise NotImplementedError

    def write_outputs(self, out_dir: Path, hyps: list[str], refs: list[list[str]]) -> None:
        raise NotImplementedError

    def official_texts(self, hyps: list[str], refs: list[list[str]]) -> tuple[list[str], list[list[str]]]:
        """The texts as the authors' decoding script writes them for the official scorer (scored and
        written as such, so that the scorer run on the written files gives the record's numbers)."""
        return hyps, refs

    @property
    def head(self) -> dict:
        return {"type": "causal_lm"}

    def notes(self) -> dict:
        notes = {"unavailable_metrics": dict(self.unavailable)} if self.unavailable else {}
        if self.decoded_in:  # what ran, beside task.decode_precision (bf16 asked on CPU runs fp32)
            notes["decode_precision"] = " + ".join(sorted(self.decoded_in))
        return notes

    # ------------------------------------------------------------------ encoding

    def build(self, model: nn.Module, tokenizer) -> TaskData:
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ConfigError(
                "the tokenizer has no eos token; use GPT-2's BPE (model.tokenizer=.../tokenizers/gpt2)"
            )
        self.tokenizer, self.eos = tokenizer, eos
        stop_ids = []
        for s in self.cfg.stop:
            ids = tokenizer.encode(s, add_special_tokens=False)
            if len(ids) != 1:
                raise ConfigError(
                    f"stop string {s!r} is {len(ids)} tokens for this tokenizer; task.stop needs 1-token strings"
                )
            stop_ids.append(ids[0])
        c = self.cfg
        self.beam = BeamConfig(
            c.num_beams, c.max_new_tokens, c.length_penalty, c.no_repeat_ngram_size, tuple(stop_ids)
        )
        positions = getattr(model.config, "n_positions", None) or getattr(
            model.config, "max_position_embeddings", None
        )
        self.max_length = min(c.max_length, positions or c.max_length)
        train = [self.encode_pair(ctx, ref) for ctx, ref in self.raw["train"]]
        evals = {}
        for split, groups in self.sources.items():
            items = []
            for i, (ctx, refs) in enumerate(groups):
                prompt = tokenizer.encode(ctx, add_special_tokens=False) + [eos]
                if positions and len(prompt) + c.max_new_tokens > positions:
                    raise ConfigError(
                        f"{split} source {i + 1}: {len(prompt)} prompt tokens + task.max_new_tokens="
                        f"{c.max_new_tokens} exceed the model's {positions} positions; lower task.max_new_tokens"
                    )
                items.append({"prompt": prompt, "refs": refs, "lm": [self.encode_pair(ctx, r) for r in refs]})
            evals[split] = items
        pads = {"input_ids": eos, "attention_mask": 0, "labels": -100}
        self._lm_collate = pad_collate(pads)
        return TaskData(train, evals, self._lm_collate, self.eval_collate, pads)

    def encode_pair(self, context: str, completion: str) -> dict:
        ctx = self.tokenizer.encode(context, add_special_tokens=False) + [self.eos]
        comp = self.tokenizer.encode(" " + completion, add_special_tokens=False) + [self.eos]
        ids = (ctx + comp)[: self.max_length]
        labels = ([-100] * len(ctx) + comp)[: self.max_length]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}

    def eval_collate(self, items: list[dict]) -> dict:
        return {
            "prompt": [it["prompt"] for it in items],
            "refs": [it["refs"] for it in items],
            **self._lm_collate([pair for it in items for pair in it["lm"]]),
        }

    def forward(self, model, batch):
        loss = self.lm_loss(model, batch, self.cfg.label_smoothing)[0]
        return loss, None, batch["labels"]

    @staticmethod
    def lm_loss(model, batch, smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(token-mean loss, number of labelled tokens) of next-token prediction.

        Only the labelled positions go through the output layer (V = 50257 logits each): the
        backbone's hidden states at positions t with labels[t + 1] != -100, then the LM head.
        """
        target = batch["labels"][:, 1:]
        keep = target != -100
        hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        logits = model.get_output_embeddings()(hidden.last_hidden_state[:, :-1][keep])  # (N, V)
        loss = F.cross_entropy(logits.float(), target[keep], label_smoothing=smoothing)
        return loss, keep.sum()

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, ctx: EvalContext) -> dict[str, float]:
        model.eval()
        hyps, refs = [], []
        nll, tokens = 0.0, 0
        fp32 = self.cfg.decode_precision == "fp32"
        for batch in loader:
            batch = ctx.to_device(batch)
            with ctx.autocast():
                loss, n = self.lm_loss(model, batch, 0.0)
                # fp32: beam_search_batch turns every autocast off, also the one accelerate wraps around
                # model.forward under mixed precision (tasks/decoding.py)
                found = beam_search_batch(model, batch["prompt"], self.beam, pad_id=self.eos, fp32=fp32)
                self.decoded_in.add("fp32" if fp32 else _autocast_state(model))
            nll = nll + loss.float() * n
            tokens = tokens + n
            hyps += [postprocess(self.tokenizer.decode(h.tokens), self.cfg.stop) for h in found]
            refs += [[one_line(r) for r in group] for group in batch["refs"]]
        hyps, refs = self.official_texts(hyps, refs)
        result = self.score(hyps, refs)
        result.setdefault("settings", {})["decode_precision"] = " + ".join(sorted(self.decoded_in))
        self.unavailable.update(result["unavailable"])
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        self.write_outputs(ctx.out_dir, hyps, refs)
        write_text(ctx.out_dir / "scores.json", json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        return {"loss": float(nll / max(int(tokens), 1)), **result["scores"]}


def _autocast_state(model: nn.Module) -> str:
    """What beam search with fp32=False runs in here: "bf16 autocast" under the caller's autocast or
    accelerate's wrap of model.forward (mixed precision, bf16 in this harness), else "fp32"."""
    device = next(model.parameters()).device.type
    wrapped = "_original_forward" in getattr(model, "__dict__", {})
    return "bf16 autocast" if wrapped or torch.is_autocast_enabled(device) else "fp32"


def write_text(path: Path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)

    atomic_write(path, write)
