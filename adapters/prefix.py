"""Prefix-layer tuning, the LoDA table's PreLayer (Li & Liang, 2021; as Hu et al., 2022 ran it),
through HF PEFT's `PrefixTuningConfig`.

Every layer's attention sees p trainable key and value vectors before the sequence:

    attn_l(x) = softmax(q [P_k,l; K_l]ᵀ / √d_h) [P_v,l; V_l],   P_k,l, P_v,l ∈ R^{p×d}

Trainable: p · 2 · L · d (PEFT without the re-parameterisation MLP, `projection: false`; with it,
training adds the MLP but inference keeps only the p·2·L·d prefix values). GPT-2 medium (d = 1024,
L = 24): p = 7 → 344,064 (0.34M). The quoted 0.35M does not follow from any integer p (p = 7.12
would); Hu et al.'s count L·d·(l_p + l_i) gives the same 344,064 for l_p + l_i = 14.

PEFT wraps the model (`PeftModel`): `Method.model` is the wrapper and the runner trains it. The
task head (model.head_modules) trains as PEFT's `modules_to_save` copy. Positions: PEFT (and the
original code) let the input's position ids start after the prefix, since the prefix sits in the
key/value cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adapters.base import Method
from core import ConfigError

TASK_TYPES = {  # model class name suffix -> PEFT task type
    "ForSequenceClassification": "SEQ_CLS",
    "ForQuestionAnswering": "QUESTION_ANS",
    "LMHeadModel": "CAUSAL_LM",
    "ForCausalLM": "CAUSAL_LM",
}


@dataclass
class Config:
    name: str = "prefix"
    lr_group: str = "lowrank"
    num_virtual_tokens: int = 7  # p: params p·2·L·d
    projection: bool = False  # PEFT's re-parameterisation MLP over the prefix (Li & Liang train with it)
    projection_hidden: int = 512  # its hidden width (only with projection)

    def __post_init__(self):
        if not isinstance(self.num_virtual_tokens, int) or self.num_virtual_tokens < 1:
            raise ConfigError(
                f"method.num_virtual_tokens must be an integer >= 1, got {self.num_virtual_tokens!r}"
            )


def _task_type(model: nn.Module) -> str:
    cls = type(model).__name__
    for suffix, task in TASK_TYPES.items():
        if cls.endswith(suffix):
            return task
    raise ConfigError(
        f"prefix tuning: no PEFT task type for {cls}; it supports {', '.join(TASK_TYPES)} models"
    )


def apply(
    model: nn.Module, cfg: Config, targets: list, heads: list[str], generator: torch.Generator
) -> Method:
    from peft import PrefixTuningConfig, get_peft_model

    heads = [h.split(".")[-1].replace("\\", "") for h in heads]  # PEFT matches module-name suffixes
    config = PrefixTuningConfig(
        task_type=_task_type(model),
        num_virtual_tokens=cfg.num_virtual_tokens,
        prefix_projection=cfg.projection,
        encoder_hidden_size=cfg.projection_hidden,
        modules_to_save=heads or None,
    )
    peft_model = get_peft_model(model, config)
    for name, p in peft_model.named_parameters():  # PEFT's SEQ_CLS default adds `classifier`/`score`
        if "modules_to_save" in name and not any(f".{h}." in name for h in heads):
            p.requires_grad_(False)
    head_names = [n for n, p in peft_model.named_parameters() if p.requires_grad and "modules_to_save" in n]
    c = peft_model.peft_config["default"]
    kept = cfg.num_virtual_tokens * c.num_layers * 2 * c.token_dim
    return Method(
        name=cfg.name,
        model=peft_model,
        head=head_names,
        inference_params=kept,
        params_convention="trainable/inference include the task head (model.head_modules, PEFT's "
        "modules_to_save copy); method_* exclude it; inference = the p·2·L·d prefix values",
    )
