"""RigL: Rigging the Lottery (Evci, Gale, Menick, Castro & Elsen, ICML 2020), Algorithm 1.

Starting from a random sparse topology (ERK), every ΔT = 100 steps until T_end = 75 % of
training: for each layer,

    1. drop the fraction α_t = α/2 · (1 + cos(π t / T_end)) (α = 0.3) of its active weights with
       the smallest magnitude;
    2. grow as many connections with the largest dense-gradient magnitude |∂L/∂W| on the
       current batch, among the inactive ones (a just-dropped one may come back and then stays;
       ``regrow_dropped: false`` forbids it); new weights and their optimizer state start at zero.

``scope: global`` drops the α_t·|A| smallest over all layers and grows as many by one top-k
over all layers (GSE's schedule for its baselines); the layers' shares then drift.

Order within a step, as in the reference (``SparseRigLOptimizer.apply_gradients`` returns
``cond(is_update, mask_update, apply_gradients)``): on an update step the gradient is used to
choose connections *instead of* being applied, i.e. the update runs right after the backward
pass and that step's weight update is skipped (every parameter's gradient is cleared, so the
optimizer leaves weights and state untouched). The dense gradient is the one autograd computes
for the masked weights (∂L/∂(w ⊙ m), RigL's ``compute_gradients`` on the masked weights).

With ``score_samples_per_class`` > 0 the gradient comes from separate score batches
(:mod:`sparsebench.scoring`, the GSE authors' protocol) instead, accumulated batch by batch (the
memory of one batch; in a data-parallel run each rank scores its share of the batches and the
sum is all-reduced): the update runs before the step's forward pass and the step then trains
the new topology, as the authors' ``dynamic_sparse_training.py`` does.

Cost (Evci et al. 2020, App. H): 3·f_S per example, and 2·f_S + f_D on an update step (forward
and input-gradient backward at the sparse cost, the weight gradient dense); with score batches
every step costs 3·f_S and each scored example 2·f_S + f_D.
"""
from __future__ import annotations

from dataclasses import dataclass

from sparsebench.methods import Method, register
from sparsebench.scoring import score_samples_param
from sparsebench.sparsity.dst import (ScheduledUpdates, drop_fraction_param, drop_schedule_param,
                                      end_param, interval_param, regrow_dropped_param,
                                      replace_smallest, scope_param, start_param)


@dataclass
class RigLParams:
    drop_fraction: float = drop_fraction_param(0.3)      # α
    interval: int = interval_param(100)                  # ΔT
    start: float = start_param(0.0)
    end: float = end_param(0.75)                         # T_end / T
    drop_schedule: str = drop_schedule_param("cosine")
    scope: str = scope_param("layer")
    regrow_dropped: bool = regrow_dropped_param(True)
    score_samples_per_class: int = score_samples_param(0)


@register
class RigL(ScheduledUpdates, Method):
    name = "rigl"
    dynamic = True
    Params = RigLParams
    default_distribution = "erk"

    @property
    def update_hook(self):
        return "before_forward" if self.params.score_samples_per_class else "after_backward"

    def update(self, ctx, drop_fraction):
        layers = self.engine.layers
        if self.params.score_samples_per_class:
            batches = ctx.score_batches(lambda f: 2.0 * f.sparse_forward() + f.dense_forward())
            grads = dict(zip([layer.name for layer in layers],
                             batches.gradients([layer.weight for layer in layers])))
        else:   # this step's gradient (DDP's, the global batch's)
            grads = {layer.name: layer.weight.grad for layer in layers}
        grads = {name: g.abs() for name, g in grads.items()}
        replace_smallest(self.engine, drop_fraction, scope=self.params.scope,
                         regrow_dropped=self.params.regrow_dropped, grow_scores=grads)
        for p in ctx.model.parameters():  # this step's update is the topology change (see above)
            p.grad = None

    def step_flops(self, ctx, flops):
        if self.schedule.is_update(ctx.step) and not self.params.score_samples_per_class:
            return 2.0 * flops.sparse_forward() + flops.dense_forward()
        return 3.0 * flops.sparse_forward()
