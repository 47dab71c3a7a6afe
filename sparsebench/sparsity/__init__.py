"""Sparsity: layer-wise distributions, the prunable-layer protocol and its two implementations,
and the engine that holds them (see :mod:`.engine`)."""
from .distributions import DISTRIBUTIONS, active_counts, layer_densities
from .engine import SparsityEngine, build_engine, prunable_modules
from .masked_layer import MaskedLayer
from .protocol import PrunableLayer
from .sparse_layer import SparseLayer

__all__ = ["DISTRIBUTIONS", "MaskedLayer", "PrunableLayer", "SparseLayer", "SparsityEngine",
           "active_counts", "build_engine", "layer_densities", "prunable_modules"]
