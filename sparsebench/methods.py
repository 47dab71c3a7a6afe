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

Methods are plug-ins: every ``*.py`` file in the repository's ``methods/`` folder (and in each
folder on ``$SPARSEBENCH_METHODS_PATH``) is loaded by path, and installed packages can add
more through the ``sparsebench.methods`` entry-point group. Adding a method is one file.
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

from . import paths
from .config import ConfigError
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
        """Cross-field checks; raise :class:`sparsebench.config.ConfigError` naming the field."""

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
# registry

_REGISTRY: dict[str, type[Method]] = {}
_DISCOVERED = False


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a class attribute `name`")
    if not dataclasses.is_dataclass(cls.Params):
        raise TypeError(f"{cls.__name__}.Params must be a dataclass")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise ValueError(f"method name {cls.name!r} registered twice "
                         f"({existing.__module__} and {cls.__module__})")
    _REGISTRY[cls.name] = cls
    return cls


def _method_folders() -> list[Path]:
    folders = [paths.methods_dir()]
    extra = os.environ.get("SPARSEBENCH_METHODS_PATH", "")
    folders += [Path(p) for p in extra.split(os.pathsep) if p]
    return folders


def _load_file(path: Path) -> None:
    module_name = f"sparsebench_methods.{path.stem}"
    if module_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise


def discover() -> None:
    """Load every method file and entry point once per process."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for folder in _method_folders():
        for path in sorted(folder.glob("*.py")):
            if not path.name.startswith("_"):
                _load_file(path)
    for ep in entry_points(group="sparsebench.methods"):
        ep.load()


def available() -> list[str]:
    discover()
    return sorted(_REGISTRY)


def get(name: str) -> type[Method]:
    discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None
