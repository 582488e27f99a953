"""Methods, looked up by `method.name`. One module per method, one line here.

Each module has a `Config` dataclass (validated in `__post_init__`) and
`apply(model, cfg, targets, heads, generator) -> adapters.base.Method`.
"""

from adapters import adalora, bottleneck, ft, loda, lora, partial_ft, peft_tuner, prefix, sora

METHODS = {
    "ft": ft,
    "lora": lora,
    "r_lora": lora,  # lora + orthogonality regularizer (conf/method/r_lora.yaml)
    "gm_lora": lora,  # lora + gradient mask
    "rm_lora": lora,  # lora + both
    "loda": loda,  # LoDA: residual f1 between A and B (conf/method/loda.yaml)
    "loda_plus": loda,  # LoDA+: f2 after B
    "r_loda": loda,  # LoDA on a rank-R truncated SVD of W_proj
    "r_loda_plus": loda,  # LoDA+ on a rank-R truncated SVD of W_proj
    "s_loda": loda,  # LoDA on a magnitude-sparsified W_proj
    "s_loda_plus": loda,  # LoDA+ on a magnitude-sparsified W_proj
    "adapter_h": bottleneck,  # Houlsby adapters: after attention and after the MLP
    "adapter_l": bottleneck,  # Lin et al. adapter: one per block after the MLP, with LayerNorm
    "prefix": prefix,  # prefix-layer tuning (PreLayer) through PEFT
    "adalora": adalora,  # HF PEFT AdaLoRA with the run's total_step and rank allocation every step
    "sora": sora,  # gated LoRA, the official SparseAdamW gate step, zero ranks removed at the end
    "ft_qv": partial_ft,  # FT^{Wq,Wv}: q and v projections fully (model.partial_ft.qv)
    "ft_top2": partial_ft,  # FT^Top2: the last two blocks (model.partial_ft.top2)
    "peft": peft_tuner,  # any HF PEFT tuner by config class + kwargs (conf/method/peft.yaml)
    **{f"peft_{p}": peft_tuner for p in peft_tuner.PRESETS},  # its presets, conf/method/peft/<p>.yaml
}
