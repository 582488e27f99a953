"""AdaLoRA (Zhang et al., 2023) through HF PEFT: `AdaLoraConfig` + `get_peft_model`, PEFT's RankAllocator.

    ΔW = (α / ranknum) · P Λ Q,   P ∈ R^{d_out×r}, Λ = diag(λ) ∈ R^{r×r}, Q ∈ R^{r×d_in}

(PEFT names: lora_B = P, lora_E = λ, lora_A = Q; P, Q ~ N(0, 0.02²), Λ = 0.) Importance of each
triplet (P_i, λ_i, Q_i) is an EMA (β1) of |θ·∇θ| times an EMA (β2) of its uncertainty; the total
rank budget stays at init_r·M for `tinit` steps, decays cubically to target_r·M and is fixed for
the last `tfinal` steps; triplets are masked every `deltaT` steps (PEFT `RankAllocator`, not
re-implemented here).

What this module adds around PEFT, which the HF Trainer does not do:
- `total_step` is the run's real number of optimizer steps (`Plan.total_steps`, set in `setup`).
- The schedule fits the run (`method.schedule=fit`, default): tinit / tfinal / deltaT are used as
  given when the run leaves a budgeting phase of at least deltaT steps between them, else tinit and
  tfinal shrink by one factor to half the run (`schedule_for`; the record's `extra_counts` has the
  values used). `schedule=fixed` uses them as given and refuses a run without a budgeting phase.
  `check_plan` (adapters/base.py) runs the same rule before anything is built.
- `update_and_allocate(step)` runs after every `optimizer.step()` and before the grads are zeroed.
- The orthogonal regularizer `orth_reg_weight · mean_{P,Q} ‖G − I‖_F` (G = QQᵀ or PᵀP): PEFT adds it
  only inside `PeftModel.forward` when the model returns a loss; the runner calls the adapted model
  directly, so the same term is a `loss_terms` entry here (a test checks it equals PEFT's).
- At the end (`finish`) pruned triplets are physically removed (`resize_modules_by_rank_pattern`):
  # I = Σ k·(d_in + d_out + 1) at the final budget, # T = the same at init_r (+ head).
- The RankAllocator's EMAs and the rank pattern are in `state_dict`, so a resumed run continues exactly.
R-LoRA's regularizer and GM-LoRA's mask are defined on (A, B) pairs, not on P Λ Q: refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn

from adapters.base import Method, Plan, StepHook, freeze_all_but, match_modules
from adapters.lowrank import Conv1D, in_out_features
from adapters.orthogonal import orthogonality_penalty
from core import ConfigError

ADAPTER = "default"
SCHEDULES = ("fit", "fixed")


@dataclass
class Config:
    name: str = "adalora"
    lr_group: str = "lowrank"
    init_r: int = 16  # initial rank per module (# T)
    target_r: int = 8  # average final rank per module (# I budget = target_r · #modules)
    alpha: float = 32.0  # lora_alpha; scaling α / ranknum (ranknum = init_r)
    dropout: float = 0.0
    tinit: int = 50  # steps at full budget before pruning starts
    tfinal: int = 50  # last steps at the final budget (mask frozen)
    deltaT: int = 10  # steps between two budget allocations
    schedule: str = "fit"  # fit: shrink tinit/tfinal for runs too short for them | fixed: as given
    beta1: float = 0.85  # EMA of sensitivity
    beta2: float = 0.85  # EMA of uncertainty
    orth_reg_weight: float = 0.1  # set explicitly (PEFT's default is 0.5)
    reg_weight: float = 0.0  # R-LoRA's regularizer: not defined for P Λ Q (refused if > 0)
    mask_directions: int | None = None  # GM-LoRA's mask: not defined for P Λ Q (refused)
    mask_fraction: float | None = None

    def __post_init__(self):
        if self.reg_weight or self.mask_directions is not None or self.mask_fraction is not None:
            raise ConfigError(
                "adalora's ΔW = PΛQ has no (A, B) pair for R-LoRA's regularizer or GM-LoRA's mask; "
                "drop method.reg_weight/mask_* (AdaLoRA's own term: method.orth_reg_weight) or use "
                "method=r_lora|gm_lora|rm_lora|sora"
            )
        if self.init_r < 1 or self.target_r < 1:
            raise ConfigError(
                f"method.init_r and method.target_r must be >= 1, got {self.init_r}, {self.target_r}"
            )
        if self.target_r > self.init_r:
            raise ConfigError(
                f"method.target_r={self.target_r} > method.init_r={self.init_r}: AdaLoRA only prunes; "
                f"set target_r <= init_r (authors: 16->8 for R=8, 8->4 for R=4)"
            )
        if self.tinit < 0 or self.tfinal < 0 or self.deltaT < 1:
            raise ConfigError("method.tinit, method.tfinal must be >= 0 and method.deltaT >= 1")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"method.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not (0 < self.beta1 < 1 and 0 < self.beta2 < 1):
            raise ConfigError(f"method.beta1, beta2 must be in (0, 1), got {self.beta1}, {self.beta2}")
        if self.orth_reg_weight < 0:
            raise ConfigError(f"method.orth_reg_weight must be >= 0, got {self.orth_reg_weight}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"method.dropout must be in [0, 1), got {self.dropout}")


def validate(method_cfg, model_cfg: dict) -> None:
    if not model_cfg.get("target_modules"):
        raise ConfigError(
            f"model {model_cfg.get('name')!r} has no target_modules for adalora; "
            "set explicit patterns (PEFT's defaults also hit DeBERTa's pooler.dense)"
        )


def schedule_for(cfg: Config, total: int) -> tuple[dict[str, int], list[str]]:
    """(the tinit / tfinal / deltaT a run of `total` optimizer steps uses, findings).

    PEFT needs tinit < total − tfinal (a budgeting phase between the warm-up and the final phase);
    the budget is re-allocated every deltaT steps inside it. Given values are kept when that phase
    holds at least one allocation (≥ deltaT steps). Otherwise, with `schedule=fit`, tinit and tfinal
    shrink by one factor so that they take half the run (the budgeting phase the other half; the
    official AdaLoRA GLUE scripts give it 30-38 %, e.g. RTE 600 / 1800 of ~3,900 steps:
    QingruZhang/AdaLoRA NLU/scripts/run_debertav3_rte.sh), and deltaT is capped at that phase.
    Table 1's one such cell: WNLI, 635 examples / 32 × 5 epochs = 100 steps: 50 / 50 -> 25 / 25.
    With `schedule=fixed` a run without a budgeting phase is refused (ConfigError).
    """
    given = {"tinit": cfg.tinit, "tfinal": cfg.tfinal, "deltaT": cfg.deltaT}
    if total < 1:
        raise ConfigError(f"AdaLoRA needs a run of >= 1 optimizer step, got total_steps={total}")
    phase = total - cfg.tinit - cfg.tfinal
    if phase >= cfg.deltaT:
        return given, []
    if cfg.schedule == "fixed":
        if phase < 1:
            raise ConfigError(
                f"AdaLoRA needs tinit < total_steps - tfinal for a budgeting phase: tinit={cfg.tinit}, "
                f"tfinal={cfg.tfinal}, total_steps={total}; lower method.tinit/method.tfinal, train "
                f"longer, or method.schedule=fit (shrinks them to half the run)"
            )
        return given, [
            f"adalora: budgeting phase of {phase} steps < deltaT={cfg.deltaT} at total_steps={total}: "
            f"the budget drops to target_r in one allocation"
        ]
    scale = min(1.0, (total // 2) / max(1, cfg.tinit + cfg.tfinal))  # never longer than given
    tinit, tfinal = int(cfg.tinit * scale), int(cfg.tfinal * scale)
    used = {"tinit": tinit, "tfinal": tfinal, "deltaT": max(1, min(cfg.deltaT, total - tinit - tfinal))}
    before, after = "/".join(str(v) for v in given.values()), "/".join(str(v) for v in used.values())
    return used, [
        f"adalora: tinit/tfinal/deltaT {before} leave no budgeting phase of >= deltaT steps in "
        f"total_steps={total}: using {after} (method.schedule=fit)"
    ]


def check_plan(cfg: Config, plan: Plan) -> list[str]:
    """The schedule check `RankBudget.setup` runs, before any model is built (adapters/base.py)."""
    return schedule_for(cfg, int(plan.total_steps))[1]


class AdaLoraView:
    """One PEFT SVD layer in the (A, B) names the diagnostics and `export.merge` read.

    lora_A = Λ Q (E ⊙ A, r×d_in), lora_B = P, scaling = α / (ranknum + 1e-5) (PEFT's forward).
    """

    def __init__(self, layer: nn.Module):
        self.layer = layer

    @property
    def lora_A(self) -> torch.Tensor:
        return self.layer.lora_A[ADAPTER] * self.layer.lora_E[ADAPTER]

    @property
    def lora_B(self) -> torch.Tensor:
        return self.layer.lora_B[ADAPTER]

    @property
    def scaling(self) -> float:
        return float(self.layer.scaling[ADAPTER]) / (float(self.layer.ranknum[ADAPTER]) + 1e-5)

    @property
    def rank(self) -> int:
        return int(self.layer.lora_A[ADAPTER].shape[0])

    @property
    def base(self) -> nn.Module:
        return self.layer.get_base_layer()

    def kept(self) -> int:
        """Triplets not masked: nnz(λ)."""
        return int((self.layer.lora_E[ADAPTER] != 0).sum())

    def delta_weight(self) -> torch.Tensor:
        """ΔW (d_out, d_in), nn.Linear convention."""
        return self.scaling * self.lora_B @ self.lora_A


class OrthogonalTerm:
    """PEFT AdaLoraModel.forward's term: w · (1/2M) Σ (‖QQᵀ − I‖_F + ‖PᵀP − I‖_F), raw P, Q."""

    def __init__(self, views: dict[str, AdaLoraView], weight: float):
        self.views, self.weight = views, weight

    def __call__(self) -> torch.Tensor:
        pairs = [
            SimpleNamespace(lora_A=v.layer.lora_A[ADAPTER], lora_B=v.layer.lora_B[ADAPTER])
            for v in self.views.values()
        ]
        return self.weight * orthogonality_penalty(pairs, "reference")


class RankBudget(StepHook):
    """Drives PEFT's RankAllocator: total_step from the plan, update_and_allocate every step."""

    def __init__(self, peft_model, views: dict[str, AdaLoraView], cfg: Config, method: Method):
        self.peft_model, self.views, self.cfg, self.method = peft_model, views, cfg, method
        self.tuner = peft_model.base_model  # AdaLoraModel
        self.pruned = False
        self.used = {"tinit": cfg.tinit, "tfinal": cfg.tfinal, "deltaT": cfg.deltaT}
        self.findings: list[str] = []

    @property
    def peft_config(self):
        return self.tuner.peft_config[ADAPTER]

    def setup(self, plan) -> None:
        total = int(plan.total_steps)
        self.used, self.findings = schedule_for(self.cfg, total)
        for key, value in self.used.items():  # the allocator reads these from the same config object
            setattr(self.peft_config, key, value)
        self.tuner.rankallocator.set_total_step(total)  # = peft_config.total_step

    def after_step(self, optimizer, step: int = 0) -> None:
        self.tuner.update_and_allocate(step)  # needs the gradients: before zero_grad

    def finish(self) -> None:
        """Physically drops masked triplets (outputs unchanged: they are zero)."""
        pattern = self.peft_config.rank_pattern
        if self.pruned or not pattern:
            return
        self.tuner.resize_modules_by_rank_pattern(pattern, ADAPTER)
        empty = [n for n, v in self.views.items() if v.rank == 0]
        for n in empty:
            self.method.lowrank.pop(n, None)
        self.pruned = True

    def state_dict(self) -> dict:
        alloc = self.tuner.rankallocator
        return {
            "ipt": dict(alloc.ipt),
            "exp_avg_ipt": dict(alloc.exp_avg_ipt),
            "exp_avg_unc": dict(alloc.exp_avg_unc),
            "rank_pattern": self.peft_config.rank_pattern,
            "total_step": self.peft_config.total_step,
        }

    def load_state_dict(self, state: dict) -> None:
        alloc = self.tuner.rankallocator
        for key in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
            setattr(alloc, key, {k: v.clone() for k, v in state[key].items()})
        self.peft_config.rank_pattern = state["rank_pattern"]
        alloc.set_total_step(state["total_step"])


def apply(
    model: nn.Module, cfg: Config, targets: list[str], heads: list[str], generator: torch.Generator
) -> Method:
    """Adds PEFT AdaLoRA layers on exactly the modules matching `targets`; the head trains too."""
    from peft import AdaLoraConfig, get_peft_model

    head_names = freeze_all_but(model, match_modules(model, heads, "head"))
    found = match_modules(model, targets, "target")
    shapes = {n: in_out_features(m) for n, m in found.items()}
    for n in found:
        if cfg.init_r > min(shapes[n]):
            raise ConfigError(f"method.init_r={cfg.init_r} exceeds min(d_in, d_out) of {n}; lower it")
    kinds = {bool(Conv1D) and isinstance(m, Conv1D) for m in found.values()}
    if len(kinds) > 1:
        raise ConfigError("adalora (PEFT) needs one fan_in_fan_out: do not mix Linear and Conv1D targets")
    config = AdaLoraConfig(
        init_r=cfg.init_r,
        target_r=cfg.target_r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        tinit=cfg.tinit,
        tfinal=cfg.tfinal,
        deltaT=cfg.deltaT,
        beta1=cfg.beta1,
        beta2=cfg.beta2,
        orth_reg_weight=cfg.orth_reg_weight,
        total_step=cfg.tinit + cfg.tfinal + 1,  # placeholder: the plan's real count is set in setup()
        target_modules=sorted(found),  # exact qualified names: no PEFT default patterns
        fan_in_fan_out=kinds.pop(),
    )
    peft_model = get_peft_model(model, config)  # injects in place into `model`
    params = dict(model.named_parameters())
    for n in head_names:  # PEFT froze everything but its own factors
        params[n].requires_grad_(True)
    views = {n: AdaLoraView(model.get_submodule(n)) for n in found}
    for v in views.values():  # α / ranknum is a constant (PEFT leaves it trainable on the meta device)
        v.layer.ranknum[ADAPTER].requires_grad_(False)
    method = Method(name=cfg.name, model=model, lowrank=dict(views), head=head_names)
    hook = RankBudget(peft_model, views, cfg, method)

    def ranks() -> dict[str, int]:
        """Kept triplets per module: the allocator's rank pattern (before any allocation: init_r)."""
        pattern = hook.peft_config.rank_pattern
        if hook.pruned or not pattern:
            return {n: v.rank for n, v in views.items()}
        kept = {}
        for n in views:
            mask = pattern.get(f"{n}.lora_E.{ADAPTER}", pattern.get(f"{n}.lora_E"))
            kept[n] = int(sum(mask))
        return kept

    def extra_counts() -> dict:
        now = ranks()
        return {
            "rank_per_module": now,
            "init_r": cfg.init_r,
            "target_r": cfg.target_r,
            "rank_budget": sum(now.values()),
            "target_budget": cfg.target_r * len(views),
            "total_step": hook.peft_config.total_step,
            "schedule": cfg.schedule,  # the tinit / tfinal / deltaT this run used (schedule_for)
            **hook.used,
            "schedule_given": {"tinit": cfg.tinit, "tfinal": cfg.tfinal, "deltaT": cfg.deltaT},
            "pruned": hook.pruned,
        }

    method.inference_params = lambda: sum(k * (sum(shapes[n]) + 1) for n, k in ranks().items())
    method.extra_counts = extra_counts
    method.hooks.append(hook)
    if cfg.orth_reg_weight > 0:
        method.loss_terms.append(OrthogonalTerm(views, cfg.orth_reg_weight))
    method.params_convention = (
        "trainable = P, Λ, Q at init_r + task head (# T at start); inference = Σ k·(d_in + d_out + 1) "
        "over kept triplets at the final budget + head (pooler, classifier counted, unlike the "
        "official AdaLoRA print)"
    )
    method.exporter = lambda folder: export_peft(method, peft_model, folder)
    return method


def export_peft(method: Method, peft_model, folder):
    """PEFT's own AdaLoRA format (`get_peft_model_state_dict`, config with rank_pattern) + the head."""
    from peft import get_peft_model_state_dict

    from adapters.export import head_modules, write_peft

    tensors = get_peft_model_state_dict(peft_model)
    params = dict(method.model.named_parameters())
    tensors.update({f"base_model.model.{n}": params[n] for n in method.head})
    config = peft_model.peft_config[ADAPTER].to_dict()
    config["modules_to_save"] = head_modules(method) or None
    return write_peft(folder, config, tensors)
