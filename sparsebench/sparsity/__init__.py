"""Sparsity: layer-wise distributions and the engine that holds masks and the prune/grow primitives."""
from .distributions import DISTRIBUTIONS, active_counts, layer_densities
from .engine import MaskedLayer, SparsityEngine, prunable_modules

__all__ = ["DISTRIBUTIONS", "MaskedLayer", "SparsityEngine", "active_counts", "layer_densities",
           "prunable_modules"]
