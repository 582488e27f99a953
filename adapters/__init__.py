"""Methods, looked up by `method.name`. One module per method, one line here.

Each module has a `Config` dataclass (validated in `__post_init__`) and
`apply(model, cfg, targets, heads, generator) -> adapters.base.Method`.
"""

from adapters import ft, lora

METHODS = {
    "ft": ft,
    "lora": lora,
    "r_lora": lora,  # lora + orthogonality regularizer (conf/method/r_lora.yaml)
    "gm_lora": lora,  # lora + gradient mask
    "rm_lora": lora,  # lora + both
}
