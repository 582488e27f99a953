"""Any HF PEFT tuner as a method (`method=peft`), with named presets, and R-/GM-/RM- modifiers on
PEFT's LoRA variants.

Presets (conf/method/peft/<preset>.yaml, `method=peft/<preset>`, record name `peft_<preset>`):
    dora, rslora, pissa, olora, vera, loha, lokr, ia3, oft, fourierft      (`PRESETS` below)
Keys (conf/method/peft.yaml): `tuner` (a PEFT config class name, e.g. LoraConfig), `kwargs` (its keyword
arguments), `lr_group`, and the modifier keys exactly as conf/method/lora.yaml: `reg_weight`, `reg_form`,
`reg_weights`, `mask_directions`, `mask_fraction`, `mask_shared`, `mask_mode`, `mask_start`, `mask_head`,
`fast` (same defaults: off). RM-DoRA = `method=peft/dora method.reg_weight=0.1 method.mask_fraction=0.5`.

What runs. `tuner(target_modules=<the model YAML's targets as exact qualified names>,
modules_to_save=<the model YAML's head modules, exact names>, **kwargs)` + `get_peft_model`, which injects
PEFT's layers into the model in place; the runner trains that model (not the `PeftModel` wrapper, whose
forward it never calls), the head as PEFT's `modules_to_save` copy. Export is PEFT's own
`save_pretrained` into `<artifacts>/peft` (each file written atomically). Counts: # T = every trainable
parameter at the start (+ head); # I = the same without the head: what the tuner keeps unmerged. Frozen
tensors a tuner regenerates from a seed (VeRA's shared projections, FourierFT's frequency indices) are
not counted; PiSSA/OLoRA's residual base W_res is the base model's own size (not counted either).

Targets. PEFT adapts whole modules. GPT-2's default `model.placement=qv` adapts the q and v *blocks* of
the fused `c_attn` (adapters/placement.py), which no PEFT tuner can express; rather than silently
adapting the whole `c_attn` under a config that says q/v, it is refused in one line naming
`model.placement=attn` (whole c_attn) or `all` (every Conv1D), so the record's config says what ran.
GPT-2's Conv1D layers get `fan_in_fan_out=True` for tuners that have that switch.

Layer types (measured with peft 0.21.2 on tiny_deberta's nn.Linear and tiny_gpt2's Conv1D, by trying
every preset; `LAYER_REFUSALS`): LoHa, LoKr, OFT and BOFT raise TypeError on Conv1D at injection; OLoRA
injects on Conv1D but its QR init uses the un-transposed weight and the first forward fails on shapes.
All are refused in one line before anything is injected; any other tuner that PEFT refuses at
injection (TypeError / ValueError) is reported in one line too. Every preset works on nn.Linear.

Modifiers. The regularizer and the gradient mask act on `method.lowrank`: for LoraConfig tuners (LoRA,
DoRA, rsLoRA, PiSSA, OLoRA: `ΔW = s·B A`, with DoRA's magnitude re-normalisation on top) one
`LoraFactors` view per PEFT LoRA layer exposes its own `lora_A` (R, d_in) and `lora_B` (d_out, R)
Parameters, `rank` and `scaling`, and `adapters.lora.add_reg_and_mask` attaches exactly the code that
R-/GM-/RM-LoRA run (adapters/orthogonal.py, adapters/masking.py, fast path included). DoRA's magnitude
vector is not a rank direction: it trains unmasked and unregularized (like the head). Other tuners have
no A·B pair (VeRA: frozen shared A, B scaled by trained vectors; LoHa/LoKr: Hadamard/Kronecker products;
OFT/BOFT: orthogonal rotations; IA3: scaling vectors; FourierFT: spectral coefficients): the modifiers
are refused in one line naming the tuner. The record's diagnostics (adapters/lowrank.py) read s·B A;
for PiSSA/OLoRA that product includes the principal part moved out of W at init.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from adapters.base import Method, match_modules
from adapters.lowrank import Conv1D
from core import ConfigError, atomic_write

ADAPTER = "default"
PEFT_DIR = "peft"
PRESETS = ("dora", "rslora", "pissa", "olora", "vera", "loha", "lokr", "ia3", "oft", "fourierft")
MODIFIER_KEYS = (
    "reg_weight", "reg_form", "reg_weights", "mask_directions", "mask_fraction", "mask_shared",
    "mask_mode", "mask_start", "mask_head", "fast",
)  # fmt: skip
OURS = ("target_modules", "modules_to_save", "task_type")  # set from the model YAML, never in kwargs
# (tuner, layer type) pairs peft 0.21.2 cannot run (module docstring); a callable picks LoraConfig inits
LAYER_REFUSALS = {
    "LoHaConfig": ("Conv1D", "PEFT's LoHa adapts Linear, Conv1d and Conv2d only"),
    "LoKrConfig": ("Conv1D", "PEFT's LoKr adapts Linear, Conv1d and Conv2d only"),
    "OFTConfig": ("Conv1D", "PEFT's OFT adapts Linear, Conv2d and Embedding only"),
    "BOFTConfig": ("Conv1D", "PEFT's BOFT adapts Linear and Conv2d only"),
}
OLORA_CONV1D = "PEFT's OLoRA init factorises the un-transposed Conv1D weight and the forward then fails"
# initialisations that need a data pass or quantisation the runner does not do
DATA_INITS = ("eva", "corda")
MUTATING_INITS = ("pissa", "olora")  # initialisations that move s·B0 A0 out of the base weight


def _peft():
    import peft  # late: importing peft takes seconds, only runs that use it pay

    return peft


def tuner_class(name: str):
    """The PEFT config class called `name`; ConfigError for anything that is not a module tuner."""
    peft = _peft()
    cls = getattr(peft, name, None)
    if not (isinstance(cls, type) and issubclass(cls, peft.PeftConfig)):
        raise ConfigError(
            f"method.tuner={name!r} is not a PEFT config class; use one of peft's *Config names, e.g. "
            f"LoraConfig, VeraConfig, LoHaConfig, LoKrConfig, IA3Config, OFTConfig, FourierFTConfig"
        )
    if name == "AdaLoraConfig":
        raise ConfigError("AdaLoRA needs its rank allocator driven every step: use method=adalora")
    if issubclass(cls, peft.PromptLearningConfig):
        raise ConfigError(f"{name} is prompt learning, not a module tuner: use method=prefix (prefix tuning)")
    if "target_modules" not in {f.name for f in dataclasses.fields(cls)}:
        raise ConfigError(f"{name} has no target_modules: method=peft adapts the model YAML's modules")
    return cls


@dataclass
class Config:
    name: str = "peft"
    lr_group: str = "lowrank"
    tuner: str = "LoraConfig"  # a PEFT config class name
    kwargs: dict = field(default_factory=dict)  # its keyword arguments (not targets / head: model YAML)
    # modifiers: meaning and defaults as adapters/lora.py's Config (checked by it, see __post_init__)
    reg_weight: float = 0.0
    reg_form: str = "reference"
    reg_weights: dict | None = None
    mask_directions: int | None = None
    mask_fraction: float | None = None
    mask_shared: bool = True
    mask_mode: str = "grad"
    mask_start: int = 1
    mask_head: bool = False
    fast: bool = True

    def __post_init__(self):
        self.kwargs = dict(self.kwargs or {})
        cls = tuner_class(self.tuner)
        fields = {f.name for f in dataclasses.fields(cls)}
        for key in self.kwargs:
            if key in OURS:
                raise ConfigError(
                    f"method.kwargs.{key}: targets and head come from the model YAML "
                    f"(model.target_modules, model.head_modules); drop it"
                )
            if key not in fields:
                raise ConfigError(
                    f"method.kwargs.{key} is not an argument of {self.tuner}; check peft's docs"
                )
        if self.init.startswith(DATA_INITS):
            raise ConfigError(
                f"{self.tuner} init_lora_weights={self.init!r} needs a data pass the runner does not do"
            )
        try:  # PEFT's own checks of the arguments, before any model exists
            probe = cls(target_modules=["_"], **self.kwargs)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{self.tuner}(**method.kwargs): {str(e).splitlines()[0]}") from e
        self._peft_type = str(getattr(probe.peft_type, "value", probe.peft_type))
        r = getattr(probe, "r", None)
        self._rank = r if isinstance(r, int) and r >= 1 else 1  # only LoRA's r is ever used (the mask)
        if self.modified:
            if self.peft_type != "LORA":
                raise ConfigError(
                    f"method.reg_weight / mask_* act on A·B factors (lora_A, lora_B); {self.tuner} has none "
                    f"({FACTORISATION.get(self.peft_type, 'not a product A·B')}): drop them or use LoraConfig "
                    f"(LoRA, DoRA, rsLoRA, PiSSA, OLoRA)"
                )
            if self.mask_on and (self.kwargs.get("rank_pattern") or {}):
                raise ConfigError("method.mask_* draws r̂ of one rank r: drop method.kwargs.rank_pattern")
        from adapters import lora  # the same checks (and messages) as R-/GM-/RM-LoRA's keys

        lora.Config(rank=self.rank, **{k: getattr(self, k) for k in MODIFIER_KEYS})

    @property
    def init(self) -> str:
        """`init_lora_weights` as a lower-case string ("" when not given)."""
        return str(self.kwargs.get("init_lora_weights", "")).lower()

    @property
    def peft_type(self) -> str:
        """PEFT's name of the tuner type (LORA, VERA, LOHA, ...)."""
        return self._peft_type

    @property
    def rank(self) -> int:
        """r of a LoraConfig tuner (kwargs or PEFT's default 8): R for the mask's r̂ = fraction·R."""
        return self._rank

    @property
    def mask_on(self) -> bool:
        return self.mask_directions is not None or self.mask_fraction is not None

    @property
    def modified(self) -> bool:
        return self.reg_weight > 0 or self.mask_on


FACTORISATION = {  # why a tuner has no (A, B) pair for the modifiers
    "VERA": "VeRA's A and B are frozen random matrices shared by all layers, scaled by trained vectors",
    "LOHA": "LoHa's update is a Hadamard product of two low-rank products",
    "LOKR": "LoKr's update is a Kronecker product",
    "OFT": "OFT rotates W by a block-orthogonal matrix",
    "BOFT": "BOFT rotates W by butterfly-orthogonal matrices",
    "IA3": "IA3 scales activations by trained vectors",
    "FOURIERFT": "FourierFT trains spectral coefficients of ΔW",
}


def validate(cfg: Config, model_cfg: dict) -> None:
    """Before any model: targets exist and are whole modules (PEFT cannot adapt a block of one)."""
    targets = model_cfg.get("target_modules") or []
    if not targets:
        raise ConfigError(
            f"method {cfg.name} adapts model.target_modules, which is empty; give at least one regex"
        )
    if any(not isinstance(t, str) for t in targets):
        raise ConfigError(
            f"{cfg.tuner} (PEFT) adapts whole modules, not blocks of a fused one (model.placement="
            f"{model_cfg.get('placement')!r}); use model.placement=attn (whole c_attn) or all (every Conv1D)"
        )


class LoraFactors:
    """One PEFT LoRA layer (LoRA, DoRA, rsLoRA, PiSSA, OLoRA) in the layout our regularizer, mask and
    diagnostics read: its own Parameters `lora_A` (R, d_in), `lora_B` (d_out, R) (PEFT keeps them as the
    weights of two nn.Linear, also on Conv1D bases: fan_in_fan_out transposes W only), `rank`, `scaling`.

    No `base`/`merge`: adapters.export.merge would fold only s·B A, which is wrong for DoRA; PEFT's own
    `merge_and_unload` is the merge for these layers."""

    def __init__(self, layer: nn.Module):
        self.layer = layer
        self.lora_A: nn.Parameter = layer.lora_A[ADAPTER].weight
        self.lora_B: nn.Parameter = layer.lora_B[ADAPTER].weight
        self.rank = int(layer.r[ADAPTER])

    @property
    def scaling(self) -> float:  # alpha/r, alpha/√r for rsLoRA: PEFT's own value
        return float(self.layer.scaling[ADAPTER])

    def delta_weight(self) -> torch.Tensor:
        """s·B A (d_out, d_in), nn.Linear convention; DoRA's magnitude re-normalisation not included."""
        return self.scaling * self.lora_B @ self.lora_A


def _layer_type(module: nn.Module) -> str:
    return "Conv1D" if Conv1D and isinstance(module, Conv1D) else type(module).__name__


def check_layers(cfg: Config, found: dict[str, nn.Module], types: Counter) -> None:
    """One line before anything is injected where the tuner cannot act on a target's layer type
    (`types`: the targets' layer types, counted)."""
    refusal = LAYER_REFUSALS.get(cfg.tuner)
    init = cfg.init
    if cfg.tuner == "LoraConfig" and init.startswith("olora"):
        refusal = ("Conv1D", OLORA_CONV1D)
    if refusal and refusal[0] in types:
        what = f"{cfg.tuner}" + (f" (init_lora_weights={init})" if cfg.tuner == "LoraConfig" else "")
        raise ConfigError(
            f"{what} cannot adapt {refusal[0]} layers ({types[refusal[0]]} targets, e.g. "
            f"{next(n for n, m in found.items() if _layer_type(m) == refusal[0])}): {refusal[1]} (peft 0.21.2); "
            f"use another tuner or a model whose targets are nn.Linear"
        )
    if len({t == "Conv1D" for t in types}) > 1:
        raise ConfigError("PEFT needs one fan_in_fan_out per adapter: do not mix Linear and Conv1D targets")


def apply(
    model: nn.Module, cfg: Config, targets: list[str], heads: list[str], generator: torch.Generator
) -> Method:
    """Injects the PEFT tuner into `model` on exactly the target modules, the head as modules_to_save;
    attaches the modifiers on LoRA-family factors."""
    peft = _peft()
    found = match_modules(model, targets, "target")
    head_modules = sorted(match_modules(model, heads, "head"))
    types = Counter(_layer_type(m) for m in found.values())
    check_layers(cfg, found, types)
    cls = tuner_class(cfg.tuner)
    kwargs = dict(cfg.kwargs)
    if "Conv1D" in types and "fan_in_fan_out" in {f.name for f in dataclasses.fields(cls)}:
        kwargs.setdefault("fan_in_fan_out", True)  # GPT-2's Conv1D stores W as (d_in, d_out)
    config = cls(target_modules=sorted(found), modules_to_save=head_modules or None, **kwargs)
    try:
        peft_model = peft.get_peft_model(model, config)
    except (TypeError, ValueError) as e:  # PEFT's refusal of a layer type, or of an argument on this model
        kinds = ", ".join(sorted(types))
        raise ConfigError(
            f"{cfg.tuner} cannot adapt this model's {kinds} targets: {str(e).splitlines()[0]}"
        ) from e
    wrapped = sorted(n for n, m in model.named_modules() if isinstance(m, peft.utils.ModulesToSaveWrapper))
    if wrapped != head_modules:  # PEFT matches modules_to_save by name suffix: check it took exactly these
        raise ConfigError(
            f"PEFT wrapped {wrapped} as modules_to_save, expected model.head_modules' {head_modules}"
        )
    head_names = [n for n, p in model.named_parameters() if p.requires_grad and ".modules_to_save." in n]
    lowrank = {}
    if cfg.peft_type == "LORA":
        for name in found:
            layer = model.get_submodule(name)
            if ADAPTER in getattr(layer, "lora_A", {}) and isinstance(layer.lora_A[ADAPTER], nn.Linear):
                lowrank[name] = LoraFactors(layer)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    head_set = set(head_names)
    head = sum(p.numel() for n, p in model.named_parameters() if n in head_set)
    method = Method(
        name=cfg.name,
        model=model,
        lowrank=lowrank,
        head=head_names,
        inference_params=trainable - head,
        params_convention="trainable/inference include the task head (model.head_modules, PEFT's "
        "modules_to_save copy); method_* exclude it; inference = the tuner's trained tensors kept unmerged "
        "(frozen tensors regenerated from a seed, e.g. VeRA's projections, not counted)",
    )
    described = {
        "tuner": cfg.tuner,
        "peft_type": cfg.peft_type,
        "kwargs": dict(cfg.kwargs),
        "peft_version": peft.__version__,
        "layer_types": dict(types),
        "modules": len(found),
    }
    if cfg.init.startswith(MUTATING_INITS):
        described["export"] = (  # PEFT's save_pretrained holds the factors, not the residual base
            "the exported factors apply to the residual base W_res = W - s·B0 A0, not to the original "
            "model (PEFT's save_pretrained(path_initial_model_for_weight_conversion=...) would convert them)"
        )
    method.extra_counts = lambda: {"peft": described}
    if cfg.modified:
        if not lowrank:
            raise ConfigError(
                f"method.reg_weight / mask_*: {cfg.tuner} made no LoRA layer with (A, B) factors"
            )
        from adapters.lora import add_reg_and_mask

        add_reg_and_mask(method, cfg, generator)
    method.exporter = lambda folder: export_peft(peft_model, folder)
    return method


def export_peft(peft_model, folder: Path) -> Path:
    """PEFT's own `save_pretrained` (adapter + modules_to_save head) into `<folder>/peft`, each file
    moved in atomically (core.atomic_write)."""
    out = Path(folder) / PEFT_DIR
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".peft-") as tmp:
        peft_model.save_pretrained(tmp)
        for src in sorted(Path(tmp).iterdir()):
            if src.is_file():
                atomic_write(out / src.name, lambda dst, src=src: shutil.copyfile(src, dst))
    return out
