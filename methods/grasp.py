"""GraSP: Gradient Signal Preservation (Wang, Zhang & Grosse, ICLR 2020), pruning at init.

At initialization, with every connection active, on the score batches:

    1. g = ∇_θ L(θ), the gradient of the mean loss (no graph kept);
    2. Hg = ∇_θ (gᵀ ∇_θ L(θ)) with g held constant: the Hessian-gradient product by double
       back-propagation;
    3. S(−θ) = −θ ⊙ Hg (their Eq. 8). Removing a weight with a large S reduces the gradient
       norm least (or increases it), so GraSP removes the weights with the largest S: it keeps
       the run's target number of connections with the *smallest* S over all prunable layers
       at once (one global cut; the layers' shares follow from the scores);
    4. train the resulting topology unchanged (static).

θ and g, H range over the prunable weights (biases and norms are not pruned, as in the
authors' code). The logits are divided by ``temperature`` T = 200 while scoring, as in the
authors' code and the GSE authors' ``prune.py`` (the paper's text does not mention it; it
keeps the softmax from saturating, so that Hg is not vanishingly small). Scoring runs in
training mode; buffers (batch-norm statistics) are restored afterwards.

Score batches: with ``score_samples_per_class`` n > 0, ⌈n·classes/batch⌉ batches from the
run's separate score stream (:mod:`sparsebench.scoring`; the GSE protocol's n = 10, as
their ``prune_before_training.py`` scores GraSP), else the first ``batches`` training batches.
Two passes over them, one batch at a time: g, summed over the batches (and the ranks), then
Hg, one batch's double backward at a time; the memory is that of one batch's graph.

Cost: g is one dense forward and backward per scored example (3·f_D); Hg costs about two
gradient evaluations more (Pearlmutter 1994: forward and backward that keep the graph, then
the backward through it), 6·f_D, so the one-off scoring is 9·f_D per example. Runs on the
masked engine (the scores need every connection's dense gradient).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from sparsebench.config.schema import positive
from sparsebench.methods import Method, register, require_masked_engine
from sparsebench.scoring import ScoreDraw, score_samples_param
from sparsebench.sparsity.engine import keep_target_globally


SCORE_COST = 9.0  # FLOPs per scored example, in dense forward passes (g: 3, Hg: 6)


@dataclass
class GraspParams:
    batches: int = positive(1, "training batches g and Hg are computed on")
    temperature: float = positive(200.0, "T: the logits are divided by T while scoring")
    score_samples_per_class: int = score_samples_param(0)


def gradient_and_hessian_gradient(batches: ScoreDraw, weights, temperature=1.0):
    """(g, Hg) of the mean loss over ``batches`` w.r.t. ``weights``, Hg by double backprop.
    Attention runs on the math kernel meanwhile: the fused ones (flash, memory-efficient)
    have no double backward."""
    def logits(out):
        return out / temperature

    with sdpa_kernel(SDPBackend.MATH):
        # Data-parallel: the global g first (reduced in ``gradients``), then the global H g.
        g = batches.gradients(weights, logits=logits)
        hg = [torch.zeros_like(w, dtype=torch.float64) for w in weights]
        for _, loss in batches.losses(logits=logits):
            grads = torch.autograd.grad(loss, weights, create_graph=True)
            z = sum((gi * grad).sum() for gi, grad in zip(g, grads))  # gᵀ ∇L, g constant
            for acc, h in zip(hg, torch.autograd.grad(z, weights)):
                acc += h
    return g, [batches.reduce(h).to(w.dtype) for h, w in zip(hg, weights)]


@register
class Grasp(Method):
    name = "grasp"
    Params = GraspParams
    # Selection is global, so the distribution only fixes the total budget.
    default_distribution = "uniform"
    # It scores the initialization it then trains (see Method.scores_initial_weights).
    scores_initial_weights = True

    @classmethod
    def validate(cls, params, cfg):
        require_masked_engine(cfg, cls.name)

    def scores(self, ctx) -> dict[str, torch.Tensor]:
        """S = −θ ⊙ Hg per prunable layer."""
        layers = self.engine.layers
        batches = ctx.score_batches(lambda f: SCORE_COST * f.dense_forward(), count=self.params.batches)
        _, hg = gradient_and_hessian_gradient(batches, [layer.weight for layer in layers],
                                              self.params.temperature)
        return {layer.name: -(layer.weight.detach() * h) for layer, h in zip(layers, hg)}

    def init_masks(self, ctx):
        # Keep the smallest S: the largest −S.
        keep_target_globally(self.engine, {n: -s for n, s in self.scores(ctx).items()})
