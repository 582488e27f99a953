"""Methods, looked up by `method.name`. One module per method, one line here.

Each module has a `Config` dataclass (validated in `__post_init__`) and
`apply(model, cfg, targets, heads, generator) -> adapters.base.Method`.
"""

from adapters import adalora, ft, lora, partial_ft, sora

METHODS = {
    "ft": ft,
    "lora": lora,
    "r_lora": lora,  # lora + orthogonality regularizer (conf/method/r_lora.yaml)
    "gm_lora": lora,  # lora + gradient mask
    "rm_lora": lora,  # lora + both
    "adalora": adalora,  # HF PEFT AdaLoRA with the run's total_step and rank allocation every step
    "sora": sora,  # gated LoRA, proximal gate step, zero ranks removed at the end
    "ft_qv": partial_ft,  # FT^{Wq,Wv}: q and v projections fully (model.partial_ft.qv)
    "ft_top2": partial_ft,  # FT^Top2: the last two blocks (model.partial_ft.top2)
}
