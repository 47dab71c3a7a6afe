"""SNIP: single-shot network pruning by connection sensitivity (Lee, Ajanthan & Torr, ICLR 2019).

At initialization, with every connection active:

    1. g = ∂L/∂w on ``batches`` training batches (the mean loss over them);
    2. s = |g ⊙ w|, the connection sensitivity (Eq. 6; its normalization does not change ranks);
    3. keep the top-k of s over all prunable layers at once, k = the run's target number of
       active connections; the layers' shares follow from the scores, not from a distribution;
    4. train the resulting topology unchanged (static).

The scoring forward passes run in training mode; the model's buffers (e.g. batch-norm running
statistics) are restored afterwards so scoring leaves no trace but the masks.
"""
from __future__ import annotations

from dataclasses import dataclass
import torch

from sparsebench.config import positive
from sparsebench.methods import Method, register
from sparsebench.sparsity.engine import keep_target_globally
from sparsebench.sparsity.scoring import restored_state, score_batches


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
        with restored_state(model):
            model.train()
            model.zero_grad(set_to_none=True)
            batches = score_batches(ctx, self.params.batches, self.name)
            for x, y in batches:
                (ctx.loss_fn(model(x), y) / len(batches)).backward()
                self.scored_examples += y.numel()
            with torch.no_grad():
                scores = {layer.name: (layer.weight.grad * layer.weight).abs()
                          for layer in engine.layers}
            model.zero_grad(set_to_none=True)
        keep_target_globally(engine, scores)

    def init_flops(self, flops):
        """One dense forward and backward per scored example: 3·f_D each."""
        return 3.0 * flops.dense_forward() * self.scored_examples

    def state_dict(self):
        return {**super().state_dict(), "scored_examples": self.scored_examples}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.scored_examples = state["scored_examples"]
