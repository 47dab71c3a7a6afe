"""SNIP: single-shot network pruning by connection sensitivity (Lee, Ajanthan & Torr, ICLR 2019).

At initialization, with every connection active:

    1. g = ∂L/∂w on ``batches`` training batches (the mean loss over them), or, with
       ``score_samples_per_class`` > 0, on ⌈n·classes/batch⌉ separate score batches
       (:mod:`sparsebench.scoring`; the GSE authors' protocol: n = 10);
    2. s = |g ⊙ w|, the connection sensitivity (Eq. 6; its normalization does not change ranks);
    3. keep the top-k of s over all prunable layers at once, k = the run's target number of
       active connections; the layers' shares follow from the scores, not from a distribution;
    4. train the resulting topology unchanged (static).

The scoring forward passes run in training mode; the model's buffers (e.g. batch-norm running
statistics) are restored afterwards so scoring leaves no trace but the masks. The gradient is
accumulated batch by batch; in a data-parallel run each rank scores its share of the batches
and the gradient is all-reduced before the top-k, so every rank keeps the same connections as
one process would (:mod:`sparsebench.scoring`).

Cost: one dense forward and backward per scored example, 3·f_D, counted by the run's scoring
facility.
"""
from __future__ import annotations

from dataclasses import dataclass
import torch

from sparsebench.config.schema import positive
from sparsebench.methods import Method, register
from sparsebench.scoring import score_samples_param
from sparsebench.sparsity.engine import keep_target_globally


@dataclass
class SnipParams:
    batches: int = positive(1, "training batches the sensitivity is computed on "
                               "(when score_samples_per_class is 0)")
    score_samples_per_class: int = score_samples_param(0)


@register
class Snip(Method):
    name = "snip"
    Params = SnipParams
    # Selection is global, so the distribution only fixes the total budget (the same for all).
    default_distribution = "uniform"
    scores_initial_weights = True

    def init_masks(self, ctx):
        layers = self.engine.layers
        batches = ctx.score_batches(count=self.params.batches)   # 3·f_D per example: all active
        grads = batches.gradients([layer.weight for layer in layers])
        with torch.no_grad():
            scores = {layer.name: (g * layer.weight).abs() for layer, g in zip(layers, grads)}
        keep_target_globally(self.engine, scores)
