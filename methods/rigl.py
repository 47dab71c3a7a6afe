"""RigL: Rigging the Lottery (Evci, Gale, Menick, Castro & Elsen, ICML 2020), Algorithm 1.

Starting from a random sparse topology (ERK), every ΔT = 100 steps until T_end = 75 % of
training: for each layer,

    1. drop the fraction α_t = α/2 · (1 + cos(π t / T_end)) (α = 0.3) of its active weights with
       the smallest magnitude;
    2. grow as many connections with the largest dense-gradient magnitude |∂L/∂W| on the
       current batch, among the inactive ones (a just-dropped one may come back and then stays);
       new weights and their optimizer state start at zero.

Order within a step, as in the reference (``SparseRigLOptimizer.apply_gradients`` returns
``cond(is_update, mask_update, apply_gradients)``): on an update step the gradient is used to
choose connections *instead of* being applied, i.e. the update runs right after the backward
pass and that step's weight update is skipped (every parameter's gradient is cleared, so the
optimizer leaves weights and state untouched). The dense gradient is the one autograd computes
for the masked weights (∂L/∂(w ⊙ m), RigL's ``compute_gradients`` on the masked weights).

Cost (Evci et al. 2020, App. H): 3·f_S per example, and 2·f_S + f_D on an update step (forward
and input-gradient backward at the sparse cost, the weight gradient dense).
"""
from __future__ import annotations

from dataclasses import dataclass

from sparsebench.methods import Method, register
from sparsebench.sparsity.dst import (ScheduledUpdates, drop_count, drop_fraction_param,
                                      drop_schedule_param, end_param, interval_param,
                                      prune_then_grow, start_param)


@dataclass
class RigLParams:
    drop_fraction: float = drop_fraction_param(0.3)      # α
    interval: int = interval_param(100)                  # ΔT
    start: float = start_param(0.0)
    end: float = end_param(0.75)                         # T_end / T
    drop_schedule: str = drop_schedule_param("cosine")


@register
class RigL(ScheduledUpdates, Method):
    name = "rigl"
    Params = RigLParams
    default_distribution = "erk"
    update_hook = "after_backward"

    def update(self, ctx, drop_fraction):
        for layer in self.engine.layers:
            prune_then_grow(self.engine, layer, drop_count(layer, drop_fraction),
                            drop_score=layer.weight.abs(), grow_score=layer.weight.grad.abs())
        for p in ctx.model.parameters():  # this step's update is the topology change (see above)
            p.grad = None

    def step_flops(self, ctx, flops):
        if self.schedule.is_update(ctx.step):
            return 2.0 * flops.sparse_forward() + flops.dense_forward()
        return 3.0 * flops.sparse_forward()
