"""SynFlow: Iterative Synaptic Flow Pruning (Tanaka, Kunin, Yamins & Ganguli, NeurIPS 2020),
data-free pruning at initialization (their Algorithm 1).

For k = 1 .. ``iterations`` (default 100):

    1. make every parameter and buffer positive, θ ← |θ| (the signs are restored afterwards),
       batch norm in eval mode, in float64;
    2. R = 1ᵀ (Π_l |W_l|) 1: the sum of the outputs for an all-ones input of one example,
       i.e. the sum over every input-output path of the product of its weights;
    3. the synaptic saliency S = |θ ⊙ ∂R/∂θ| = θ ⊙ ∂R/∂θ, the summed flow of the paths
       through each connection (R is divided by its value before the backward pass, as the
       GSE authors do, which keeps the numbers finite and does not change ranks);
    4. keep the round(N·d^(k/iterations)) connections with the largest S over all prunable
       layers at once (the exponential schedule density_k = d^(k/iterations), globally).

Pruned weights are zero in the next iteration's forward pass, so every iteration re-scores on
the pruned network; that is what avoids layer collapse (their Theorem 2). Then the topology is
trained unchanged (static). Scoring runs on a positive float64 copy of the model, so the
model itself keeps its parameters and buffers.

Attention models: with positive weights and an all-ones input, ReLU is the identity, which
makes R the path sum. ``nn.LayerNorm`` and ``nn.GELU`` modules are replaced by identities
while scoring, as the GSE authors do (``prepare_synflow_model``): LayerNorm of a positive
constant vector is zero, which would cut every path, and GELU is not positive-homogeneous.
The softmax inside ``F.scaled_dot_product_attention`` is kept (the GSE authors swap only
``nn.Softmax`` modules, which our ViT does not have): on positive scores it weighs positive
values by positive weights that sum to one, so R stays a positive sum over paths, with the
attention paths averaged rather than summed. Positional embeddings and the class token are
made positive like every other parameter.

Cost: one forward and backward of one example per iteration at that iteration's masks,
3·f_S(masks_k), counted in ``init_flops``. Runs on the masked engine.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from sparsebench.config.schema import positive
from sparsebench.methods import Method, register, require_masked_engine

# Made identities while scoring (see the module docstring).
IDENTITY_WHILE_SCORING = (nn.LayerNorm, nn.GELU, nn.Softmax)


@dataclass
class SynflowParams:
    iterations: int = positive(100, "pruning rounds on the schedule d^(k/iterations)")


def positive_linearized_copy(model: nn.Module) -> nn.Module:
    """A float64 copy of the model in eval mode with every parameter and buffer made positive
    and LayerNorm, GELU and softmax modules replaced by identities; the model is untouched."""
    twin = copy.deepcopy(model).double().eval()
    for parent in list(twin.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, IDENTITY_WHILE_SCORING):
                setattr(parent, name, nn.Identity())
    with torch.no_grad():
        for t in twin.state_dict().values():
            t.abs_()
    return twin


def synaptic_saliency(model: nn.Module, weights: dict[str, torch.Tensor],
                      in_shape) -> dict[str, torch.Tensor]:
    """S = |θ ⊙ ∂R/∂θ| for the named ``weights`` of a positive, float64 ``model``."""
    model.zero_grad(set_to_none=True)
    first = next(iter(weights.values()))
    out = model(torch.ones((1, *in_shape), dtype=torch.float64, device=first.device))
    total = out.sum()
    (total / total.detach()).backward()
    return {name: (w.grad * w).detach().abs() for name, w in weights.items()}


@register
class Synflow(Method):
    name = "synflow"
    Params = SynflowParams
    default_distribution = "uniform"
    # It scores the initialization it then trains: ``sparsity.init: active_fan_in`` draws the
    # dense model at full fan-in first and the survivors keep those values (the GSE authors').
    scores_initial_weights = True

    def __init__(self, params, engine, **kwargs):
        super().__init__(params, engine, **kwargs)
        self.scored_densities: list[dict[str, float]] = []

    @classmethod
    def validate(cls, params, cfg):
        require_masked_engine(cfg, cls.name)

    def init_masks(self, ctx):
        engine = self.engine
        in_shape = next(iter(ctx.train_batches()))[0].shape[1:]  # the input's shape, no data
        twin = positive_linearized_copy(ctx.model)
        modules = dict(twin.named_modules())
        weights = {layer.name: modules[layer.name].weight for layer in engine.layers}
        total, target = engine.num_prunable(), sum(layer.target_active for layer in engine.layers)
        iterations = self.params.iterations
        for k in range(1, iterations + 1):
            with torch.no_grad():  # pruned connections carry no flow in the next iteration
                for layer in engine.layers:
                    weights[layer.name].mul_(layer.mask)
            self.scored_densities.append(engine.layer_densities())
            scores = synaptic_saliency(twin, weights, in_shape)
            keep = target if k == iterations else max(
                target, round(total * (target / total) ** (k / iterations)))
            engine.keep_largest(scores, keep)
        engine.adopt_current_counts()

    def init_flops(self, flops):
        """3·f_S of one example at each iteration's masks."""
        return sum(3.0 * flops.forward_at(d) for d in self.scored_densities)
