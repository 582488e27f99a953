"""Hugging Face models: pretrained (`hub_id`, or a local `path`) or random tiny ones from a config.

`model.path` (a local checkpoint directory) always wins over `model.hub_id`; nothing is downloaded
when it is set. Tiny test models (`random_init: true`) are built from `model_type` + `config` and,
with `tokenizer_train_vocab`, get a WordPiece tokenizer trained on the task's training text.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from adapters.base import ConfigError

AUTO_CLASSES = {
    "sequence_classification": "AutoModelForSequenceClassification",
    "question_answering": "AutoModelForQuestionAnswering",
    "causal_lm": "AutoModelForCausalLM",
    "image_classification": "AutoModelForImageClassification",
}


def _source(cfg, key: str = "path") -> str:
    src = cfg.get(key) or cfg.get("path") or cfg.get("hub_id")
    if not src:
        raise ConfigError(f"model {cfg.name} has neither path nor hub_id; set model.path=/local/checkpoint")
    return str(src)


def _check_local(src: str, what: str) -> None:
    looks_local = src.startswith((".", "/", "~")) or Path(src).expanduser().exists()
    if looks_local and not Path(src).expanduser().exists():
        raise ConfigError(f"{what} {src} does not exist; point it at a local checkpoint directory")


def train_wordpiece(texts, vocab_size: int):
    """A lower-cased BERT-style WordPiece tokenizer trained on `texts` (deterministic, offline)."""
    from tokenizers import BertWordPieceTokenizer, processors
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1, special_tokens=special,
                            show_progress=False)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok._tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def build_tokenizer(cfg, texts):
    if cfg.get("tokenizer_train_vocab"):
        return train_wordpiece(texts, cfg.tokenizer_train_vocab)
    src = _source(cfg, "tokenizer")
    _check_local(src, "model.tokenizer")
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        tok = AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError) as e:
        file = Path(src) / "tokenizer.json"
        if not file.is_file():  # e.g. offline and not cached
            raise ConfigError(f"could not load tokenizer {src!r} ({type(e).__name__}); set model.tokenizer to a local dir") from e
        tok = PreTrainedTokenizerFast(tokenizer_file=str(file))  # bare tokenizer.json (GPT-2 BPE files)
        if "<|endoftext|>" in tok.get_vocab():
            tok.eos_token = "<|endoftext|>"
    if tok.pad_token is None:  # GPT-2 has none; padding is masked anyway
        tok.pad_token = tok.eos_token
    return tok


def build_model(cfg, head: dict | None, tokenizer) -> nn.Module:
    import transformers

    head = dict(head or {"type": "sequence_classification", "num_labels": 2})
    auto = getattr(transformers, AUTO_CLASSES[head.pop("type")])
    extra = {k: v for k, v in head.items()}
    if tokenizer is not None and tokenizer.pad_token_id is not None:
        extra["pad_token_id"] = tokenizer.pad_token_id
    overrides = dict(cfg.get("config") or {})
    with torch.random.fork_rng(devices=[]):  # the new head's init depends on model.init_seed only
        torch.manual_seed(cfg.init_seed)
        if cfg.random_init:
            config = transformers.AutoConfig.for_model(cfg.model_type, **overrides, **extra,
                                                       vocab_size=len(tokenizer))
            return auto.from_config(config)
        src = _source(cfg)
        _check_local(src, "model.path")
        try:
            return auto.from_pretrained(src, **overrides, **extra)
        except OSError as e:
            raise ConfigError(f"could not load model {src!r} ({e.__class__.__name__}: offline?); "
                              f"set model.path to a local checkpoint directory") from e
