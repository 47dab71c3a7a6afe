"""SNIP: single-shot network pruning by connection sensitivity (Lee, Ajanthan & Torr, ICLR 2019).

At initialization, with every connection active:

    1. g = ∂L/∂w on ``batches`` training batches (the mean loss over them), or, with
       ``score_samples_per_class`` > 0, on ⌈n·classes/batch⌉ separate score batches
       (:mod:`sparsebench.score_batches`; the GSE authors' protocol: n = 10);
    2. s = |g ⊙ w|, the connection sensitivity (Eq. 6; its normalization does not change ranks);
    3. keep the top-k of s over all prunable layers at once, k = the run's target number of
       active connections; the layers' shares follow from the scores, not from a distribution;
    4. train the resulting topology unchanged (static).

The scoring forward passes run in training mode; the model's buffers (e.g. batch-norm running
statistics) are restored afterwards so scoring leaves no trace but the masks.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import islice

import torch

from sparsebench.config import positive
from sparsebench.methods import Method, register
from sparsebench.score_batches import backward_on, score_samples_param
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

    def __init__(self, params, engine, **kwargs):
        super().__init__(params, engine, **kwargs)
        self.scored_examples = 0

    def init_masks(self, ctx):
        model, engine = ctx.model, self.engine
        if self.params.score_samples_per_class:   # counted by the score-batch facility
            batches = ctx.score_batches()
        else:
            batches = list(islice(ctx.train_batches(), self.params.batches))
            self.scored_examples += sum(y.numel() for _, y in batches)
        if not batches:
            raise RuntimeError("snip: the training set yields no batch to score on")
        backward_on(model, ctx.loss_fn, batches)
        with torch.no_grad():
            scores = {layer.name: (layer.weight.grad * layer.weight).abs() for layer in engine.layers}
        model.zero_grad(set_to_none=True)
        keep_target_globally(engine, scores)

    def init_flops(self, flops):
        """One dense forward and backward per scored example: 3·f_D each (score batches are
        counted by their facility)."""
        return 3.0 * flops.dense_forward() * self.scored_examples

    def state_dict(self):
        return {**super().state_dict(), "scored_examples": self.scored_examples}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.scored_examples = state["scored_examples"]
