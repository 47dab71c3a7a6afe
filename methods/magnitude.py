"""Gradual magnitude pruning (Zhu & Gupta, "To prune, or not to prune", 2017).

Training starts dense. From step t_0 = start·T, every ``frequency`` steps until t_end = end·T,
the smallest-magnitude active weights are pruned so that the density follows the cubic
schedule (their Eq. 1, written in densities d = 1 − s):

    d_t = d_f + (d_i − d_f) · (1 − (t − t_0) / (t_end − t_0))³,

from d_i = ``initial_density`` at t_0 to the run's density d_f at t_end, after which the
topology is fixed. ``ramp: cosine`` replaces the cubic factor (1 − p)³,
p = (t − t_0)/(t_end − t_0), by ½·(1 + cos(π p)): the GSE paper's "gradual" baseline (the
authors' ``gradual_sparse_training.py``: sparsity s·(1 − ½(1 + cos(π t / t_end))) from dense,
every 1000 steps until 60 % of training, one global ranking).

``scope: global`` ranks |w| over all prunable layers at once (the layers' final shares follow
from the magnitudes); ``scope: layer`` prunes each layer on its own
schedule to its own target (from the run's distribution; Zhu & Gupta prune layer-wise with a
uniform one). Counts are whole numbers: count_t = target + round((count_i − target)·r(p)), with
r the ramp, which is exactly the target at t_end.

Cost (Evci et al. 2020, App. H): every step is 3·f_S at the current masks, so the run's
training FLOPs integrate the density schedule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sparsebench.config.schema import ConfigError, checked, choice, fraction, positive
from sparsebench.methods import Method, register
from sparsebench.sparsity.dst import prune_by_magnitude, scope_param


@dataclass
class MagnitudeParams:
    start: float = checked(0.1, lambda v: 0 <= v < 1, "a number in [0, 1)",
                           "t_0: first pruning step, as a fraction of all steps")
    end: float = fraction(0.8, "t_end: last pruning step (density reaches the target)")
    frequency: int = positive(100, "Δt: optimizer steps between pruning steps")
    initial_density: float = fraction(1.0, "d_i: density at the first pruning step")
    scope: str = scope_param("global")
    ramp: str = choice("cubic", ("cubic", "cosine"), "density between t_0 and t_end: Zhu & "
                                                     "Gupta's cubic, or the GSE paper's cosine")


@register
class Magnitude(Method):
    name = "magnitude"
    Params = MagnitudeParams
    default_distribution = "uniform"
    scores_initial_weights = True
    dynamic = True

    def __init__(self, params, engine, **kwargs):
        super().__init__(params, engine, **kwargs)
        self.start_step, self.end_step = self.window(params, self.total_steps)
        # Counts at d_i (never below the final target) and at d_f, per layer.
        self.final = {layer.name: layer.target_active for layer in engine.layers}
        self.initial = {layer.name: max(layer.target_active, round(params.initial_density * layer.numel))
                        for layer in engine.layers}

    @classmethod
    def validate(cls, params, cfg):
        if params.start >= params.end:
            raise ConfigError("method.start", f"got {params.start}; must be below method.end ({params.end})")
        if params.initial_density < cfg.density:
            raise ConfigError("method.initial_density",
                              f"got {params.initial_density}; must be at least density ({cfg.density})")

    # ---- schedule ----------------------------------------------------------------------------
    @staticmethod
    def window(params, total_steps: int) -> tuple[int, int]:
        """(t_0, t_end) in steps."""
        start = int(params.start * total_steps)
        return start, max(int(params.end * total_steps), start)

    @staticmethod
    def pruning_step(t: int, start: int, end: int, frequency: int) -> bool:
        """After t optimizer steps: t_0, t_0 + Δt, ... up to t_end, and t_end itself."""
        if not start <= t <= end:
            return False
        return (t - start) % frequency == 0 or t == end

    def is_pruning_step(self, t: int) -> bool:
        return self.pruning_step(t, self.start_step, self.end_step, self.params.frequency)

    @classmethod
    def scheduled_mask_updates(cls, params, *, total_steps, steps_per_epoch):
        """Pruning steps after a training step (t ≥ 1); one at t_0 = 0 makes the initial
        masks and is not counted, and one at t_0 prunes to d_i, no change when d_i = 1."""
        start, end = cls.window(params, total_steps)
        first = max(start, 1) + (params.initial_density >= 1 and start >= 1)
        return sum(cls.pruning_step(t, start, end, params.frequency)
                   for t in range(first, min(end, total_steps) + 1))

    def progress(self, t: int) -> float:
        span = self.end_step - self.start_step
        return 1.0 if span == 0 else min(1.0, max(0.0, (t - self.start_step) / span))

    def remaining(self, t: int) -> float:
        """r(p): the share of (count_i − target) still active after t steps; 1 at t_0, 0 at t_end."""
        p = self.progress(t)
        if self.params.ramp == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * p))
        return (1.0 - p) ** 3

    def count(self, initial: int, final: int, t: int) -> int:
        """Active connections after t steps on the ramp."""
        return final + round((initial - final) * self.remaining(t))

    def target_density_at(self, t: int) -> float:
        """The global density the schedule prescribes after t steps (before t_0: dense)."""
        total = self.engine.num_prunable()
        if t < self.start_step:
            return 1.0
        if self.params.scope == "global":
            return self.count(sum(self.initial.values()), sum(self.final.values()), t) / total
        return sum(self.count(self.initial[n], self.final[n], t) for n in self.final) / total

    # ---- hooks -------------------------------------------------------------------------------
    def init_masks(self, ctx):
        """Dense at the start (the engine's masks are full); pruning at t_0 = 0 happens here."""
        if self.start_step == 0:
            self.prune_to(0)

    def after_step(self, ctx):
        t = ctx.step + 1
        if self.is_pruning_step(t):
            self.prune_to(t)

    def prune_to(self, t: int) -> None:
        if self.params.scope == "global":
            keep = self.count(sum(self.initial.values()), sum(self.final.values()), t)
        else:
            keep = {n: self.count(self.initial[n], self.final[n], t) for n in self.final}
        # At t_end the final per-layer shares of a global ranking become the targets.
        prune_by_magnitude(self.engine, keep, adopt=t >= self.end_step)
