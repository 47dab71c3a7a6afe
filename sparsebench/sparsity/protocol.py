"""What a prunable layer is to the engine and the methods: the :class:`PrunableLayer` protocol.

Two implementations: :class:`~.masked_layer.MaskedLayer` (a dense weight and a boolean mask,
``sparsity.engine: masked``) and :class:`~.sparse_layer.SparseLayer` (only the active
connections stored, ``sparsity.engine: sparse``). The engine (:mod:`.engine`) and every method
speak this protocol only, so code written once runs on either kind of layer.

Positions are **flat indices** into the weight viewed as (out_features, fan_in), in the logical
(row-major) order of its shape whatever the tensor's memory format: index ``i·fan_in + j`` is
output unit i, input j (j = c·kh·kw + u·kw + v for a conv). :func:`take` and :func:`put` read and
write a tensor at flat positions in that order (a channels-last tensor has no ``view(-1)``).

Scores: a method hands a layer a score for its connections. For a masked layer a score is
weight-shaped; for a sparse layer it has one entry per active connection, aligned with
``active_indices()`` (a score for every inactive connection would be dense). The layer turns a
score into a :class:`Candidates` list, so global selections over several layers (one top-k)
never need to know which kind each layer is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn


def take(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``t`` at flat positions ``idx`` (logical order, any memory format)."""
    return torch.take(t, idx)


def put(t: torch.Tensor, idx: torch.Tensor, value: torch.Tensor | float | bool) -> None:
    """Write ``value`` (a scalar or one entry per index) at flat positions ``idx`` of ``t``
    in place (logical order, any memory format; indices distinct)."""
    if not torch.is_tensor(value):
        value = torch.full(idx.shape, value, dtype=t.dtype, device=t.device)
    t.put_(idx, value.to(t.device, t.dtype))


@dataclass
class Candidates:
    """Scores over a list of a layer's connections, for one selection across layers.

    ``scores`` is 1-D; an excluded entry carries ``+inf`` (for a smallest-k) or ``-inf`` (for a
    largest-k). ``indices``: the flat index of each entry, or None when entry i is flat index i
    (a whole-layer score)."""

    scores: torch.Tensor
    indices: torch.Tensor | None = None

    def at(self, positions: torch.Tensor) -> torch.Tensor:
        """Flat indices of the selected ``positions`` of :attr:`scores`."""
        return positions if self.indices is None else self.indices[positions.to(self.indices.device)]


@runtime_checkable
class PrunableLayer(Protocol):
    """One prunable weight (linear or conv) and its active connections.

    Implementations subclass this protocol, which gives them the density arithmetic below.
    Methods that change the topology take the attached optimizer (or None) so that the state
    of the connections they touch follows (reset to zero, dropped, or remapped)."""

    name: str
    module: nn.Module
    target_active: int       # connections this layer should hold (the engine's budget)

    # ---- counts ------------------------------------------------------------------------------
    @property
    def numel(self) -> int:
        """Size of the dense weight."""
        ...

    @property
    def out_features(self) -> int:
        """Rows of the weight viewed as (out, fan_in): output units or output channels."""
        ...

    @property
    def fan_in(self) -> int:
        """Columns of that view: in_features, or in_channels·kh·kw for a conv."""
        ...

    def n_active(self) -> int: ...

    @property
    def target_density(self) -> float:
        return self.target_active / self.numel

    def density(self) -> float:
        return self.n_active() / self.numel

    # ---- index-and-value accessors -------------------------------------------------------------
    def active_indices(self) -> torch.Tensor:
        """Flat indices of the active connections, ascending."""
        ...

    def inactive_indices(self) -> torch.Tensor:
        """Flat indices of the inactive connections, ascending (O(numel) by nature)."""
        ...

    def active_values(self) -> torch.Tensor:
        """The weights at :meth:`active_indices`, in the same order (detached)."""
        ...

    def magnitudes(self) -> torch.Tensor:
        """|w| as a score for :meth:`smallest_active` (weight-shaped on a masked layer, one entry
        per active connection on a sparse one)."""
        ...

    def is_active(self, idx: torch.Tensor) -> torch.Tensor:
        """One bool per flat index in ``idx``."""
        ...

    # ---- selection ------------------------------------------------------------------------------
    def drop_candidates(self, score: torch.Tensor) -> Candidates:
        """The active connections with ``score`` (others excluded with ``+inf``)."""
        ...

    def grow_candidates(self, k: int, score: torch.Tensor | None,
                        generator: torch.Generator | None,
                        also: torch.Tensor | None = None) -> Candidates:
        """The inactive connections (and ``also``: active ones being dropped in the same update)
        with ``score``, others excluded with ``-inf``, for a largest-k with at most ``k`` picks
        from this layer. Without a score: random scores such that a largest-k over several
        layers' candidates is a uniformly random k-subset of all their eligible connections."""
        ...

    def smallest_active(self, k: int, score: torch.Tensor) -> torch.Tensor:
        """Flat indices of the ``k`` active connections with the smallest ``score``."""
        ...

    def largest_inactive(self, k: int, score: torch.Tensor,
                         also: torch.Tensor | None = None) -> torch.Tensor:
        """Flat indices of the ``k`` inactive connections (or ``also``) with the largest score."""
        ...

    def random_inactive(self, k: int, generator: torch.Generator,
                        also: torch.Tensor | None = None) -> torch.Tensor:
        """``k`` distinct inactive connections (or ``also``), uniformly at random."""
        ...

    def random_draw(self, generator: torch.Generator) -> torch.Tensor:
        """``target_active`` distinct flat indices, uniformly at random (the initial topology)."""
        ...

    # ---- topology changes -----------------------------------------------------------------------
    def prune(self, idx: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> None:
        """Deactivate ``idx`` (active): weights and optimizer state gone (zero)."""
        ...

    def grow(self, idx: torch.Tensor, values: torch.Tensor | None,
             optimizer: torch.optim.Optimizer | None) -> None:
        """Activate ``idx`` (inactive, distinct): weights start at ``values`` (zero by default),
        optimizer state at zero."""
        ...

    def set_active(self, idx: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> None:
        """Replace the whole active set; active weights are the layer's current (initial) ones,
        inactive ones zero."""
        ...

    def set_active_values(self, values: torch.Tensor) -> None:
        """Overwrite the active weights, given in :meth:`active_indices` order (no topology
        change)."""
        ...

    def set_mask(self, mask: torch.Tensor, grad_mask: torch.Tensor | None) -> None:
        """Replace the mask with a weight-shaped one (one-shot methods on the masked engine;
        the engine applies it). A sparse layer refuses: give indices to :meth:`set_active`."""
        ...

    # ---- per-step invariants and checkpoints ----------------------------------------------------
    def gradient_mask(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(gradient, float mask) to multiply before the optimizer step, or None when there is
        nothing to mask (a sparse layer's gradient exists only at active positions)."""
        ...

    def apply_mask(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Zero inactive weights and their optimizer state (``optimizer`` None: the weights
        only); the initial topology is fixed."""
        ...

    def state_dict(self) -> dict:
        """What the model's own state dict does not hold of the topology."""
        ...

    def load_state_dict(self, state: dict) -> None: ...
