"""Initialization of sparse weights (``sparsity.init``).

``model``: every layer keeps its model's own initialization and is then masked, so a unit's
input variance shrinks with the layer's density.

``active_fan_in``: the GSE authors' rule (Heddes et al., their ``layers.init_masked_params``):
with the weight viewed as (out, fan_in), output unit i with c_i active inputs gets its active
weights and its bias drawn from

    U(-√(3 / c_i), √(3 / c_i)),        so Var(w) · c_i = 1,

(c_i clamped to at least 1) and a unit's pre-activation keeps unit variance for unit-variance
inputs at any density. It is applied once, to the topology training starts from; connections
grown later start at zero, as in the authors' code (``grow.apply_growing`` masks the weights
before growing). Methods that choose their topology from the initial weights (SNIP, magnitude
pruning: ``Method.scores_initial_weights``) get the rule at full fan-in before they prune, as
the authors draw a dense model by the same rule and prune it.

Works on both engines through the layer protocol (``active_indices``, ``set_active_values``):
a masked layer's weight is written at its active positions (on any memory format), an
always-sparse layer's active values are replaced in place.
"""
from __future__ import annotations

import math

import torch

INITS = ("model", "active_fan_in")


def active_fan_in(layer) -> torch.Tensor:
    """c_i: active inputs of each output unit (rows of the (out, fan_in) view), int64 on the CPU."""
    rows = torch.div(layer.active_indices().cpu(), layer.fan_in, rounding_mode="floor")
    return torch.bincount(rows, minlength=layer.out_features)


@torch.no_grad()
def init_active_fan_in(engine, generator: torch.Generator) -> None:
    """Redraw every prunable layer's active weights and bias from U(±√(3 / c_i))."""
    for layer in engine.layers:
        idx = layer.active_indices()
        bound = math.sqrt(3.0) / active_fan_in(layer).clamp_min(1).double().sqrt()
        rows = torch.div(idx.cpu(), layer.fan_in, rounding_mode="floor")
        values = (torch.rand(idx.numel(), generator=generator, dtype=torch.float64) * 2 - 1) * bound[rows]
        layer.set_active_values(values)
        bias = getattr(layer.module, "bias", None)
        if bias is not None:
            draw = torch.rand(layer.out_features, generator=generator, dtype=torch.float64) * 2 - 1
            bias.copy_((draw * bound).to(bias.device, bias.dtype))


def init_generator(seed: int) -> torch.Generator:
    """The rule's own stream: independent of the data order, the model init and the method."""
    return torch.Generator().manual_seed(seed * 1_000_003 + 29)


def apply_init(kind: str, engine, seed: int) -> None:
    """Apply ``sparsity.init`` (``model``: nothing to do)."""
    if kind not in INITS:
        raise ValueError(f"sparsity.init must be one of {INITS}, got {kind!r}")
    if kind == "active_fan_in":
        init_active_fan_in(engine, init_generator(seed))
