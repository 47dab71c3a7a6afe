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
10) steps 1-2 use ⌈n·classes/batch⌉ separate score batches (:mod:`sparsebench.scoring`), and
the update runs before the step's forward pass; the step then trains the new topology, as the
authors' ``our_training.py`` does (their Algorithm 2 replaces that SGD step; their code takes it).

Streamed: the score batches are captured one at a time and what the update needs is summed
over them (float64), each layer's captured tensors dropped as soon as its share is added, so
an update holds one batch's activations and the sums, whatever the number of batches. The
candidates of grabo and graest are drawn from statistics of the same batches whose gradients
they need, so those samplers take two passes over the batches: pass 1 sums the statistics,
the candidates are drawn, pass 2 (the same batches, the same dropout draws) sums their
gradients; uniform draws its candidates first and takes one pass. The second pass costs one
more forward and backward per scored example, 3·f_S, counted with the scoring FLOPs. (With the
step's own batch the captured batch serves both, in one pass.)

Data-parallel runs: every rank draws the same candidates (same generator, and the statistics
all-reduced), each rank scores its share of the score batches (or of the step's batch), and
the candidates' gradients are all-reduced before the top-k, so every rank grows and prunes
the same connections as one process.

Engine primitives used (flat indices and values only; never a tensor of a weight's shape):
``active_indices``, ``active_values``, ``is_active``, ``inactive_indices`` (only for layers at
least half dense), ``grow``, ``prune``, ``global_largest``, ``global_smallest``,
``adopt_current_counts``, and each layer's ``out_features``, ``fan_in``, ``n_active()``,
``numel``, ``target_active``.

Cost per example (Evci et al. 2020 accounting): 3·f_S every step; on an update step also
2·L_l·|C_l| per layer for the candidate gradients (a multiply and an add per candidate and
output position L_l) and, for grabo and graest, (fan_in_l + out_l)·L_l for the sampling
distributions, per example of the step's batch or, with score batches, per scored example
(each of which also costs a forward and backward pass, 3·f_S, and for grabo and graest a
second one). Drawing the samples,
deduplication and top-k are not counted (no
multiply-adds, as RigL leaves out its own top-k).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sparsebench import distributed
from sparsebench.config.schema import choice, positive
from sparsebench.methods import Method, register
from sparsebench.scoring import score_samples_param
from sparsebench.sparsity.dst import (ScheduledUpdates, drop_fraction_param, drop_schedule_param,
                                      end_param, grow_then_prune, interval_param, scope_param,
                                      start_param)
from sparsebench.sparsity.samplers import SAMPLERS, LayerPlan, gradient_reduce
from sparsebench.sparsity.sampling import (ActivationCapture, CandidateGradients,
                                           candidate_gradient_flops)

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
    dynamic = True
    engines = ("masked", "sparse")
    Params = GseParams
    default_distribution = "er_flat"

    def __init__(self, params, engine, **kwargs):
        super().__init__(params, engine, **kwargs)
        self.sampler = SAMPLERS[params.sampler]
        self.capture = ActivationCapture(engine.layers)
        self._positions: dict[str, int] = {}   # output positions per example, by layer
        self._update_cost: tuple[int, float] | None = None   # (step, extra FLOPs per example)

    @property
    def update_hook(self):
        return "before_forward" if self.params.score_samples_per_class else "after_step"

    def before_forward(self, ctx):
        if self.params.score_samples_per_class:
            super().before_forward(ctx)          # the update itself, from score batches
        elif self.schedule.is_update(ctx.step):
            self.capture.arm()

    def update(self, ctx, drop_fraction):
        engine, sampler = self.engine, self.sampler
        layers = engine.layers
        # Layers whose candidates are drawn (the others take every inactive connection).
        draws = {layer.name: int(self.params.subset_factor * layer.n_active())
                 for layer in layers if layer.n_active() < ALL_CANDIDATES_DENSITY * layer.numel}
        if self.params.score_samples_per_class:
            batches = ctx.score_batches()
            idle_ranks = len(batches) < distributed.current().size   # some score no batch
            shape = dict(whole=True, batches=len(batches), rows=ctx.scoring.batch_size)
            stats = None
            if sampler.needs_batches and draws:                    # pass 1: the statistics
                for i in self._pass(batches):
                    if stats is None:
                        stats = self._statistics(draws, **shape)
                    self._visit(lambda name, cap: stats.add(name, cap, i) if name in draws else None)
                if idle_ranks:
                    self._share_positions()
                if stats is None:
                    stats = self._statistics(draws, **shape)
                # The second pass: one more forward and backward per scored example.
                ctx.scoring.add_flops(3.0 * ctx.scoring.flop_model.sparse_forward() * batches.examples)
            else:
                stats = sampler.statistics([], self.generator, **shape)
            candidates = self._candidates(stats, draws)                        # step 1
            grads = CandidateGradients(candidates, gradient_reduce(True))     # step 2: a pass
            for _ in self._pass(batches):
                self._visit(grads.add)
            if idle_ranks:
                self._share_positions()
        else:  # this step's batch, captured in its forward and backward: this rank's share
            try:
                rows = self.capture[layers[0].name].batch * distributed.current().size
                stats = self._statistics(draws, whole=False, batches=1, rows=rows)
                if sampler.needs_batches:
                    self._visit(lambda name, cap: stats.add(name, cap, 0) if name in draws else None,
                                release=False)
                candidates = self._candidates(stats, draws)                    # step 1
                grads = CandidateGradients(candidates, gradient_reduce(False))  # step 2
                self._visit(grads.add)
            finally:
                self.capture.clear()
        scores = {layer.name: grads.total(layer.name).abs() for layer in layers}
        extra = sum(sampler.flops(layer, self._positions[layer.name]) for layer in layers
                    if layer.name in draws)
        extra += sum(candidate_gradient_flops(candidates[layer.name].numel(),
                                              self._positions[layer.name]) for layer in layers)
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
        if self.params.score_samples_per_class:   # per scored example, on top of its passes
            ctx.scoring.add_flops(extra * batches.examples)
        else:
            self._update_cost = (ctx.step, extra)

    # ---- the pieces of an update ----------------------------------------------------------------
    def _pass(self, batches):
        """One pass over the score batches: yields the global index of each of this rank's
        batches once it has run forward and backward with the capture armed; the captured
        tensors are dropped before the next. Every pass sees the same batches and dropout."""
        self.capture.arm()
        try:
            for i, loss in batches.losses(replay=True):
                loss.backward()
                yield i
                self.capture.reset()
        finally:
            self.capture.clear()
            for p in batches.model.parameters():  # only the captured tensors are used
                p.grad = None

    def _visit(self, add, release=True):
        """``add(name, capture)`` for every layer of the batch just captured, in layer order,
        dropping each layer's tensors once added (one batch's activations at a time)."""
        for layer in self.engine.layers:
            cap = self.capture[layer.name]
            self._positions[layer.name] = cap.positions
            add(layer.name, cap)
            if release:
                cap.release()

    def _share_positions(self):
        """Every layer's output positions on every rank, also on a rank that scored no batch."""
        names = [layer.name for layer in self.engine.layers]
        known = torch.tensor([float(self._positions.get(n, 0)) for n in names])
        self._positions = dict(zip(names, distributed.all_reduce_max(known).long().tolist()))

    def _statistics(self, draws, **kw):
        """The sampler's empty accumulator; the capture holds a batch, or positions are known."""
        for layer in self.engine.layers:
            if self.capture[layer.name].dy is not None:
                self._positions[layer.name] = self.capture[layer.name].positions
        layers = {layer.name: layer for layer in self.engine.layers}
        plans = [LayerPlan(name, layers[name].out_features, layers[name].fan_in, n,
                           self._positions[name]) for name, n in draws.items()]
        return self.sampler.statistics(plans, self.generator, **kw)

    def _candidates(self, stats, draws):
        """Step 1 for every layer, in layer order (the generator's order)."""
        return {layer.name: (stats.candidates(layer, draws[layer.name], self.generator)
                             if layer.name in draws else layer.inactive_indices())
                for layer in self.engine.layers}

    def step_flops(self, ctx, flops):
        base = 3.0 * flops.sparse_forward()
        if self._update_cost is not None and self._update_cost[0] == ctx.step:
            return base + self._update_cost[1]
        return base
