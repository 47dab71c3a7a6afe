"""GSE: Guided Stochastic Exploration (Heddes, Srinivasa, Givargis & Nicolau, ICLR 2024 submission).

Starting from a random sparse topology (Erdős–Rényi), every ΔT = 1000 steps until 60 % of
training, with α_t = α/2 · (1 + cos(π t / T_end)) (α = 0.2):

    1. for every layer l, a candidate set C_l of inactive connections: γ·|A_l| pairs (i, j) drawn
       with replacement from p_out(i)·p_in(j) (``sampler``: uniform, grabo or graest, see
       :mod:`sparsebench.sparsity.sampling`), active ones and repeats discarded; when the layer
       is at least half dense, every inactive connection is a candidate;
    2. the gradient of only those candidates, G[i,j] = Σ_r dY[r,i]·X[r,j], a sampled product
       over the layer inputs X and output gradients dY captured during this step's batch
       (unfolded for a conv); the dense weight gradient is never used;
    3. grow the candidates with the largest |G|: α_t·|A| of them, one top-k over all layers
       (``scope: global``, the authors' default) or α_t·|A_l| per layer (``scope: layer``);
       grown weights and their momentum start at zero;
    4. prune the smallest-|w| active connections, never one just grown, back to the budget.

Global scope prunes back to the run's total budget with one bottom-k over all layers (as the
authors' ``update_masks_globally``), so the layers' shares drift during training; after each
update each layer's new count becomes its target (``engine.adopt_current_counts``), keeping the
total exactly the run's target. Layer scope returns every layer exactly to its own target.

When: with ``score_samples_per_class: 0`` the capture hooks are armed in ``before_forward``
of update steps only; the update runs after that step's optimizer step (``after_step``), so it
works the same on an engine that computes only active-weight gradients, and grown connections
first train on the next batch. With ``score_samples_per_class`` > 0 (the authors' protocol:
10) steps 1-2 use ⌈n·classes/batch⌉ separate score batches (:mod:`sparsebench.score_batches`),
captured batch by batch and summed over them, and the update runs before the step's forward
pass; the step then trains the new topology, as the authors' ``our_training.py`` does (their
Algorithm 2 replaces that SGD step; their code takes it).

Data-parallel runs: every rank draws the same candidates (same generator, and sampling weights
all-reduced in :mod:`sparsebench.sparsity.sampling`), and the candidates' gradients are averaged
over the ranks before the top-k, so every rank grows and prunes the same connections.

Engine primitives used (flat indices and values only; never a tensor of a weight's shape):
``active_indices``, ``active_values``, ``is_active``, ``inactive_indices`` (only for layers at
least half dense), ``grow``, ``prune``, ``global_largest``, ``global_smallest``,
``adopt_current_counts``, and each layer's ``out_features``, ``fan_in``, ``n_active()``,
``numel``, ``target_active``.

Cost per example (Evci et al. 2020 accounting): 3·f_S every step; on an update step also
2·L_l·|C_l| per layer for the candidate gradients (a multiply and an add per candidate and
output position L_l) and, for grabo and graest, (fan_in_l + out_l)·L_l for the sampling
distributions, per example of the step's batch or, with score batches, per scored example
(each of which also costs a forward and backward pass, 3·f_S). Drawing the samples,
deduplication and top-k are not counted (no
multiply-adds, as RigL leaves out its own top-k).
"""
from __future__ import annotations

from dataclasses import dataclass

from sparsebench import distributed
from sparsebench.config import choice, positive
from sparsebench.methods import Method, register
from sparsebench.score_batches import score_samples_param
from sparsebench.sparsity.dst import (ScheduledUpdates, drop_fraction_param, drop_schedule_param,
                                      end_param, grow_then_prune, interval_param, scope_param,
                                      start_param)
from sparsebench.sparsity.sampling import (SAMPLERS, ActivationCapture, candidate_gradient_flops,
                                           candidate_gradients, concat_captures, sample_candidates)

# At this density or above, every inactive connection of the layer is a candidate (the authors'
# ``sample_gradient_masks``: sparsity <= 0.5).
ALL_CANDIDATES_DENSITY = 0.5


@dataclass
class GseParams:
    drop_fraction: float = drop_fraction_param(0.2)      # α
    interval: int = interval_param(1000)                 # ΔT
    start: float = start_param(0.0)
    end: float = end_param(0.6)
    drop_schedule: str = drop_schedule_param("cosine")
    sampler: str = choice("uniform", tuple(SAMPLERS), "candidate distribution p_out·p_in")
    subset_factor: float = positive(1.0, "γ: pairs drawn per layer, as a multiple of its active count")
    scope: str = scope_param("global")
    score_samples_per_class: int = score_samples_param(0)


@register
class Gse(ScheduledUpdates, Method):
    name = "gse"
    engines = ("masked", "sparse")
    Params = GseParams
    default_distribution = "er_flat"

    def __init__(self, params, engine, **kwargs):
        super().__init__(params, engine, **kwargs)
        self.sampler = SAMPLERS[params.sampler]
        self.capture = ActivationCapture(engine.layers)
        self._update_cost: tuple[int, float] | None = None   # (step, extra FLOPs per example)

    @property
    def update_hook(self):
        return "before_forward" if self.params.score_samples_per_class else "after_step"

    def before_forward(self, ctx):
        if self.params.score_samples_per_class:
            super().before_forward(ctx)          # the update itself, from score batches
        elif self.schedule.is_update(ctx.step):
            self.capture.arm()

    def _score_captures(self, ctx):
        """Inputs and output gradients of every layer over the score batches, batch by batch
        (a layer runs once per forward pass), joined along the batch dimension."""
        batches, snapshots = ctx.score_batches(), []
        try:
            ctx.scoring.backward(ctx.model, batches, before_each=lambda i: self.capture.arm(),
                                 after_each=lambda i: snapshots.append(self.capture.snapshot()))
        finally:
            self.capture.clear()
        for p in ctx.model.parameters():  # only the captured tensors are used
            p.grad = None
        return concat_captures(snapshots), sum(int(y.numel()) for _, y in batches)

    def update(self, ctx, drop_fraction):
        engine, gen = self.engine, self.generator
        candidates, scores, extra = {}, {}, 0.0
        if self.params.score_samples_per_class:
            captures, scored = self._score_captures(ctx)
        else:
            captures, scored = self.capture, 0
        try:
            for layer in engine.layers:                                          # step 1
                cap = captures[layer.name]
                if layer.n_active() >= ALL_CANDIDATES_DENSITY * layer.numel:
                    cands = layer.inactive_indices()
                else:
                    p_out, p_in = self.sampler.weights(layer, cap, gen)
                    n = int(self.params.subset_factor * layer.n_active())
                    cands = sample_candidates(layer, p_out, p_in, n, gen)
                    extra += self.sampler.flops(layer, cap.positions)
                candidates[layer.name] = cands
                # Data-parallel: the global batch's gradient, the mean of the ranks' (as DDP's).
                grads = distributed.all_reduce_mean(candidate_gradients(cap, cands))
                scores[layer.name] = grads.abs()                                  # step 2
                extra += candidate_gradient_flops(cands.numel(), cap.positions)
        finally:
            self.capture.clear()
        if self.params.scope == "global":                                         # step 3
            n_grow = int(drop_fraction * sum(layer.n_active() for layer in engine.layers))
            picks = engine.global_largest(scores, n_grow)
            budget = sum(layer.target_active for layer in engine.layers)
        else:
            picks = {layer.name: engine.global_largest(
                         {layer.name: scores[layer.name]},
                         int(drop_fraction * layer.n_active()))[layer.name]
                     for layer in engine.layers}
            budget = {layer.name: layer.target_active for layer in engine.layers}
        grown = {name: candidates[name][pos] for name, pos in picks.items()}
        grow_then_prune(engine, grown, budget)                                    # step 4
        if self.params.scope == "global":
            engine.adopt_current_counts()
        if scored:   # extra per scored example, on top of their forward and backward
            ctx.scoring.add_flops(extra * scored)
        else:
            self._update_cost = (ctx.step, extra)

    def step_flops(self, ctx, flops):
        base = 3.0 * flops.sparse_forward()
        if self._update_cost is not None and self._update_cost[0] == ctx.step:
            return base + self._update_cost[1]
        return base
