"""The sparsity engine: which weights are prunable, their targets, and the shared moves.

Every method works through this object; none touches optimizer state itself. The engine holds
a list of :class:`~.protocol.PrunableLayer` (``layers``, in definition order) and speaks only
that protocol, so one engine serves both ``sparsity.engine`` settings:

* ``masked``: every prunable layer a :class:`~.masked_layer.MaskedLayer` (dense weight, mask);
* ``sparse``: every prunable ``nn.Linear`` and every ``nn.Conv2d`` with groups = 1 and zero
  padding swapped (in place) for an always-sparse module held by a
  :class:`~.sparse_layer.SparseLayer`, so time and memory grow with the active connections (the
  GSE paper's always-sparse claim); convolutions the sparse conv cannot stand for (grouped or
  depthwise, reflect padding; none in the registered models) stay masked, so every model runs.

The engine owns:

* the choice of prunable weights (every ``nn.Linear`` and ``nn.Conv2d`` weight, optionally
  sparing the first and the last layer) and their target numbers of active connections, from a
  global density and a layer-wise distribution (:mod:`.distributions`), computed once here;
* the per-step invariant (``mask_gradients`` before the optimizer step, ``apply_masks`` after a
  change of the masks), the attached optimizer whose state follows every topology change, and
  ``mask_version`` (bumped on every change; caches key on it);
* the selections over several layers: global top-k and bottom-k (``global_largest``,
  ``global_smallest``), magnitude-style pruning to a count over one layer or several
  (``keep_largest``), the counts becoming targets (``adopt_current_counts``);
* ``prune``/``grow``/``set_active``/``set_masks``/``random_masks`` (a topology change goes
  through the engine, which passes the optimizer and bumps the version) and ``state_dict``.

Read-only questions (``active_indices``, ``magnitudes``, ``smallest_active``,
``random_inactive``, ...) are asked of a layer itself (see :mod:`.protocol`).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .distributions import active_counts, layer_densities
from .masked_layer import MaskedLayer
from .protocol import PrunableLayer
from .selection import top_k
from .sparse_layer import materialize, supports, swap_in

PRUNABLE_TYPES = (nn.Linear, nn.Conv2d)
ENGINES = ("masked", "sparse")
# Seed of the placeholder topology a sparse layer starts from (replaced by ``init_masks``).
PLACEHOLDER_SEED = 0


def prunable_modules(model: nn.Module, dense_first_layer: bool = False,
                     dense_last_layer: bool = False) -> list[tuple[str, nn.Module]]:
    """Linear and conv layers in definition order; models create them in forward order."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]
    if dense_last_layer and found:
        found = found[:-1]
    if dense_first_layer and found:
        found = found[1:]
    return found


def keep_target_globally(engine: "SparsityEngine", scores: Mapping[str, torch.Tensor]) -> None:
    """One-shot global pruning (SNIP, GraSP, SynFlow): keep the run's target number of
    connections with the largest score over all layers; the layers' shares become their
    targets."""
    engine.keep_largest(scores, sum(layer.target_active for layer in engine.layers))
    engine.adopt_current_counts()


class SparsityEngine:
    def __init__(self, layers: list[PrunableLayer]):
        self.layers = layers
        self.by_name = {layer.name: layer for layer in layers}
        self.optimizer: torch.optim.Optimizer | None = None
        self.mask_version = 0  # bumped on every topology change (caches key on it)
        self._changed()

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def for_model(cls, model: nn.Module, density: float, distribution: str, *,
                  engine: str = "masked", dense_first_layer: bool = False,
                  dense_last_layer: bool = False,
                  device: torch.device | str | None = None) -> "SparsityEngine":
        """All connections active (``masked``), or a placeholder topology at each layer's
        target (``sparse``: the model's layers are swapped in place); targets from ``density``
        spread by ``distribution``. ``device``: where a model built on the ``meta`` device is
        materialized (default: cpu; the sparse engine only)."""
        if engine not in ENGINES:
            raise ValueError(f"sparsity.engine must be 'masked' or 'sparse', got {engine!r}")
        modules = prunable_modules(model, dense_first_layer, dense_last_layer)
        if not modules:
            raise ValueError("the model has no prunable (Linear or Conv2d) layers")
        shapes = {name: tuple(m.weight.shape) for name, m in modules}
        targets = active_counts(shapes, layer_densities(shapes, density, distribution),
                                total_density=density)
        if engine == "masked":
            return cls([MaskedLayer.wrap(name, m, targets[name]) for name, m in modules])
        on_meta = any(p.is_meta for p in model.parameters())
        device = torch.device(device or "cpu") if on_meta else next(model.parameters()).device
        placeholder = torch.Generator().manual_seed(PLACEHOLDER_SEED)
        layers = [swap_in(model, name, m, targets[name], placeholder, device) if supports(m)
                  else MaskedLayer.wrap(name, m, targets[name], device=device)
                  for name, m in modules]
        if on_meta:
            materialize(model, device)
        return cls(layers)

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer whose state follows every topology change (required by always-sparse
        layers, whose values Parameter is replaced on every change)."""
        self.optimizer = optimizer

    # ---- per-step invariants -----------------------------------------------------------------
    def _changed(self) -> None:
        self.mask_version += 1
        # Read from the targets, not the masks (counting a mask syncs a GPU, and Top-KAST changes
        # its masks before every step): a layer whose target is all its connections is dense,
        # as every method keeps a layer's count at its target outside an update.
        self.fully_dense = all(layer.target_active == layer.numel for layer in self.layers)

    def mask_gradients(self) -> None:
        """Zero the gradients of inactive (not trainable) weights, one fused multiply."""
        if self.fully_dense:
            return
        pairs = [p for p in (layer.gradient_mask() for layer in self.layers) if p is not None]
        if pairs:
            grads, masks = zip(*pairs)
            torch._foreach_mul_(list(grads), list(masks))

    @torch.no_grad()
    def apply_masks(self, keep_optimizer_state: bool = False) -> None:
        """Zero inactive weights and their optimizer state (after any change of the masks);
        the initial topology is fixed from here on. ``keep_optimizer_state``: the weights only
        (a method whose optimizer keeps momentum outside its trained set, Top-KAST as the GSE
        authors run it)."""
        for layer in self.layers:
            layer.apply_mask(None if keep_optimizer_state else self.optimizer)

    # ---- reporting ---------------------------------------------------------------------------
    def layer_densities(self) -> dict[str, float]:
        return {layer.name: layer.density() for layer in self.layers}

    def global_density(self) -> float:
        return sum(layer.n_active() for layer in self.layers) / self.num_prunable()

    def target_density(self) -> float:
        return sum(layer.target_active for layer in self.layers) / self.num_prunable()

    def num_prunable(self) -> int:
        return sum(layer.numel for layer in self.layers)

    # ---- selections over layers ----------------------------------------------------------------
    @staticmethod
    def top_mask(score: torch.Tensor, k: int) -> torch.Tensor:
        """A bool tensor shaped like ``score``, True at exactly its ``k`` largest entries."""
        flat = score.detach().flatten()
        if k >= flat.numel():
            return torch.ones_like(score, dtype=torch.bool)
        if k <= 0:
            return torch.zeros_like(score, dtype=torch.bool)
        # torch.topk's set (the k largest, or its own choice among ties at the k-th value)
        keep = torch.zeros_like(flat, dtype=torch.bool)
        keep[top_k(flat, k)] = True
        return keep.view(score.shape)

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
        the layers in ``scores`` (each layer's kind of score, see :mod:`.protocol`), keep the
        ``keep`` with the largest score and prune every other one. With several layers the
        selection is one global top-k, so layers end with whatever share of ``keep`` their
        scores earn (SNIP, global magnitude pruning); with one layer it is per-layer pruning.
        """
        candidates = {n: self.by_name[n].drop_candidates(s) for n, s in scores.items()}
        n_active = sum(self.by_name[n].n_active() for n in scores)
        drop = self.global_smallest({n: c.scores for n, c in candidates.items()},
                                    max(0, n_active - keep))
        for n, pos in drop.items():
            if pos.numel():
                self.prune(self.by_name[n], candidates[n].at(pos))

    def adopt_current_counts(self) -> None:
        """Make each layer's active count its new target.

        Global-scope methods (SNIP, global magnitude pruning, GSE with scope global) move budget
        between layers; the run's total target must be unchanged, and is checked.
        """
        counts = {layer.name: layer.n_active() for layer in self.layers}
        total, target = sum(counts.values()), sum(layer.target_active for layer in self.layers)
        if total != target:
            raise RuntimeError(f"active connections {total} differ from the run's target {target}")
        for layer in self.layers:
            layer.target_active = counts[layer.name]

    # ---- topology changes --------------------------------------------------------------------
    def prune(self, layer: PrunableLayer, idx: torch.Tensor) -> None:
        """Deactivate ``idx`` (flat indices): weight and optimizer state gone."""
        layer.prune(idx, self.optimizer)
        self._changed()

    def grow(self, layer: PrunableLayer, idx: torch.Tensor,
             values: torch.Tensor | None = None) -> None:
        """Activate ``idx``; weights start at ``values`` (zero by default), optimizer state at zero."""
        layer.grow(idx, values, self.optimizer)
        self._changed()

    def set_active(self, layer: PrunableLayer, idx: torch.Tensor) -> None:
        """Replace a layer's whole active set (flat indices); active weights are the initial
        ones, optimizer state restarts at zero."""
        layer.set_active(idx, self.optimizer)
        self._changed()

    def set_mask(self, layer: PrunableLayer, mask: torch.Tensor,
                 grad_mask: torch.Tensor | None = None) -> None:
        """Replace a masked layer's mask (one-shot methods); newly inactive weights are zeroed.
        ``grad_mask`` (a superset of ``mask``) also trains those connections; the optimizer
        state of every connection outside it is zeroed."""
        self.set_masks({layer.name: mask}, None if grad_mask is None else {layer.name: grad_mask})

    def set_masks(self, masks: Mapping[str, torch.Tensor],
                  grad_masks: Mapping[str, torch.Tensor] | None = None, *,
                  keep_optimizer_state: bool = False) -> None:
        """:meth:`set_mask` for several layers at once (one pass over the optimizer state;
        none with ``keep_optimizer_state``, see :meth:`apply_masks`)."""
        for name, mask in masks.items():
            grad_mask = None if grad_masks is None else grad_masks.get(name)
            self.by_name[name].set_mask(mask, grad_mask)
        self._changed()
        self.apply_masks(keep_optimizer_state)

    @torch.no_grad()
    def random_masks(self, generator: torch.Generator) -> None:
        """Each layer keeps ``target_active`` connections chosen uniformly at random (a masked
        layer, and a sparse one of at most EXACT_DRAW_MAX_NUMEL weights built from dense
        weights, draw alike: both engines start from the same topology)."""
        for layer in self.layers:
            self.set_active(layer, layer.random_draw(generator))
        self.apply_masks()

    # ---- checkpoint --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Targets and what each layer holds beyond the model's own state (a masked layer's
        masks; a sparse layer's topology is in the model's buffers)."""
        return {"targets": {layer.name: layer.target_active for layer in self.layers},
                "layers": {layer.name: layer.state_dict() for layer in self.layers}}

    def load_state_dict(self, state: dict) -> None:
        for layer in self.layers:
            layer.target_active = int(state["targets"][layer.name])
            layer.load_state_dict(state["layers"][layer.name])
        self._changed()


def build_engine(model: nn.Module, density: float, distribution: str, *, engine: str = "masked",
                 dense_first_layer: bool = False, dense_last_layer: bool = False,
                 device: torch.device | str | None = None) -> SparsityEngine:
    """The run's engine (``sparsity.engine``: ``masked`` or ``sparse``); see
    :meth:`SparsityEngine.for_model`."""
    return SparsityEngine.for_model(model, density, distribution, engine=engine,
                                    dense_first_layer=dense_first_layer,
                                    dense_last_layer=dense_last_layer, device=device)


def _global_topk(scores: Mapping[str, torch.Tensor], k: int, *, largest: bool) -> dict[str, torch.Tensor]:
    """One top-k over the concatenation of several score vectors, split back per vector.

    Excluded entries carry ``-inf`` (largest) or ``+inf`` (smallest) and are never returned.
    """
    names = list(scores)
    flat = torch.cat([scores[n].detach().flatten().float().cpu() for n in names]) if names \
        else torch.zeros(0)
    k = min(k, int(torch.isfinite(flat).sum()))
    top = top_k(flat, k, largest=largest)
    out, offset = {}, 0
    for n in names:
        size = scores[n].numel()
        sel = top[(top >= offset) & (top < offset + size)] - offset
        out[n] = sel.to(scores[n].device)
        offset += size
    return out
