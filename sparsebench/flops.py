"""FLOPs, counted with ``torch.utils.flop_counter`` and accounted per the RigL methodology.

``FlopCounterMode`` runs one forward pass of a single example and reports the FLOPs of every
module (matrix products, convolutions and attention; elementwise work is not counted, as in
Evci et al. 2020). The pass runs attention on the math kernel (two batched matrix products,
2·s_q·s_k·d each per head): FlopCounterMode has formulas for the CUDA attention kernels but
none for the CPU's fused kernel, which it would count as 0, so without this a ViT's FLOPs
would depend on the device. That gives the dense forward cost f_D and each prunable layer's share f_l.
The sparse forward cost at the current masks is

    f_S = (f_D - Σ_l f_l) + Σ_l density_l · f_l,

i.e. non-prunable work counted dense, prunable work scaled by its mask density. Training FLOPs
follow "Rigging the Lottery" (Evci et al. 2020, App. H): backward costs twice the forward, so a
step at fixed sparsity costs 3·f_S per example; each method adds its extra work through
``Method.step_flops`` / ``Method.init_flops`` and the trainer sums it over the actual run.
All numbers here are per training example.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from .sparsity.engine import SparsityEngine


def forward_flops_by_module(model: nn.Module, example: torch.Tensor) -> tuple[float, dict[str, float]]:
    """(total, {module name: FLOPs}) of one forward pass on ``example`` (a batch of one)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(example)
    finally:
        model.train(was_training)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    per_module = {}
    for key, ops in counts.items():
        if key.startswith(root + "."):
            per_module[key[len(root) + 1:]] = float(sum(ops.values()))
    total = float(sum(counts.get("Global", {}).values()))
    return total, per_module


class FlopModel:
    """Forward FLOPs per example of a model, dense and at the engine's current masks."""

    def __init__(self, model: nn.Module, engine: SparsityEngine, in_shape: tuple[int, ...],
                 device: torch.device | str = "cpu"):
        example = torch.zeros((1, *in_shape), device=device)
        self.dense, per_module = forward_flops_by_module(model, example)
        self.engine = engine
        self.layer = {layer.name: per_module.get(layer.name, 0.0) for layer in engine.layers}
        self.non_prunable = self.dense - sum(self.layer.values())
        self._cache: tuple[int, float] | None = None

    def dense_forward(self) -> float:
        """f_D."""
        return self.dense

    def sparse_forward(self) -> float:
        """f_S at the current masks (recomputed only when the masks change)."""
        version = self.engine.mask_version
        if self._cache is None or self._cache[0] != version:
            self._cache = (version, self.forward_at(self.engine.layer_densities()))
        return self._cache[1]

    def forward_at(self, densities: dict[str, float]) -> float:
        """The forward cost at given per-layer densities (e.g. Top-KAST's backward set)."""
        return self.non_prunable + sum(self.layer[name] * densities[name] for name in self.layer)


def measure(trainer) -> dict:
    """The FLOPs keys of result.json for a finished run."""
    fm, p = trainer.flop_model, trainer.progress
    # Relative to dense training of one round's schedule (``epochs``): a method that trains
    # several rounds (Lottery) shows what all of them cost against one ordinary dense run.
    examples = p.examples_seen * min(1.0, trainer.total_steps / max(1, p.step))
    dense_train = 3.0 * fm.dense_forward() * examples
    return {
        "train_flops": p.train_flops,
        "train_flops_rel_dense": p.train_flops / dense_train if dense_train else None,
        "inference_flops": fm.sparse_forward(),
        "inference_flops_rel_dense": fm.sparse_forward() / fm.dense_forward(),
        "dense_forward_flops": fm.dense_forward(),
    }
