"""Sparsity: layer-wise distributions, the prunable-layer protocol and its two implementations,
and the engine that holds them (see :mod:`.engine`).

``distributions`` and ``init`` set each layer's density and initial weights; ``protocol`` is
the surface every prunable layer answers (``masked_layer``: a dense weight and a mask;
``sparse_layer``, ``sparse_linear``, ``sparse_conv``: the active connections only, with the C
kernels of ``native``); ``engine`` holds the layers and the moves that change the topology;
``dst`` the update schedules; ``sampling`` and ``samplers`` GSE's candidate draws.

May import config and distributed; methods, training and everything above import it.
"""
from .distributions import DISTRIBUTIONS, active_counts, layer_densities
from .engine import SparsityEngine, build_engine, prunable_modules
from .masked_layer import MaskedLayer
from .protocol import PrunableLayer
from .sparse_layer import SparseLayer

__all__ = ["DISTRIBUTIONS", "MaskedLayer", "PrunableLayer", "SparseLayer", "SparsityEngine",
           "active_counts", "build_engine", "layer_densities", "prunable_modules"]
