"""``torch.compile`` for a run's training steps (the run setting ``compile: false | true | auto``).

What is compiled: the module the training step runs its forward through (after DDP, in the
order torch documents: ``torch.compile(DDP(model))``), so the forward and, through AOTAutograd,
the backward are compiled graphs. Not compiled: the method hooks and mask updates (Python that
changes the topology between steps), ``engine.mask_gradients``, the evaluation and the score
batches (they run the eager module), and the optimizer step (a foreach SGD/AdamW over a few
tensors; compiling it would add a graph per parameter-group layout for little gain here).

Why a mask update never recompiles: the masked engine keeps inactive weights at zero in the
weights themselves (no mask enters the forward), and every topology change writes the weights,
masks and optimizer state in place, so the guards Dynamo installs (shapes, dtypes, module
structure) still hold. One exception is handled here: GSE and RigL arm forward hooks on the
update steps (:class:`~sparsebench.sparsity.sampling.ActivationCapture`), and torch by default
does *not* guard on module hooks (``torch._dynamo.config.skip_nnmodule_hook_guards``), so a
compiled forward would silently skip them. The compiled call turns those guards on, so an armed
step gets its own graph (compiled once, at the first armed step) and later updates reuse it.

The always-sparse engine (``sparsity.engine: sparse``) runs eager: its layers call C kernels
through ctypes inside custom autograd Functions (:mod:`sparsebench.sparsity.native`), which
Dynamo cannot trace, and they are not registered as ``torch.library`` custom ops. The run's log
and result.json say so (``compile_note``).

Checkpoints, ``final.pt`` and FLOP counting use the eager module (the trainer's ``model``), so
they hold no ``_orig_mod.`` keys and compiled and eager runs resume from each other's files.

``auto``: on CUDA for runs of at least :data:`AUTO_MIN_STEPS` steps, never on the CPU. On this
project's 2-core CPU (``make bench``, benchmarks/compile_speed.py), inductor takes tens of
seconds per model to compile and saves a few percent of a step at best, so a CPU run would need
hundreds of thousands of steps to pay back; on a GPU, where small steps are bound by kernel
launches that compiling fuses, a saving of ~1 ms per step pays back a ~30-60 s compile in a few
ten thousand steps (an estimate, not yet measured on a GPU: scripts/gpu_check.py prints both).
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass

import torch
from torch import nn

# Runs at least this long compile under ``compile: auto`` on CUDA (see the module docstring).
AUTO_MIN_STEPS = 20_000
SPARSE_ENGINE_NOTE = ("eager: sparsity.engine sparse calls C kernels through ctypes, which "
                      "torch.compile cannot trace (not torch.library custom ops)")


@dataclass
class CompileDecision:
    """Whether a run compiles, and the one line that says why (or why not)."""

    enabled: bool
    note: str


def decide(setting: bool | str, *, device: torch.device, total_steps: int,
           engine: str) -> CompileDecision:
    """The run's ``compile`` setting resolved for its device, length and sparsity engine."""
    if setting is False:
        return CompileDecision(False, "eager: compile false")
    if engine == "sparse":
        return CompileDecision(False, SPARSE_ENGINE_NOTE)
    if setting == "auto":
        if device.type != "cuda":
            return CompileDecision(False, "eager: compile auto compiles on CUDA only")
        if total_steps < AUTO_MIN_STEPS:
            return CompileDecision(False, f"eager: compile auto needs >= {AUTO_MIN_STEPS} steps "
                                          f"to pay back compiling, the run has {total_steps}")
        return CompileDecision(True, f"compiled: compile auto, CUDA, {total_steps} steps")
    return CompileDecision(True, "compiled: compile true")


class CompileStats:
    """The graphs a compiled module produced and the time spent compiling them.

    Graphs are counted by the backend this object wraps (one per Dynamo graph, graph-break
    pieces and recompilations included). Compile time sums Dynamo's compile start/end
    callbacks, which also cover the backward graph AOTAutograd compiles at the first backward.
    The callbacks are process-wide; they count only while this object is open.
    """

    def __init__(self, backend: str):
        self.backend_name = backend
        self.graphs = 0
        self.seconds = 0.0
        self._started: float | None = None
        self._open = True
        ref = weakref.ref(self)   # the callbacks outlive nothing: a dropped trainer stops counting
        self._on_start = lambda *args: (s := ref()) is not None and s._start()
        self._on_end = lambda *args: (s := ref()) is not None and s._end()
        torch._dynamo.callback_handler.register_start_callback(self._on_start)
        torch._dynamo.callback_handler.register_end_callback(self._on_end)

    def _start(self) -> None:
        if self._open:
            self._started = time.perf_counter()

    def _end(self) -> None:
        if self._open and self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def backend(self, gm: torch.fx.GraphModule, example_inputs):
        """The compile backend: counts the graph, then hands it to the named backend."""
        self.graphs += 1
        return torch._dynamo.lookup_backend(self.backend_name)(gm, example_inputs)

    def close(self) -> None:
        """Stop counting (the run is over); the numbers stay readable."""
        if self._open:
            self._open = False
            handler = torch._dynamo.callback_handler
            for callbacks, callback in ((handler.start_callbacks, self._on_start),
                                        (handler.end_callbacks, self._on_end)):
                if callback in callbacks:   # a later torch._dynamo.reset() clears them all
                    callbacks.remove(callback)


class CompiledModel:
    """A module's compiled forward with the module's own ``train``/``eval`` and attributes.

    Calls run with module-hook guards on (see the module docstring). Anything that needs the
    module itself (state_dict, parameters, FLOP counting) goes to the eager module, so no
    ``_orig_mod.`` key ever reaches a checkpoint."""

    def __init__(self, module: nn.Module, stats: CompileStats):
        self.module = module
        self.stats = stats
        self.compiled = torch.compile(module, backend=stats.backend)

    def __call__(self, *args, **kwargs):
        with torch._dynamo.config.patch(skip_nnmodule_hook_guards=False):
            return self.compiled(*args, **kwargs)

    def train(self, mode: bool = True) -> "CompiledModel":
        self.module.train(mode)
        return self

    def eval(self) -> "CompiledModel":
        return self.train(False)

    def __getattr__(self, name: str):
        return getattr(self.module, name)


def wrap(module: nn.Module, decision: CompileDecision, backend: str) -> nn.Module | CompiledModel:
    """``module`` compiled when ``decision`` says so, else ``module`` itself."""
    if not decision.enabled:
        return module
    # Dynamo's caches are per code object (a model class's forward), and after
    # ``recompile_limit`` guard failures (each new model instance is one) it silently falls back
    # to eager: a fresh cache per compiled run keeps a process that trains several (tests,
    # benchmarks) compiling each. A real run trains one model per process. (The reset also drops
    # every compile callback, so it comes before this run's are registered.)
    torch._dynamo.reset()
    return CompiledModel(module, CompileStats(backend))


def stats_of(model) -> CompileStats | None:
    """The compile statistics of a step module (None: it runs eager, or has not been built)."""
    return model.stats if isinstance(model, CompiledModel) else None


def close(model) -> None:
    """Stop counting compile time for a step module (the run is over)."""
    if (stats := stats_of(model)) is not None:
        stats.close()


def record(model, decision: CompileDecision) -> dict:
    """result.json's compile keys for the step module ``model`` (compiled or not)."""
    stats = stats_of(model)
    return {"compiled": stats is not None, "compile_note": decision.note,
            "compile_time_s": stats.seconds if stats else None,
            "compiled_graphs": stats.graphs if stats else None}
