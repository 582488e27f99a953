"""The runner's fast path on CUDA: compiled training forward, bucketed padding, fused AdamW.

What runs (each a `train.*` key; `auto` decides per device and run; none changes run_id):

- `train.compile` (default auto = CUDA runs of >= `train.compile_min_steps` steps, where the warm-up
  pays back; true; false): the training forward and the method's loss terms go through
  `torch.compile(..., dynamic=True)` in `train.compile_mode` (default "reduce-overhead": CUDA graphs,
  one recorded per padded length). `train.compile_scope` says what of the forward: `blocks` (default,
  `CompiledBlocks`: the repeated layers, one compile serving all of them) or `model` (`compile`: the
  whole forward, task loss included). Every graph first gets its device-less scalar constants on the
  run's device (`device_constants`: no CPU kernels inside a GPU graph) and is traced under
  `tracing_config` (floats as constants, no duck shapes). Evaluation and decoding stay eager (their
  shapes and control flow vary). The first optimizer step runs eager: Hugging Face models set config
  fields on their first call (e.g. `problem_type`), which would otherwise cost a recompilation. Under
  CUDA graphs an epoch's last, smaller batch runs eager too (its shape would be recorded, one graph
  per layer call, for one step an epoch), the loop copies every output it keeps (graphs reuse their
  output buffers on the next step), and with `train.grad_accum > 1` the mode falls back to
  "default" (CUDA-graph trees overwrite accumulated gradients: pytorch/pytorch#169545), said in the
  record's `env.fast_path.note`.
  Compiled code is cached on disk under `<results_dir>/.cache/inductor` (`TORCHINDUCTOR_CACHE_DIR`,
  unless the user set it), so the later runs of a sweep load kernels instead of compiling them; on
  other nodes, torch's portable cache artifacts saved with the experiment do the same
  (`train.compile_cache`, runners/compile_cache.py).
- `train.pad_to_multiple_of` (auto: 32 when compiling, else exact dynamic padding): token batches
  are right-padded to a multiple of this length with the task's own pad values
  (`TaskData.pad_values`), so compiled code sees a handful of lengths instead of one per batch.
  Under CUDA graphs each length is recorded once per layer call, forward and backward (DeBERTa: 24
  recordings): on the H200 a CoLA run's compile epoch took 28.8 s with multiples of 32 against 34.7 s
  with 16, in the same call (CoLA's batches then have 2 lengths instead of 4); the extra padding is
  free where the step is host-bound, ≤ 31 tokens per row where it is not.
  Padded positions are masked (attention mask 0, labels −100): outputs are unchanged up to float
  summation order (tests/test_fastpath.py).
- `train.fused_optimizer` (auto: CUDA): AdamW's single fused kernel instead of its foreach kernels.

`method.fast` (adapters) is the other half: batched regularizer, device-side masks, fused q/v matmul.
Measurements: docs/PERFORMANCE.md.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.fx.experimental._config
from torch import nn

AUTO_PAD_MULTIPLE = 32  # every padded length costs one CUDA-graph recording per layer call: few buckets
COMPILE_MODES = ("reduce-overhead", "default", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_SCOPES = ("blocks", "model")  # what train.compile_scope compiles (CompiledBlocks, compile)
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile's modes that use CUDA graphs


@dataclass(frozen=True)
class FastPath:
    compile_mode: str | None  # None: eager
    pad_to_multiple_of: int | None
    fused_optimizer: bool
    note: str | None = None  # why a setting was changed from what the config asked

    def describe(self) -> dict:
        return asdict(self)


def resolve(t, device: torch.device, planned_steps: int) -> FastPath:
    """The `train.*` fast-path keys with `auto` decided for this device and run length."""
    cuda = device.type == "cuda"
    note = None
    if t.compile == "auto":  # compiling pays back its warm-up only over enough steps
        compile_on = cuda and planned_steps >= t.compile_min_steps
        if cuda and not compile_on:
            least = t.compile_min_steps
            note = f"compile auto: {planned_steps} steps < train.compile_min_steps={least}, eager"
    else:
        compile_on = bool(t.compile)
    pad = t.pad_to_multiple_of
    if pad == "auto":
        pad = AUTO_PAD_MULTIPLE if compile_on else None
    fused = cuda if t.fused_optimizer == "auto" else bool(t.fused_optimizer)
    mode = t.compile_mode if compile_on else None
    if uses_cudagraphs(mode) and t.grad_accum > 1:
        # CUDA-graph trees steal a micro-batch's gradient buffer into .grad and overwrite it on the
        # next replay, so accumulated gradients come out wrong (pytorch/pytorch#169545, #96693)
        mode, note = "default", f"compile_mode {t.compile_mode} -> default: grad_accum > 1 breaks CUDA graphs"
    return FastPath(mode, pad, fused, note)


def use_cache_dir(results_dir: str | Path) -> str:
    """Inductor's on-disk cache under the results dir (shared by a sweep's runs), unless the user set one.

    Importing some libraries already sets TORCHINDUCTOR_CACHE_DIR to inductor's per-user /tmp default
    (`cache_dir()` writes it back), so only a value other than that default counts as the user's.
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    global _ours
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    # "" would mean the cwd; a value an earlier run of this process set is ours, not the user's (runs of
    # one process with other results dirs: each gets its own)
    if not current or current == _ours or os.path.abspath(current) == os.path.abspath(default_cache_dir()):
        _ours = os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(
            Path(results_dir).resolve() / ".cache" / "inductor"
        )
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


_ours: str | None = None  # the TORCHINDUCTOR_CACHE_DIR use_cache_dir last set


def bucketed(collate: Callable, pad_values: Mapping[str, int], multiple: int) -> Callable:
    """`collate`, then each (batch, length) tensor in `pad_values` right-padded to a multiple of `multiple`."""

    def collate_bucketed(items):
        batch = collate(items)
        for key, value in pad_values.items():
            x = batch.get(key)
            if torch.is_tensor(x) and x.ndim == 2:
                extra = -x.shape[1] % multiple
                if extra:
                    batch[key] = torch.nn.functional.pad(x, (0, extra), value=value)
        return batch

    return collate_bucketed


def uses_cudagraphs(mode: str | None) -> bool:
    return mode in CUDAGRAPH_MODES


_TENSOR_CTORS = (torch.tensor, torch._refs.tensor)  # Dynamo writes the second for symbolic data
_SCALARS = (int, float, bool, torch.SymInt, torch.SymFloat, torch.SymBool)


def device_constants(gm: torch.fx.GraphModule, device: torch.device) -> int:
    """Puts the graph's device-less scalar constants (`torch.tensor(3.0)`) on `device`; returns how many.

    Hugging Face's DeBERTa-v2 builds its attention scale and log-bucket constants as host tensors
    (`torch.sqrt(torch.tensor(d) * s)`, 3 per layer; `torch.log(torch.tensor(c))` and a bucket bound,
    2 per forward). In a CUDA graph each is a CPU kernel, which inductor compiles as C++ (on the lent
    H200 the first C++ compile of a process took 69 s) and which keeps a host→device copy inside the
    step. Only 0-dim constants of Python numbers (or symbolic sizes) move: they mix with CUDA tensors
    exactly as host scalars do, and their values (a sqrt or log of a constant) may differ by one ulp
    from the host's."""
    moved = 0
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in _TENSOR_CTORS or "device" in node.kwargs:
            continue
        data = node.args[0] if len(node.args) == 1 else None
        if isinstance(data, torch.fx.Node):  # a symbolic size (dynamic shapes): its traced value
            data = data.meta.get("example_value")
        if isinstance(data, _SCALARS):
            node.kwargs = {**node.kwargs, "device": device}
            moved += 1
    if moved:
        gm.recompile()
    return moved


@contextmanager
def tracing_config():
    """Dynamo settings for our graphs, set while a compiled call may trace (set by hand: `config.patch()`
    costs 15x more per call).

    - Python float attributes (LoRA's `scaling`, LayerNorm's `eps`) become constants. Dynamo's default
      (`specialize_float=False`) makes each a 0-dim CPU tensor input whose casts the backward runs as
      CPU kernels; on the H200 such a backward crashed (segmentation fault) under CUDA graphs, and ran
      once the floats were constants. A changed float recompiles, as any other constant does.
    - No duck shapes: by default equal sizes share one symbol, so a batch of 32 in a model of width 32
      (or a padded length equal to the batch) is traced as that one size, and the last, smaller batch
      of an epoch or the next length recompiles (seen on tiny_deberta: 4 compiles instead of 2)."""
    dynamo, shapes = torch._dynamo.config, torch.fx.experimental._config
    old = dynamo.specialize_float, shapes.use_duck_shape
    dynamo.specialize_float, shapes.use_duck_shape = True, False
    try:
        yield
    finally:
        dynamo.specialize_float, shapes.use_duck_shape = old


def _backend(mode: str, device: torch.device, dynamic: bool | None) -> Callable:
    """Inductor in `mode`, after `device_constants`. Dynamo's cache entries belong to one backend
    object: functions that should share compiled code must share this one."""
    inductor = torch._TorchCompileInductorWrapper(mode, None, dynamic)  # what mode=... builds

    def backend(gm: torch.fx.GraphModule, example_inputs, **kwargs):
        device_constants(gm, device)
        return inductor(gm, example_inputs, **kwargs)

    return backend


def compile(fn: Callable, mode: str, device: torch.device, dynamic: bool | None = True) -> Callable:
    """`torch.compile(fn, mode=mode, dynamic=dynamic)`, with `device_constants` run on every graph first
    (on the CPU it only names the device the constants had: one code path for CPU tests and GPUs),
    called under `tracing_config`."""
    compiled = torch.compile(fn, backend=_backend(mode, device, dynamic), dynamic=dynamic)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        with tracing_config():
            return compiled(*args, **kwargs)

    return call


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The members of every `nn.ModuleList` of two or more modules of one class (a transformer's layers),
    outermost lists only (a list inside a block is part of that block)."""
    blocks: list[nn.Module] = []
    inside: set[int] = set()
    for module in model.modules():
        if id(module) in inside:
            continue
        if isinstance(module, nn.ModuleList) and len(module) > 1 and len({type(m) for m in module}) == 1:
            blocks.extend(module)
            inside.update(id(m) for b in module for m in b.modules())
    return blocks


def _needs_grad_flag(x) -> bool:
    """A trained block's input that takes no gradient: the first block's under frozen embeddings (or
    the first trained block's under frozen lower blocks). Dynamo guards on `requires_grad`, so that
    block would compile a second graph; flagging its input costs the backward one input gradient (a
    few matmuls of one layer) instead. Blocks without trained parameters are never flagged: the
    backward would then run through them."""
    return torch.is_tensor(x) and x.is_floating_point() and not x.requires_grad and torch.is_grad_enabled()


class CompiledBlocks:
    """Regional compilation: each repeated block's forward compiled, used only inside `active()`.

    The blocks share their code and one backend, so Dynamo traces and inductor compiles one block and
    the others reuse it (parameters are graph inputs): warm-up is about a layer's compile instead of
    the whole model's (the first block's input is flagged as needing a gradient like the others', so
    that it does not compile a second graph).
    Outside `active()` (the first step, evaluation) the blocks run their eager forward; the rest of the
    model (embeddings, head, loss) always runs eager."""

    def __init__(self, model: nn.Module, mode: str, device: torch.device, dynamic: bool | None = True):
        self.blocks = repeated_blocks(model)
        self.on = False
        backend = _backend(mode, device, dynamic)
        for block in self.blocks:
            eager = block.forward
            compiled = torch.compile(eager, backend=backend, dynamic=dynamic)
            trained = any(p.requires_grad for p in block.parameters())  # methods are applied by now
            block.forward = self._dispatch(trained, eager, compiled)

    def _dispatch(self, trained: bool, eager: Callable, compiled: Callable) -> Callable:
        @functools.wraps(eager)
        def forward(*args, **kwargs):
            if not self.on:
                return eager(*args, **kwargs)
            if trained:  # a frozen block's input stays as is
                if args and _needs_grad_flag(args[0]):
                    args = (args[0].detach().requires_grad_(), *args[1:])
                elif _needs_grad_flag(kwargs.get("hidden_states")):
                    kwargs["hidden_states"] = kwargs["hidden_states"].detach().requires_grad_()
            return compiled(*args, **kwargs)

        return forward

    def describe(self) -> str:
        names = sorted({type(b).__name__ for b in self.blocks})
        return f"{len(self.blocks)} blocks ({', '.join(names)})"

    @contextmanager
    def active(self):
        self.on = True
        try:
            with tracing_config():
                yield
        finally:
            self.on = False


def compile_forward(
    model: nn.Module, scope: str, mode: str, device: torch.device, dynamic: bool | None = True
) -> tuple[Callable, Callable, str]:
    """The training forward compiled as `scope` says: (what to call, the context to call it in, what was
    compiled). `blocks` falls back to the whole model where the model has no repeated layers."""
    if scope == "blocks":
        blocks = CompiledBlocks(model, mode, device, dynamic)
        if blocks.blocks:
            return model, blocks.active, blocks.describe()
    return compile(model, mode, device, dynamic), nullcontext, "model"
