"""The masked sparsity engine: which weights are prunable, their masks, and the shared moves.

Every method works through this object; none touches masks or optimizer state itself. The
engine owns:

* the choice of prunable weights (every ``nn.Linear`` and ``nn.Conv2d`` weight, optionally
  sparing the first and the last layer) and their target number of active connections,
  from a global density and a layer-wise distribution (:mod:`.distributions`);
* the invariant that inactive weights are exactly zero and carry no optimizer state. Gradients
  of inactive weights are zeroed before each optimizer step (after the method has seen the
  dense gradient, which RigL needs); with a zero gradient, SGD (momentum, Nesterov, weight
  decay) and AdamW leave a zero weight with zero state at zero, so no per-step rewrite of the
  weights is needed. Pruning and growing reset the state of the connections they touch;
* the primitives every method composes: the k smallest active connections by a score, the k
  largest inactive ones by a score, k random inactive ones, global top-k (and bottom-k) across
  layers, magnitude-style pruning to a count over one layer or several (``keep_largest``), and
  ``prune``/``grow`` (grown weights and their optimizer state start at zero, as in RigL, SET
  and GSE);
* index-and-value accessors (``active_indices``, ``active_values``, ``is_active``,
  ``inactive_indices``, each layer's ``out_features``/``fan_in``) for methods that must never
  build a tensor of a weight's shape (GSE).

Indices are flat positions in a layer's weight (``weight.view(-1)``), so the same primitive
vocabulary serves an engine that stores only active connections.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import nn

from .distributions import active_counts, layer_densities

PRUNABLE_TYPES = (nn.Linear, nn.Conv2d)


class LayerDensity:
    """Density arithmetic of a prunable layer with ``numel``, ``target_active`` and
    ``n_active()``; shared by the masked and the always-sparse layer."""

    @property
    def target_density(self) -> float:
        return self.target_active / self.numel

    def density(self) -> float:
        return self.n_active() / self.numel


@dataclass
class MaskedLayer(LayerDensity):
    """One prunable weight, its boolean mask and its target number of active connections."""

    name: str
    module: nn.Module
    mask: torch.Tensor
    target_active: int
    # Connections that receive gradients and keep optimizer state; None: the active ones.
    # A superset of ``mask`` for methods whose backward set is larger than their forward set
    # (Top-KAST's B ⊇ A); such weights are zero in the forward pass and are trained.
    grad_mask: torch.Tensor | None = None

    @property
    def trainable(self) -> torch.Tensor:
        return self.mask if self.grad_mask is None else self.grad_mask

    @property
    def weight(self) -> nn.Parameter:
        return self.module.weight

    @property
    def numel(self) -> int:
        return self.mask.numel()

    @property
    def out_features(self) -> int:
        """Rows of the weight viewed as (out, fan_in): output units or output channels."""
        return self.mask.shape[0]

    @property
    def fan_in(self) -> int:
        """Columns of that view: in_features, or in_channels·kh·kw for a conv, so flat index
        ``i·fan_in + j`` is (output unit i, input unit j) with j = c·kh·kw + u·kw + v."""
        return self.numel // self.out_features

    def n_active(self) -> int:
        return int(self.mask.sum())


def prunable_modules(model: nn.Module, dense_first_layer: bool = False,
                     dense_last_layer: bool = False) -> list[tuple[str, nn.Module]]:
    """Linear and conv layers in definition order; models create them in forward order."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]
    if dense_last_layer and found:
        found = found[:-1]
    if dense_first_layer and found:
        found = found[1:]
    return found


def adopt_counts(layers) -> None:
    """Make each layer's active count its target; the layers' total target must not change.
    Shared by the masked and the always-sparse engine."""
    counts = {layer.name: layer.n_active() for layer in layers}
    total, target = sum(counts.values()), sum(layer.target_active for layer in layers)
    if total != target:
        raise RuntimeError(f"active connections {total} differ from the run's target {target}")
    for layer in layers:
        layer.target_active = counts[layer.name]


def keep_target_globally(engine, scores: Mapping[str, torch.Tensor]) -> None:
    """One-shot global pruning (SNIP, GraSP, SynFlow), on either engine: keep the run's
    target number of connections with the largest score over all layers; the layers' shares
    become their targets."""
    engine.keep_largest(scores, sum(layer.target_active for layer in engine.layers))
    engine.adopt_current_counts()


class SparsityEngine:
    def __init__(self, layers: list[MaskedLayer]):
        self.layers = layers
        self.by_name = {layer.name: layer for layer in layers}
        self.optimizer: torch.optim.Optimizer | None = None
        self.mask_version = 0  # bumped on every topology change (caches key on it)
        self._masks_changed()

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def for_model(cls, model: nn.Module, density: float, distribution: str, *,
                  dense_first_layer: bool = False, dense_last_layer: bool = False) -> "SparsityEngine":
        """Masks all active; targets from ``density`` spread by ``distribution``."""
        modules = prunable_modules(model, dense_first_layer, dense_last_layer)
        if not modules:
            raise ValueError("the model has no prunable (Linear or Conv2d) layers")
        shapes = {name: tuple(m.weight.shape) for name, m in modules}
        densities = layer_densities(shapes, density, distribution)
        counts = active_counts(shapes, densities, total_density=density)
        layers = [MaskedLayer(name, m, torch.ones_like(m.weight, dtype=torch.bool), counts[name])
                  for name, m in modules]
        return cls(layers)

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    # ---- per-step invariants -----------------------------------------------------------------
    def _masks_changed(self) -> None:
        self.mask_version += 1
        # Read from the targets, not the masks (counting a mask syncs a GPU, and Top-KAST changes
        # its masks before every step): a layer whose target is all its connections is dense,
        # as every method keeps a layer's count at its target outside an update.
        self.fully_dense = all(layer.target_active == layer.numel for layer in self.layers)
        self._float_masks = [layer.mask.to(layer.weight.dtype) for layer in self.layers]
        self._float_grad_masks = [m if layer.grad_mask is None else layer.grad_mask.to(m.dtype)
                                  for layer, m in zip(self.layers, self._float_masks)]

    def mask_gradients(self) -> None:
        """Zero the gradients of inactive (not trainable) weights, one fused multiply."""
        if self.fully_dense:
            return
        grads, masks = [], []
        for layer, mask in zip(self.layers, self._float_grad_masks):
            if layer.weight.grad is not None:
                grads.append(layer.weight.grad)
                masks.append(mask)
        if grads:
            torch._foreach_mul_(grads, masks)

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero inactive weights and their optimizer state (after any change of the masks)."""
        torch._foreach_mul_([layer.weight for layer in self.layers], self._float_masks)
        for layer, mask in zip(self.layers, self._float_grad_masks):
            for state in self._state_tensors(layer):
                state.mul_(mask)

    def _state_tensors(self, layer: MaskedLayer) -> Iterable[torch.Tensor]:
        """Optimizer state shaped like the weight: momentum, Adam's moments."""
        if self.optimizer is None:
            return ()
        state = self.optimizer.state.get(layer.weight, {})
        return [v for v in state.values()
                if torch.is_tensor(v) and v.shape == layer.weight.shape]

    # ---- reporting ---------------------------------------------------------------------------
    def layer_densities(self) -> dict[str, float]:
        return {layer.name: layer.density() for layer in self.layers}

    def global_density(self) -> float:
        total = sum(layer.numel for layer in self.layers)
        return sum(layer.n_active() for layer in self.layers) / total

    def target_density(self) -> float:
        total = sum(layer.numel for layer in self.layers)
        return sum(layer.target_active for layer in self.layers) / total

    def num_prunable(self) -> int:
        return sum(layer.numel for layer in self.layers)

    # ---- selection primitives (flat indices) -------------------------------------------------
    @staticmethod
    def smallest_active(layer: MaskedLayer, k: int, score: torch.Tensor) -> torch.Tensor:
        """Flat indices of the ``k`` active connections with the smallest ``score``."""
        k = min(k, layer.n_active())
        masked = score.detach().flatten().float().masked_fill(~layer.mask.flatten(), float("inf"))
        return torch.topk(masked, k, largest=False, sorted=False).indices

    @staticmethod
    def largest_inactive(layer: MaskedLayer, k: int, score: torch.Tensor,
                         also: torch.Tensor | None = None) -> torch.Tensor:
        """Flat indices of the ``k`` inactive connections with the largest ``score``.

        ``also``: active indices that count as inactive here (connections being dropped in the
        same update, which RigL may grow back).
        """
        eligible = ~layer.mask.flatten()
        if also is not None:
            eligible = eligible.clone()
            eligible[also] = True
        k = min(k, int(eligible.sum()))
        masked = score.detach().flatten().float().masked_fill(~eligible, float("-inf"))
        return torch.topk(masked, k, largest=True, sorted=False).indices

    @staticmethod
    def random_inactive(layer: MaskedLayer, k: int, generator: torch.Generator,
                        also: torch.Tensor | None = None) -> torch.Tensor:
        """``k`` distinct inactive connections, uniformly at random (a CPU generator).

        ``also``: active indices that count as inactive here (see :meth:`largest_inactive`).
        """
        inactive = (~layer.mask.flatten()).nonzero().squeeze(1)
        if also is not None:
            inactive = torch.cat([inactive, also.to(inactive.device)])
        k = min(k, inactive.numel())
        pick = torch.randperm(inactive.numel(), generator=generator)[:k].to(inactive.device)
        return inactive[pick]

    # Index-and-value accessors: what a method needs to see of a layer without any tensor of
    # the weight's shape, so the same calls work on an engine that stores only active entries.
    @staticmethod
    def active_indices(layer: MaskedLayer) -> torch.Tensor:
        """Flat indices of the active connections, ascending."""
        return layer.mask.view(-1).nonzero().squeeze(1)

    @staticmethod
    def inactive_indices(layer: MaskedLayer) -> torch.Tensor:
        """Flat indices of the inactive connections, ascending (O(numel) by nature)."""
        return (~layer.mask.view(-1)).nonzero().squeeze(1)

    @staticmethod
    def active_values(layer: MaskedLayer) -> torch.Tensor:
        """The weights at :meth:`active_indices`, in the same order."""
        return layer.weight.detach().view(-1)[SparsityEngine.active_indices(layer)]

    @staticmethod
    def magnitudes(layer: MaskedLayer) -> torch.Tensor:
        """|w| as a score for :meth:`smallest_active` (weight-shaped here; one entry per active
        connection on the always-sparse engine, so a magnitude-pruning method runs on both)."""
        return layer.weight.detach().abs()

    @staticmethod
    def is_active(layer: MaskedLayer, idx: torch.Tensor) -> torch.Tensor:
        """One bool per flat index in ``idx``."""
        return layer.mask.view(-1)[idx]

    @staticmethod
    def top_mask(score: torch.Tensor, k: int) -> torch.Tensor:
        """A bool tensor shaped like ``score``, True at exactly its ``k`` largest entries."""
        flat = score.detach().flatten()
        if k >= flat.numel():
            return torch.ones_like(score, dtype=torch.bool)
        if k <= 0:
            return torch.zeros_like(score, dtype=torch.bool)
        # The k-th largest value is a threshold (O(n)); ties at it fall back to an exact top-k.
        keep = flat >= flat.kthvalue(flat.numel() - k + 1).values
        if int(keep.sum()) != k:
            keep = torch.zeros_like(keep)
            keep[torch.topk(flat, k, sorted=False).indices] = True
        return keep.view_as(score)

    @staticmethod
    def global_largest(scores: Mapping[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
        """The ``k`` largest entries over several layers' flat scores, split back per layer.

        Entries to exclude should carry ``-inf``; they are never returned. A score vector may
        be a whole layer (positions are flat indices) or any 1-D list of entries (positions
        index that list, e.g. a list of candidates).
        """
        return _global_topk(scores, k, largest=True)

    @staticmethod
    def global_smallest(scores: Mapping[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
        """The ``k`` smallest entries over several score vectors; ``+inf`` entries are excluded."""
        return _global_topk(scores, k, largest=False)

    def keep_largest(self, scores: Mapping[str, torch.Tensor], keep: int) -> None:
        """Magnitude-style pruning, one layer or several at once: of the active connections of
        the layers in ``scores`` (whole-layer score tensors), keep the ``keep`` with the largest
        score and prune every other one. With several layers the selection is one global top-k,
        so layers end with whatever share of ``keep`` their scores earn (SNIP, global magnitude
        pruning); with one layer it is per-layer pruning.
        """
        candidates = {n: scores[n].detach().flatten().float().masked_fill(
                      ~self.by_name[n].mask.flatten(), float("inf")) for n in scores}
        n_active = sum(self.by_name[n].n_active() for n in scores)
        drop = self.global_smallest(candidates, max(0, n_active - keep))
        for n, idx in drop.items():
            if idx.numel():
                self.prune(self.by_name[n], idx)

    def adopt_current_counts(self) -> None:
        """Make each layer's active count its new target.

        Global-scope methods (SNIP, global magnitude pruning, GSE with scope global) move budget
        between layers; the run's total target must be unchanged, and is checked.
        """
        adopt_counts(self.layers)

    # ---- topology changes --------------------------------------------------------------------
    @torch.no_grad()
    def prune(self, layer: MaskedLayer, idx: torch.Tensor) -> None:
        """Deactivate ``idx``: weight and optimizer state set to zero."""
        layer.mask.view(-1)[idx] = False
        layer.weight.view(-1)[idx] = 0.0
        for state in self._state_tensors(layer):
            state.view(-1)[idx] = 0.0
        self._masks_changed()

    @torch.no_grad()
    def grow(self, layer: MaskedLayer, idx: torch.Tensor, values: torch.Tensor | None = None) -> None:
        """Activate ``idx``; weights start at ``values`` (zero by default), optimizer state at zero."""
        layer.mask.view(-1)[idx] = True
        layer.weight.view(-1)[idx] = 0.0 if values is None else values.to(layer.weight.dtype)
        for state in self._state_tensors(layer):
            state.view(-1)[idx] = 0.0
        self._masks_changed()

    @torch.no_grad()
    def set_mask(self, layer: MaskedLayer, mask: torch.Tensor,
                 grad_mask: torch.Tensor | None = None) -> None:
        """Replace a layer's mask (one-shot methods); newly inactive weights are zeroed.
        ``grad_mask`` (a superset of ``mask``) also trains those connections; the optimizer
        state of every connection outside it is zeroed."""
        self.set_masks({layer.name: mask}, None if grad_mask is None else {layer.name: grad_mask})

    @torch.no_grad()
    def set_masks(self, masks: Mapping[str, torch.Tensor],
                  grad_masks: Mapping[str, torch.Tensor] | None = None) -> None:
        """:meth:`set_mask` for several layers at once (one pass over the optimizer state)."""
        for name, mask in masks.items():
            layer = self.by_name[name]
            layer.mask.copy_(mask.to(torch.bool).view_as(layer.mask))
            grad_mask = None if grad_masks is None else grad_masks.get(name)
            layer.grad_mask = None if grad_mask is None else grad_mask.to(torch.bool).view_as(layer.mask)
        self._masks_changed()
        self.apply_masks()

    @torch.no_grad()
    def random_masks(self, generator: torch.Generator) -> None:
        """Each layer keeps ``target_active`` connections chosen uniformly at random."""
        for layer in self.layers:
            keep = torch.randperm(layer.numel, generator=generator)[: layer.target_active]
            mask = torch.zeros(layer.numel, dtype=torch.bool)
            mask[keep] = True
            self.set_mask(layer, mask.to(layer.mask.device))

    # ---- checkpoint --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"masks": {layer.name: layer.mask.clone() for layer in self.layers},
                "targets": {layer.name: layer.target_active for layer in self.layers},
                "grad_masks": {layer.name: layer.grad_mask.clone() for layer in self.layers
                               if layer.grad_mask is not None}}

    def load_state_dict(self, state: dict) -> None:
        grad_masks = state.get("grad_masks", {})
        for layer in self.layers:
            layer.mask.copy_(state["masks"][layer.name])
            layer.target_active = int(state["targets"][layer.name])
            layer.grad_mask = grad_masks[layer.name].clone() if layer.name in grad_masks else None
        self._masks_changed()


def _global_topk(scores: Mapping[str, torch.Tensor], k: int, *, largest: bool) -> dict[str, torch.Tensor]:
    """One top-k over the concatenation of several score vectors, split back per vector.

    Excluded entries carry ``-inf`` (largest) or ``+inf`` (smallest) and are never returned.
    """
    names = list(scores)
    flat = torch.cat([scores[n].detach().flatten().float().cpu() for n in names]) if names \
        else torch.zeros(0)
    k = min(k, int(torch.isfinite(flat).sum()))
    top = torch.topk(flat, k, largest=largest, sorted=False).indices
    out, offset = {}, 0
    for n in names:
        size = scores[n].numel()
        sel = top[(top >= offset) & (top < offset + size)] - offset
        out[n] = sel.to(scores[n].device)
        offset += size
    return out
