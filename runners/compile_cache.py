"""A compile cache a sweep shares across nodes, and the record's account of the compile warm-up.

`ArtifactCache`: torch's portable compile-cache artifacts (`torch.compiler.save_cache_artifacts()` /
`load_cache_artifacts()`, torch/compiler/_cache.py), kept with the experiment in
`<results_dir>/.cache/compile/<key>.bin`. The first run that compiles writes the file once its warm-up
is over (and tops it up at its end if it compiled more later); every later run loads it before its
first compile, which puts the entries into inductor's local cache dir: on a fresh node (an empty
`TORCHINDUCTOR_CACHE_DIR`, the cold case) the compile then reads instead of generating code.
`train.compile_cache=false` turns it off.

What the artifacts hold (torch 2.13): every entry this process wrote to or read from
- inductor's FX graph cache (the generated code; with CUDA, its Triton kernels' binaries are bundled
  in: `bundle_triton_into_fx_graph_cache`, on by default). CPU kernels are C++ source: a CPU run
  with the artifacts still builds them with the compiler unless the inductor dir has the .so files;
- AOTAutograd's cache (the partitioned forward / backward graphs, pointing at FX graph entries);
- autotuning results (`max-autotune`) and PGO's dynamic-shape profiles.
What they do not hold: Dynamo's trace of the Python bytecode (every process traces again: Dynamo's
own `caching_precompile` is experimental and off), CUDA-graph recordings (every process records its
graphs again, one per padded length and layer call), and the CPU C++ builds.
Torch checks each entry's own key (graph, torch version, device, inductor config) on use, and the
file's sha256 is checked before anything is loaded: a stale or foreign file costs a cache miss, a
corrupt one a warning and a rewrite, never a wrong result.

The file's key: what decides which graphs a run compiles, so that runs that would compile the same
graphs share one file and others do not overwrite it:
- torch (and CUDA, Triton, Python major.minor) versions: the artifacts carry no compatibility promise
  across versions ("results of cache artifacts will not be used unless code version matches");
- the device: CUDA name and compute capability, or the CPU's architecture and vector ISA;
- the compile settings that change the graphs: mode (after the `grad_accum` fallback), scope, pad
  multiple, precision (bf16 autocast or fp32);
- the resolved `model:` (less `path`) and `method:` sections (architecture, targets, rank, alpha, ...: floats are
  traced as constants), and for `compile_scope=model` the task (its head and loss are in the graph).
Not in it: seed, learning rate, data, epochs, batch size (dimensions are dynamic): a seed sweep or an
lr sweep of one method shares one file.

`WarmUp`: how much of the run was compile warm-up, cheaply. Each compiled optimizer step is timed on
the host from the start of its first forward (the compiled scope entered) to the end of
`optimizer.step()` (a post-hook): no device sync is added; evaluation, data loading, checkpoints and
the loop's periodic checks fall outside. A step is a warm-up step when torch logged compile work
during it: Dynamo / AOTAutograd / inductor compiles and CUDA-graph recordings all add an entry to
`torch._dynamo.utils.compilation_time_metrics` (torch's `dynamo_timed`). The record's
`timing.warmup_s` = the sum over warm-up steps of (their time - the median time of the other compiled
steps); `timing.warmup_steps` counts them. Being host time, a warm-up step includes what the host
waited for (compiling, a recording's synchronisation); the first step (eager by design) and eager
steps are not counted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from runners.record import CorruptFile, load_checked, save_checked

FORMAT = 1  # the file's layout: {"format", "key", "artifacts": bytes} behind a sha256 header


def key_parts(
    resolved: dict, device: torch.device, mode: str, scope: str, pad: int | None, precision: str
) -> dict:
    """What makes artifacts reusable (module docstring): versions, device, compile settings, model and
    method (and the task when the whole forward is compiled)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        where = f"cuda {torch.cuda.get_device_name(device)} sm{major}{minor}"
    else:
        where = f"{device.type} {platform.machine()} {torch.backends.cpu.get_cpu_capability()}"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    parts = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton_version,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "device": where,
        "mode": mode,
        "scope": scope,
        "pad_to_multiple_of": pad,
        "precision": precision,
        # not model.path: where the weights live differs between nodes, and no graph depends on it
        "model": {k: v for k, v in (resolved.get("model") or {}).items() if k != "path"},
        "method": resolved.get("method"),
    }
    if scope == "model":
        parts["task"] = resolved.get("task")
    return parts


def digest(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


_LOOKUPS = {  # torch's cache lookup counters (torch._dynamo.utils.counters), as the record names them
    "aot_autograd_hit": ("aot_autograd", "autograd_cache_hit"),
    "aot_autograd_miss": ("aot_autograd", "autograd_cache_miss"),
    "fx_graph_hit": ("inductor", "fxgraph_cache_hit"),
    "fx_graph_miss": ("inductor", "fxgraph_cache_miss"),
}


def _lookups() -> dict:
    from torch._dynamo.utils import counters

    return {name: counters[group][counter] for name, (group, counter) in _LOOKUPS.items()}


def _counts(info) -> dict:
    """{artifact type: how many} of a torch `CacheInfo`."""
    return {kind: len(keys) for kind, keys in sorted(info.artifacts.items()) if keys}


class ArtifactCache:
    """One key's artifacts file: `load` before the first compile, `save` after the warm-up.
    `state` is the record's `env.fast_path.compile_cache` (updated in place)."""

    def __init__(self, results_dir: str | Path, parts: dict, state: dict):
        self.key = digest(parts)
        self.path = Path(results_dir).resolve() / ".cache" / "compile" / f"{self.key}.bin"
        self.parts = parts
        self.state = state
        state.update(file=str(self.path), key=self.key, loaded=None, saved=None)
        self.writer = False  # whether this run writes the file (none was there, or it was unreadable)
        self.before = _lookups()

    def load(self) -> None:
        """Puts the file's entries into the local caches; a missing file is the first run's case, an
        unreadable one is reported in one line and rewritten after the warm-up."""
        if not self.path.is_file():
            self.writer = True
            return
        try:
            saved = load_checked(self.path)
            if not isinstance(saved, dict) or saved.get("format") != FORMAT:
                raise CorruptFile(f"not a format-{FORMAT} compile cache")
            with _quiet("torch.compiler._cache"):  # its own warning is a traceback; ours is one line
                info = torch.compiler.load_cache_artifacts(saved["artifacts"])
            if info is None:
                raise CorruptFile("torch could not read its artifacts")
        except (CorruptFile, OSError, KeyError, EOFError) as e:
            print(f"warning: ignoring compile cache {self.path} ({e}); it is rewritten after the warm-up",
                  file=sys.stderr)  # fmt: skip
            self.state["note"] = f"unreadable ({e}): rewritten"
            self.writer = True
            return
        self.state["loaded"] = _counts(info)

    def count_lookups(self) -> None:
        """The record's `lookups`: this run's hits and misses in the AOTAutograd and FX graph caches (a
        hit on an AOTAutograd entry loads its FX graphs without counting them)."""
        now = _lookups()
        self.state["lookups"] = {k: now[k] - self.before[k] for k in now if now[k] != self.before[k]}

    def save(self) -> None:
        """Writes what this process compiled or loaded so far (atomically), if this run is the writer.
        A failure to write costs the next runs their warm start, not this run: one warning line."""
        if not self.writer:
            return
        from torch.compiler._cache import CacheArtifactManager

        if self.state["saved"] is not None and not CacheArtifactManager.need_serialize():
            return  # nothing new since the last save
        result = torch.compiler.save_cache_artifacts()
        if result is None:
            return
        data, info = result
        try:
            save_checked(self.path, {"format": FORMAT, "key": self.parts, "artifacts": data})
        except OSError as e:
            print(f"warning: could not write compile cache {self.path} ({e})", file=sys.stderr)
            return
        self.state["saved"] = {**_counts(info), "bytes": len(data)}


@contextmanager
def _quiet(name: str):
    logger = logging.getLogger(name)
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def _compile_events() -> int:
    """How many compile / CUDA-graph recording regions torch has timed in this process so far."""
    from torch._dynamo.utils import compilation_time_metrics

    return sum(len(v) for v in compilation_time_metrics.values())


class WarmUp:
    """Times compiled steps (module docstring) and saves the artifacts once the warm-up is over: after
    the first compiled step that compiled nothing."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, cache: ArtifactCache | None, clock=time.perf_counter
    ):
        self.cache = cache
        self.clock = clock
        self.start: float | None = None  # when the current compiled step began
        self.events = 0  # compile events when it began
        self.warm: list[float] = []  # host seconds of compiled steps with compile events
        self.steady: list[float] = []  # ... and without
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
        self.handle = inner.register_step_post_hook(self._step_done)

    def step_begins(self) -> None:
        """Called as a compiled forward begins; only the first micro-batch of a step counts."""
        if self.start is None:
            self.events = _compile_events()
            self.start = self.clock()

    def _step_done(self, *_) -> None:
        if self.start is None:  # an eager step
            return
        took = self.clock() - self.start
        self.start = None
        if _compile_events() != self.events:
            self.warm.append(took)
            return
        self.steady.append(took)
        if self.cache is not None and self.cache.state["saved"] is None:
            self.cache.save()  # the first compiled step that compiled nothing: the warm-up is over

    def finish(self) -> dict:
        """The record's `timing` entries; tops up the artifacts file with anything compiled later."""
        self.handle.remove()
        if self.cache is not None:
            self.cache.save()
            self.cache.count_lookups()
        median = statistics.median(self.steady) if self.steady else None
        excess = sum(t - median for t in self.warm) if median is not None else None
        return {
            "warmup_s": excess,
            "warmup_steps": len(self.warm),
            "compiled_step_median_s": median,
            "warmup_definition": "sum over compiled steps in which torch compiled or recorded a CUDA graph of "
            "(step host time - median of the other compiled steps); host time from the step's first "
            "forward to the end of optimizer.step(), no device sync (runners/compile_cache.py)",
        }
