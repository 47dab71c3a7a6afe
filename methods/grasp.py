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
run's separate score stream (:mod:`sparsebench.score_batches`; the GSE protocol's n = 10, as
their ``prune_before_training.py`` scores GraSP), else the first ``batches`` training batches.

Cost: g is one dense forward and backward per scored example (3·f_D); Hg costs about two
gradient evaluations more (Pearlmutter 1994: forward and backward that keep the graph, then
the backward through it), 6·f_D, so the one-off scoring is 9·f_D per example. Runs on the
masked engine (the scores need every connection's dense gradient).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from sparsebench import distributed
from sparsebench.config import positive
from sparsebench.methods import Method, register, require_masked_engine
from sparsebench.score_batches import score_samples_param
from sparsebench.sparsity.engine import keep_target_globally
from sparsebench.sparsity.scoring import restored_state, score_batches


SCORE_COST = 9.0  # FLOPs per scored example, in dense forward passes (g: 3, Hg: 6)


@dataclass
class GraspParams:
    batches: int = positive(1, "training batches g and Hg are computed on")
    temperature: float = positive(200.0, "T: the logits are divided by T while scoring")
    score_samples_per_class: int = score_samples_param(0)


def gradient_and_hessian_gradient(model, loss_fn, batches, weights, temperature=1.0):
    """(g, Hg) of the mean loss over ``batches`` w.r.t. ``weights``, Hg by double backprop.
    Attention runs on the math kernel meanwhile: the fused ones (flash, memory-efficient)
    have no double backward."""
    with sdpa_kernel(SDPBackend.MATH):
        return _gradient_and_hessian_gradient(model, loss_fn, batches, weights, temperature)


def _gradient_and_hessian_gradient(model, loss_fn, batches, weights, temperature):
    def mean_loss_grads(x, y, create_graph):
        loss = loss_fn(model(x) / temperature, y) / len(batches)
        return torch.autograd.grad(loss, weights, create_graph=create_graph)

    g = [torch.zeros_like(w) for w in weights]
    for x, y in batches:
        for acc, grad in zip(g, mean_loss_grads(x, y, False)):
            acc += grad
    # Data-parallel: every rank scores its own batches; the global g, then the global H g (the
    # mean of the ranks' H_r g), so that all ranks cut the same connections.
    g = [distributed.all_reduce_mean(gi) for gi in g]
    hg = [torch.zeros_like(w) for w in weights]
    for x, y in batches:
        grads = mean_loss_grads(x, y, True)
        z = sum((gi * grad).sum() for gi, grad in zip(g, grads))  # gᵀ ∇L, g constant
        for acc, h in zip(hg, torch.autograd.grad(z, weights)):
            acc += h
    return g, [distributed.all_reduce_mean(h) for h in hg]


@register
class Grasp(Method):
    name = "grasp"
    Params = GraspParams
    # Selection is global, so the distribution only fixes the total budget.
    default_distribution = "uniform"
    # It scores the initialization it then trains (see Method.scores_initial_weights).
    scores_initial_weights = True

    def __init__(self, params, engine, **kwargs):
        super().__init__(params, engine, **kwargs)
        self.scored_examples = 0

    @classmethod
    def validate(cls, params, cfg):
        require_masked_engine(cfg, cls.name)

    def scores(self, ctx) -> dict[str, torch.Tensor]:
        """S = −θ ⊙ Hg per prunable layer."""
        model, layers = ctx.model, self.engine.layers
        with restored_state(model):
            model.train()
            if self.params.score_samples_per_class:  # counted by the score-batch facility
                batches = ctx.score_batches(SCORE_COST * ctx.scoring.flop_model.dense_forward())
            else:
                batches = score_batches(ctx, self.params.batches, self.name)
                self.scored_examples += sum(y.numel() for _, y in batches)
            _, hg = gradient_and_hessian_gradient(model, ctx.loss_fn, batches,
                                                  [layer.weight for layer in layers],
                                                  self.params.temperature)
            model.zero_grad(set_to_none=True)
        return {layer.name: -(layer.weight.detach() * h) for layer, h in zip(layers, hg)}

    def init_masks(self, ctx):
        # Keep the smallest S: the largest −S.
        keep_target_globally(self.engine, {n: -s for n, s in self.scores(ctx).items()})

    def init_flops(self, flops):
        return SCORE_COST * flops.dense_forward() * self.scored_examples
