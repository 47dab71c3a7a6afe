"""The method interface and the registry that discovers methods.

A method is a class registered by name with :func:`register`. It sees the model through the
sparsity engine and hooks into the common trainer at fixed moments; it never owns the loop:

=================  ===========================================================================
``init_masks``     once, before training (not on resume): choose the initial topology
``before_forward`` before each step's forward pass (e.g. arm activation capture)
``after_backward`` dense gradients are available, before they are masked and applied
``after_step``     after the optimizer step
``end_of_epoch``   after the last step of each epoch
``start_round``    between rounds, for methods that train the schedule several times
                   (``rounds()`` > 1, Lottery): e.g. prune and rewind; the trainer then
                   resets the optimizer and the learning-rate schedule
=================  ===========================================================================

Methods are plug-ins: every ``*.py`` file in the built-in ``methods/`` folder, in each folder
on ``$SPARSEBENCH_METHODS_PATH`` and in ``./methods`` is loaded by path, and installed packages
can add more through the ``sparsebench.methods`` entry-point group. Adding a method is one file;
one that fails to load stops only the runs that ask for it (see the registry below).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

import torch
from torch import nn

from .storage import paths
from .config.schema import ConfigError
from .scoring import ScoreDraw, first_batches
from .sparsity.engine import SparsityEngine

if TYPE_CHECKING:
    from .flops import FlopModel
    from .scoring import Cost, ScoreBatches


@dataclass
class NoParams:
    """For methods without parameters."""


@dataclass
class StepContext:
    """What a hook sees: where training is, and the current batch and loss."""

    step: int              # index of the current optimizer step in this round, from 0
    epoch: int             # index of the current epoch in this round, from 0
    total_steps: int       # of one round
    steps_per_epoch: int
    model: nn.Module
    batch: tuple[torch.Tensor, torch.Tensor] | None = None
    loss: torch.Tensor | None = None
    round: int = 0         # index of the round (only methods with rounds() > 1 see others)
    scoring: "ScoreBatches | None" = None   # the run's score batches (sparsebench.scoring)

    def score_batches(self, flops_per_example: "Cost" = None) -> "ScoreDraw":
        """Fresh batches from the run's separate score stream for this step's scores (with
        ``method.score_samples_per_class`` > 0), their FLOPs counted: 3·f_S per example unless
        ``flops_per_example`` says otherwise."""
        if self.scoring is None:
            raise RuntimeError("score batches: this context has no scoring facility")
        return self.scoring.draw(self.step, flops_per_example)


@dataclass
class InitContext:
    """What ``init_masks`` sees: the model, training batches and the loss (for SNIP-like scores)."""

    model: nn.Module
    train_batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    scoring: "ScoreBatches | None" = None

    def score_batches(self, flops_per_example: "Cost" = None, count: int = 1) -> "ScoreDraw":
        """Batches for scores at initialization: with ``method.score_samples_per_class`` > 0,
        drawn from the run's separate score stream; with 0, the first ``count`` training
        batches. Counted like :meth:`StepContext.score_batches` (at initialization the masks
        are those ``init_masks`` starts from: all active for pruning methods, so 3·f_D).
        Scored in full precision."""
        if self.scoring is not None and self.scoring.n_batches:
            return self.scoring.draw(-1, flops_per_example, autocast=False)
        draw = first_batches(self.train_batches, count, model=self.model, loss_fn=self.loss_fn)
        if self.scoring is not None:
            self.scoring.count(draw.examples, flops_per_example)
        return draw


def require_masked_engine(cfg: Any, method: str) -> None:
    """For methods that need weight-shaped masks, scores or gradients (see sparsity.sparse_layer)."""
    if cfg.sparsity.engine != "masked":
        raise ConfigError("sparsity.engine", f"got {cfg.sparsity.engine!r}; method {method!r} "
                          "runs on the masked engine only; allowed: masked")


class Method:
    """Base class: a static sparse topology drawn at random under the layer-wise distribution."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    default_distribution: ClassVar[str] = "erk"
    # A method that always trains at one density (dense: 1.0) overrides the run's density.
    fixed_density: ClassVar[float | None] = None
    # The ``sparsity.engine`` values it runs on (checked by sparsebench.resolve). Masked only by
    # default: a method whose scores need a dense gradient or weight cannot run always-sparse.
    # One that needs only active values and sampled gradients adds "sparse".
    engines: ClassVar[tuple[str, ...]] = ("masked",)
    # True: init_masks picks the topology from the initial weights (SNIP, magnitude pruning),
    # so ``sparsity.init: active_fan_in`` draws them before it, at full fan-in; False: after
    # it, at the active fan-in of the topology it drew (sparsebench.sparsity.init).
    scores_initial_weights: ClassVar[bool] = False
    # True: the method's schedule changes the topology while it trains (SET, RigL, GSE,
    # Top-KAST, gradual magnitude pruning); result.json records it as ``dynamic``, and a run
    # whose schedule makes fewer than MIN_MASK_UPDATES changes is warned about (see
    # :func:`few_updates_warning`). False: the topology is the initial one throughout (dense,
    # static, pruning at init) or changes only between rounds (Lottery).
    dynamic: ClassVar[bool] = False

    def __init__(self, params: Any, engine: SparsityEngine, *, total_steps: int,
                 steps_per_epoch: int, seed: int):
        self.params = params
        self.engine = engine
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        # The method's own random stream: independent of the data order and of the model init.
        self.generator = torch.Generator().manual_seed(seed * 1_000_003 + 17)

    @classmethod
    def validate(cls, params: Any, cfg: Any) -> None:
        """Cross-field checks; raise :class:`sparsebench.config.schema.ConfigError` naming the field."""

    @classmethod
    def scheduled_mask_updates(cls, params: Any, *, total_steps: int, steps_per_epoch: int) -> int:
        """How many times the method's schedule changes the topology while a round of
        ``total_steps`` steps trains (the initial masks not counted): what the dry run and the
        run's log check against :data:`MIN_MASK_UPDATES`. 0 without a schedule; a dynamic
        method overrides it from its parameters alone (no model is built for the plan)."""
        return 0

    # ---- hooks -------------------------------------------------------------------------------
    def init_masks(self, ctx: InitContext) -> None:
        self.engine.random_masks(self.generator)

    def before_forward(self, ctx: StepContext) -> None:
        pass

    def after_backward(self, ctx: StepContext) -> None:
        pass

    def after_step(self, ctx: StepContext) -> None:
        pass

    def end_of_epoch(self, ctx: StepContext) -> None:
        pass

    # ---- rounds and optimizer set-up -----------------------------------------------------------
    def rounds(self) -> int:
        """How many times the trainer runs the whole schedule (epochs, LR schedule)."""
        return 1

    def start_round(self, round: int, model: nn.Module) -> None:
        """Before round ``round`` (>= 1) begins; the optimizer and schedule are reset after."""

    def regularized_parameters(self, weight_decay: float) -> list[nn.Parameter]:
        """Parameters the method regularizes itself in place of the optimizer's weight decay
        (``weight_decay``: the run's coefficient, which the method takes over); the optimizer
        does not decay them."""
        return []

    # ---- cost accounting (FLOPs per training example; see sparsebench.flops) ----------------
    def step_flops(self, ctx: StepContext, flops: "FlopModel") -> float:
        """FLOPs per example of the step just taken: forward + backward at the current masks,
        3·f_S (Evci et al. 2020, App. H). Methods that do extra work in a step add it here."""
        return 3.0 * flops.sparse_forward()

    def init_flops(self, flops: "FlopModel") -> float:
        """Total FLOPs (not per example) of one-off work in ``init_masks``, e.g. SNIP's scoring."""
        return 0.0

    # ---- checkpoint --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


# ---------------------------------------------------------------------------------------------
# runs that are not what their label says

# A dynamic method whose schedule changes the topology fewer times than this in a run trains
# (almost) as a static one: the dry run and the run's log say so (issue 32).
MIN_MASK_UPDATES = 2
# The parameters that place a schedule's updates, named in the warning where a method has them.
SCHEDULE_FIELDS = ("interval", "frequency", "start", "end", "explore_epochs")


def few_updates_warning(method: type[Method], params: Any, *, total_steps: int,
                        steps_per_epoch: int) -> str | None:
    """One line when ``method`` is dynamic and its schedule makes fewer than
    :data:`MIN_MASK_UPDATES` topology changes in ``total_steps`` steps; else None."""
    if not method.dynamic:
        return None
    n = method.scheduled_mask_updates(params, total_steps=total_steps,
                                      steps_per_epoch=steps_per_epoch)
    if n >= MIN_MASK_UPDATES:
        return None
    schedule = ", ".join(f"method.{f}={getattr(params, f)}" for f in SCHEDULE_FIELDS
                         if hasattr(params, f))
    return (f"{method.name}: its schedule changes the topology {n} time{'s' * (n != 1)} in "
            f"{total_steps} steps ({steps_per_epoch} per epoch; {schedule}), fewer than "
            f"{MIN_MASK_UPDATES} for a dynamic method, so the run is close to static training; "
            f"lengthen the run or shorten the schedule")


# ---------------------------------------------------------------------------------------------
# registry
#
# A plug-in fails alone: a method file that does not import, or that registers a name another
# file already registered, is recorded instead of raised, so every other method still runs. A run
# that asks for the name it would have provided, or for the name claimed twice, stops with one
# line naming the file(s) and the cause (a ConfigError on method.name: exit code 2).

_REGISTRY: dict[str, type[Method]] = {}
_SOURCE: dict[str, str] = {}            # method name -> the file (or entry point) registering it
_CLAIMED_TWICE: dict[str, list[str]] = {}  # method name -> every other source claiming it
_BROKEN: dict[str, str] = {}            # file or entry point -> why it did not load
_DISCOVERED = False


def _source_of(cls: type) -> str:
    module = sys.modules.get(cls.__module__)
    return getattr(module, "__file__", None) or cls.__module__


def _same_file(a: str, b: str) -> bool:
    """Two sources with the same bytes (a checkout's methods/ beside an installed copy)."""
    try:
        return a == b or Path(a).read_bytes() == Path(b).read_bytes()
    except OSError:
        return False


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a class attribute `name`")
    if not dataclasses.is_dataclass(cls.Params):
        raise TypeError(f"{cls.__name__}.Params must be a dataclass")
    source = _source_of(cls)
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        if not _same_file(_SOURCE[cls.name], source):   # the same file loaded twice is one
            _CLAIMED_TWICE.setdefault(cls.name, []).append(source)
        return cls
    _REGISTRY[cls.name] = cls
    _SOURCE[cls.name] = source
    return cls


def _method_folders() -> list[Path]:
    """The built-in methods/ first, then the user's ($SPARSEBENCH_METHODS_PATH, ./methods): a
    method file's module is ``sparsebench_methods.<stem>`` (built-in ones keep that name)."""
    folders = [paths.builtin_dir("methods")]
    for folder in paths.search_dirs("methods"):
        if all(folder.resolve() != seen.resolve() for seen in folders):
            folders.append(folder)
    return folders


def _load_file(path: Path) -> None:
    module_name, n = f"sparsebench_methods.{path.stem}", 1
    while module_name in sys.modules:
        if getattr(sys.modules[module_name], "__file__", None) == str(path):
            return
        n += 1
        module_name = f"sparsebench_methods.{path.stem}_{n}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[module_name]
        _BROKEN[str(path)] = _cause(err)


def _cause(err: BaseException) -> str:
    """One line: the exception and, for a syntax error, where."""
    if isinstance(err, SyntaxError):
        return f"SyntaxError: {err.msg} (line {err.lineno})"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def discover() -> None:
    """Load every method file and entry point once per process; one that fails is recorded
    (see :func:`problems`), not raised."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for folder in _method_folders():
        for path in sorted(folder.glob("*.py")):
            if not path.name.startswith("_"):
                _load_file(path)
    for ep in entry_points(group="sparsebench.methods"):
        try:
            ep.load()
        except Exception as err:
            _BROKEN[f"entry point {ep.name} = {ep.value}"] = _cause(err)


def problems() -> dict[str, str]:
    """Method files (or entry points) that did not load -> why, in one line each."""
    discover()
    return dict(_BROKEN)


def claimed_twice() -> dict[str, list[str]]:
    """Method names registered by more than one file -> every file that registers it."""
    discover()
    return {name: [_SOURCE[name], *others] for name, others in _CLAIMED_TWICE.items()}


def source(name: str) -> str:
    """The file (or module) that registers method ``name``."""
    discover()
    return _SOURCE[name]


def available() -> list[str]:
    """Every name that resolves to one method (a name claimed by two files is left out)."""
    discover()
    return sorted(set(_REGISTRY) - set(_CLAIMED_TWICE))


def get(name: str) -> type[Method]:
    """The method registered as ``name``; otherwise ConfigError on ``method.name`` in one line,
    naming the files that claim it twice or that failed to load."""
    discover()
    if name in _CLAIMED_TWICE:
        files = [_SOURCE[name], *_CLAIMED_TWICE[name]]
        raise ConfigError("method.name", f"{name!r} is registered by more than one file ("
                          f"{', '.join(files)}); rename the `name` of all but one")
    if name in _REGISTRY:
        return _REGISTRY[name]
    broken = "; ".join(f"{where} did not load ({why})" for where, why in _BROKEN.items())
    raise ConfigError("method.name", f"unknown method {name!r}; allowed: "
                      f"{', '.join(available())}" + (f"; {broken}" if broken else ""))
