"""What every dynamic-sparse-training method shares: the update schedule and the two compositions.

The schedule (after RigL's ``sparse_optimizers_base``): the topology is updated after every
ΔT-th optimizer step, from ``start`` until ``end`` (fractions of all steps), and an update
replaces a fraction α_t of each layer's active connections, either constant (SET) or on the
cosine decay of Evci et al. 2020, Eq. 1:

    α_t = α/2 · (1 + cos(π · t / T_end)),        T_end = end · T,

with t the number of optimizer steps taken (as in RigL's code, t is not offset by ``start``).

The compositions:

* :func:`prune_then_grow` (SET, Mocanu et al. 2018; RigL, Evci et al. 2020, Alg. 1): per layer,
  drop the n smallest-magnitude active connections, then grow n among the inactive ones, the
  just-dropped included or not (``regrow_dropped``); :func:`global_prune_then_grow` does the
  same with one bottom-k and one top-k over all layers (GSE's schedule for its baselines, the
  authors' ``dynamic_sparse_training.py``); :func:`replace_smallest` picks one of the two by
  ``scope``;
* :func:`grow_then_prune` (GSE, Heddes et al.): grow the chosen candidates first, then prune the
  smallest-magnitude active connections back to a count, never the ones just grown;
* :func:`prune_by_magnitude` (gradual magnitude pruning, Lottery): keep the largest |w|, per
  layer or globally.

They speak only the layer protocol (:mod:`.protocol`), so they run on either engine.

Each method file composes these with its own scores, so it reads like its paper's algorithm box.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import torch

from ..config.schema import ConfigError, checked, choice, fraction
from .engine import SparsityEngine
from .protocol import PrunableLayer
from .selection import members

if TYPE_CHECKING:  # imports point one way: methods build on sparsity, not the reverse
    from ..methods import StepContext

DROP_SCHEDULES = ("cosine", "constant")
SCOPES = ("global", "layer")


# ---- parameter fields shared by name across set / rigl / gse (defaults differ per method) -------

def drop_fraction_param(default: float) -> Any:
    return fraction(default, "α: fraction of a layer's active connections replaced per update "
                             "(the start value of the cosine schedule)", open_low=False)


def interval_param(default: int) -> Any:
    return checked(default, lambda v: v >= 0, "an integer >= 0",
                   "ΔT: optimizer steps between topology updates; 0: at the end of every epoch")


def start_param(default: float) -> Any:
    return checked(default, lambda v: 0 <= v < 1, "a number in [0, 1)",
                   "first update no earlier than this fraction of all steps")


def end_param(default: float) -> Any:
    return fraction(default, "no update after this fraction of all steps (T_end of the cosine)")


def drop_schedule_param(default: str) -> Any:
    return choice(default, DROP_SCHEDULES, "α_t: cosine decay to 0 at end (RigL), or constant")


def scope_param(default: str) -> Any:
    """``scope`` of every method that ranks connections (SET, RigL, GSE, magnitude, Lottery)."""
    return choice(default, SCOPES, "rank connections over all layers at once, the layers' "
                                   "shares following from the scores (global), or each layer "
                                   "by its own share (layer)")


def regrow_dropped_param(default: bool) -> Any:
    return field(default=default, metadata={
        "help": "a connection dropped in an update may be grown back in the same update "
                "(RigL's and SET's reference code); false: never (the GSE authors' code)"})


def check_window(params: Any) -> None:
    """Cross-field check shared by every scheduled method: start before end."""
    if params.start >= params.end:
        raise ConfigError("method.start", f"got {params.start}; must be below method.end ({params.end})")


# ---- the schedule ------------------------------------------------------------------------------

@dataclass(frozen=True)
class UpdateSchedule:
    """When topology updates happen and how much they replace; a pure function of the step."""

    interval: int            # ΔT in steps (already resolved: never 0)
    start_step: float        # start · T
    end_step: float          # end · T  (T_end)
    total_steps: int         # T
    drop_fraction: float     # α
    drop_schedule: str       # cosine | constant

    @classmethod
    def from_params(cls, params: Any, *, total_steps: int, steps_per_epoch: int) -> "UpdateSchedule":
        return cls(interval=params.interval or steps_per_epoch,
                   start_step=params.start * total_steps, end_step=params.end * total_steps,
                   total_steps=total_steps, drop_fraction=params.drop_fraction,
                   drop_schedule=params.drop_schedule)

    def is_update(self, step: int) -> bool:
        """Whether the topology is updated at optimizer step ``step`` (0-based).

        An update follows every ΔT-th step (after t = step + 1 steps) with start·T ≤ t ≤ end·T
        and α_t > 0 (the cosine reaches 0 at T_end: nothing left to replace). Never after the
        last step: a change then would go untrained into the final model.
        """
        t = step + 1
        return (t % self.interval == 0 and self.start_step <= t <= self.end_step
                and t < self.total_steps and self.fraction_at(step) > 0)

    def fraction_at(self, step: int) -> float:
        """α_t for an update at ``step`` (0 outside the update window)."""
        t = step + 1
        if t > self.end_step:
            return 0.0
        if self.drop_schedule == "constant":
            return self.drop_fraction
        return self.drop_fraction / 2 * (1 + math.cos(math.pi * t / self.end_step))

    def update_steps(self) -> list[int]:
        """Every step index that is followed by an update (for tests and logs)."""
        return [s for s in range(self.interval - 1, self.total_steps, self.interval)
                if self.is_update(s)]


class ScheduledUpdates:
    """Mixin for SET, RigL and GSE (``class RigL(ScheduledUpdates, Method)``): owns the
    schedule; a method writes only ``update(ctx, drop_fraction)``.

    ``update_hook`` says when in a step the update runs: ``"after_step"`` (SET, GSE: after the
    optimizer step), ``"after_backward"`` (RigL: it needs the step's dense gradient) or
    ``"before_forward"`` (scores from separate score batches: the update precedes the step,
    which then trains the new topology, as in the GSE authors' code).
    """

    update_hook: ClassVar[str] = "after_step"

    def __init__(self, params: Any, engine: SparsityEngine, **kwargs):
        super().__init__(params, engine, **kwargs)
        self.schedule = UpdateSchedule.from_params(params, total_steps=self.total_steps,
                                                   steps_per_epoch=self.steps_per_epoch)

    @classmethod
    def validate(cls, params: Any, cfg: Any) -> None:
        check_window(params)

    @classmethod
    def scheduled_mask_updates(cls, params: Any, *, total_steps: int, steps_per_epoch: int) -> int:
        """The updates :meth:`UpdateSchedule.update_steps` places in the run."""
        return len(UpdateSchedule.from_params(params, total_steps=total_steps,
                                              steps_per_epoch=steps_per_epoch).update_steps())

    def update(self, ctx: "StepContext", drop_fraction: float) -> None:
        raise NotImplementedError

    def _maybe_update(self, ctx: "StepContext", hook: str) -> None:
        if hook == self.update_hook and self.schedule.is_update(ctx.step):
            self.update(ctx, self.schedule.fraction_at(ctx.step))

    def before_forward(self, ctx: "StepContext") -> None:
        self._maybe_update(ctx, "before_forward")

    def after_backward(self, ctx: "StepContext") -> None:
        self._maybe_update(ctx, "after_backward")

    def after_step(self, ctx: "StepContext") -> None:
        self._maybe_update(ctx, "after_step")


# ---- the compositions --------------------------------------------------------------------------

def drop_count(layer: PrunableLayer, drop_fraction: float) -> int:
    """n = ⌊α · |active|⌋, as RigL rounds it."""
    return int(layer.n_active() * drop_fraction)


def prune_then_grow(engine: SparsityEngine, layer: PrunableLayer, n: int, *,
                    drop_score: torch.Tensor, grow_score: torch.Tensor | None = None,
                    generator: torch.Generator | None = None, regrow_dropped: bool = True) -> None:
    """Drop the ``n`` active connections with the smallest ``drop_score``, then grow ``n``:
    those with the largest ``grow_score`` or, without one, uniformly at random.

    With ``regrow_dropped`` growth chooses among the inactive connections and the ones just
    dropped, as both reference implementations do (RigL's ``_get_update_op``, whose SET shares
    it). A dropped connection that is chosen again simply stays, keeping its weight and
    optimizer state (``reinit_when_same=False``); every other grown connection starts at zero
    with zero state. Without it, only connections inactive before the update can grow (the GSE
    authors' ``grow.disable_pruned_connections``); n is then capped at the number of inactive
    connections, so the layer's active count is unchanged in either case (the authors' code
    would grow fewer than it dropped in a nearly dense layer).
    """
    if not regrow_dropped:
        n = min(n, layer.numel - layer.n_active())
    if n <= 0:
        return
    dropped = layer.smallest_active(n, drop_score)
    also = dropped if regrow_dropped else None   # still active here, so excluded without it
    if grow_score is None:
        grown = layer.random_inactive(n, generator, also=also)
    else:
        grown = layer.largest_inactive(n, grow_score, also=also)
    _swap(engine, {layer.name: dropped}, {layer.name: grown})


def global_prune_then_grow(engine: SparsityEngine, n: int, *, drop_scores: Mapping[str, torch.Tensor],
                           grow_scores: Mapping[str, torch.Tensor] | None = None,
                           generator: torch.Generator | None = None,
                           regrow_dropped: bool = True) -> None:
    """:func:`prune_then_grow` over all layers at once: drop the ``n`` active connections with
    the smallest drop score over the whole model (one bottom-k), then grow ``n`` with the
    largest grow score over the whole model (one top-k), or ``n`` uniformly at random among
    all layers' eligible connections without grow scores (the authors' random grow score,
    ``torch.rand_like``, ranked globally; an always-sparse layer draws only the top of those
    scores, see :meth:`~.protocol.PrunableLayer.grow_candidates`). Layers end with whatever
    share the scores give them; each layer's new count becomes its target, the run's total is
    unchanged (checked; without ``regrow_dropped`` n is capped at the number of inactive
    connections, as in :func:`prune_then_grow`).
    """
    layers = [engine.by_name[name] for name in drop_scores]
    if not regrow_dropped:
        n = min(n, sum(layer.numel - layer.n_active() for layer in layers))
    if n <= 0:
        return
    drops = {layer.name: layer.drop_candidates(drop_scores[layer.name]) for layer in layers}
    picked = engine.global_smallest({name: c.scores for name, c in drops.items()}, n)
    dropped = {name: drops[name].at(pos) for name, pos in picked.items()}
    grows = {layer.name: layer.grow_candidates(
                 n, None if grow_scores is None else grow_scores[layer.name], generator,
                 also=dropped[layer.name] if regrow_dropped else None)
             for layer in layers}
    picked = engine.global_largest({name: c.scores for name, c in grows.items()}, n)
    _swap(engine, dropped, {name: grows[name].at(pos) for name, pos in picked.items()})
    engine.adopt_current_counts()


def _swap(engine: SparsityEngine, dropped: Mapping[str, torch.Tensor],
          grown: Mapping[str, torch.Tensor]) -> None:
    """Prune ``dropped`` and grow ``grown`` (flat indices per layer); one in both stays."""
    for name in dropped:
        layer, d, g = engine.by_name[name], dropped[name], grown.get(name)
        g = d[:0] if g is None else g.to(d.device)
        engine.prune(layer, d[~members(d, g)])
        engine.grow(layer, g[~members(g, d)])


def replace_smallest(engine: SparsityEngine, drop_fraction: float, *, scope: str,
                     regrow_dropped: bool, grow_scores: Mapping[str, torch.Tensor] | None = None,
                     generator: torch.Generator | None = None) -> None:
    """One SET/RigL update: replace the fraction α_t of the active connections with the
    smallest magnitude |w| by the largest ``grow_scores`` (random without them), per layer
    (n_l = ⌊α_t·|A_l|⌋) or globally (n = ⌊α_t·Σ_l |A_l|⌋)."""
    if scope == "global":
        n = int(drop_fraction * sum(layer.n_active() for layer in engine.layers))
        drop_scores = {layer.name: layer.magnitudes() for layer in engine.layers}
        global_prune_then_grow(engine, n, drop_scores=drop_scores, grow_scores=grow_scores,
                               generator=generator, regrow_dropped=regrow_dropped)
        return
    for layer in engine.layers:
        prune_then_grow(engine, layer, drop_count(layer, drop_fraction), drop_score=layer.magnitudes(),
                        grow_score=None if grow_scores is None else grow_scores[layer.name],
                        generator=generator, regrow_dropped=regrow_dropped)


def grow_then_prune(engine: SparsityEngine, grown: Mapping[str, torch.Tensor],
                    keep: Mapping[str, int] | int) -> dict[str, torch.Tensor]:
    """Grow ``grown`` (flat indices per layer; zero weights and state), then prune the
    smallest-magnitude active connections, never one just grown, back to ``keep``: a count per
    layer, or one total over all layers (a global bottom-k). Returns the pruned indices.

    Works on index lists and values only (no tensor of a weight's shape), so it runs unchanged
    on an always-sparse engine.
    """
    for name, idx in grown.items():
        if idx.numel():
            engine.grow(engine.by_name[name], idx)
    scores, active = {}, {}
    for layer in engine.layers:
        idx = layer.active_indices()
        score = layer.active_values().abs().float()
        if layer.name in grown:
            score[members(idx, grown[layer.name])] = float("inf")  # protected
        active[layer.name], scores[layer.name] = idx, score
    if isinstance(keep, int):
        excess = sum(idx.numel() for idx in active.values()) - keep
        positions = engine.global_smallest(scores, max(0, excess))
    else:
        positions = {name: engine.global_smallest({name: scores[name]},
                                                  max(0, active[name].numel() - keep[name]))[name]
                     for name in scores}
    pruned = {}
    for name, pos in positions.items():
        pruned[name] = active[name][pos]
        if pos.numel():
            engine.prune(engine.by_name[name], pruned[name])
    return pruned


def prune_by_magnitude(engine: SparsityEngine, keep: Mapping[str, int] | int, *,
                       adopt: bool) -> None:
    """Magnitude pruning (gradual magnitude pruning, Lottery's rounds): of the active
    connections keep those with the largest |w|, ``keep`` of them per layer, or in total over
    all layers (one global ranking, ``scope: global``). ``adopt``: after a global ranking, the
    layers' counts become their targets (the last pruning step)."""
    scores = {layer.name: layer.magnitudes() for layer in engine.layers}
    if isinstance(keep, int):
        engine.keep_largest(scores, keep)
        if adopt:
            engine.adopt_current_counts()
        return
    for name, score in scores.items():
        engine.keep_largest({name: score}, keep[name])
