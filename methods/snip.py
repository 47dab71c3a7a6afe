"""SNIP: single-shot network pruning by connection sensitivity (Lee, Ajanthan & Torr, ICLR 2019).

At initialization, with every connection active:

    1. g = ∂L/∂w on ``batches`` training batches (the mean loss over them);
    2. s = |g ⊙ w|, the connection sensitivity (Eq. 6; its normalization does not change ranks);
    3. keep the top-k of s over all prunable layers at once, k = the run's target number of
       active connections; the layers' shares follow from the scores, not from a distribution;
    4. train the resulting topology unchanged (static).

The scoring forward passes run in training mode; the model's buffers (e.g. batch-norm running
statistics) are restored afterwards so scoring leaves no trace but the masks. In a data-parallel
run each rank scores its share of the batches and the gradients are averaged over the ranks
before the top-k, so every rank keeps the same connections as one process would.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import islice

import torch

from sparsebench import distributed
from sparsebench.config import positive
from sparsebench.methods import Method, register


@dataclass
class SnipParams:
    batches: int = positive(1, "training batches the sensitivity is computed on")


@register
class Snip(Method):
    name = "snip"
    Params = SnipParams
    # Selection is global, so the distribution only fixes the total budget (the same for all).
    default_distribution = "uniform"

    def __init__(self, params, engine, **kwargs):
        super().__init__(params, engine, **kwargs)
        self.scored_examples = 0

    def init_masks(self, ctx):
        model, engine = ctx.model, self.engine
        buffers = {name: b.clone() for name, b in model.named_buffers()}
        model.train()
        model.zero_grad(set_to_none=True)
        batches = list(islice(ctx.train_batches(), self.params.batches))
        if not batches:
            raise RuntimeError("snip: the training set yields no batch to score on")
        for x, y in batches:
            (ctx.loss_fn(model(x), y) / len(batches)).backward()
            self.scored_examples += y.numel() * distributed.current().size
        with torch.no_grad():
            scores = {layer.name: (distributed.all_reduce_mean(layer.weight.grad) * layer.weight).abs()
                      for layer in engine.layers}
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        total = sum(layer.target_active for layer in engine.layers)
        engine.keep_largest(scores, total)
        engine.adopt_current_counts()

    def init_flops(self, flops):
        """One dense forward and backward per scored example: 3·f_D each."""
        return 3.0 * flops.dense_forward() * self.scored_examples

    def state_dict(self):
        return {**super().state_dict(), "scored_examples": self.scored_examples}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.scored_examples = state["scored_examples"]
