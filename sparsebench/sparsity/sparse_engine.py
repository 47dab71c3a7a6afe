"""The always-sparse execution engine (``sparsity.engine: sparse``).

Every prunable ``nn.Linear`` of the model is replaced by a :class:`~.sparse_layers.SparseLinear`
and every prunable ``nn.Conv2d`` with groups = 1 and zero padding by a
:class:`~.sparse_conv.SparseConv2d`, each storing only its active connections; from then on no
tensor of a prunable weight's shape is created, neither in a training step nor in a topology
update, so time and memory grow with the number of active connections instead of the dense size
(the GSE paper's always-sparse claim). Convolutions the sparse conv cannot stand for (grouped or
depthwise ones, reflect padding; none in the registered models) stay masked: they are handed to
an inner masked :class:`~.engine.SparsityEngine`, so every model runs.

The public surface is the masked engine's, so the trainer and a method written against the
flat-index primitives (GSE) run unchanged on either engine:

* ``layers`` (in definition order, sparse layers and any masked conv layers mixed), each
  with ``name``, ``module``, ``numel``, ``out_features``, ``fan_in``, ``target_active``,
  ``n_active()``, ``density()``; ``by_name``; ``layer_densities``, ``global_density``,
  ``target_density``, ``num_prunable``; ``mask_version`` and ``fully_dense``;
* ``mask_gradients`` and ``apply_masks`` (only masked conv layers have anything to mask: a
  sparse layer's gradient exists only at active positions);
* ``active_indices``, ``active_values``, ``magnitudes``, ``is_active``, ``inactive_indices``,
  ``prune``, ``grow``,
  ``random_inactive``, ``smallest_active``, ``keep_largest``, ``global_largest``,
  ``global_smallest``, ``adopt_current_counts``, ``random_masks``, ``state_dict``.

Scores on a sparse layer are vectors aligned with ``active_indices`` (one per active connection),
never weight-shaped; ``largest_inactive`` (which needs a score for every inactive connection,
i.e. a dense score) and a layer's ``weight``/``mask`` do not exist for a sparse layer and say
so: methods built on dense gradients or dense weights (RigL, SNIP, magnitude pruning) need the
masked engine, and say so through ``Method.engines`` (checked when a config resolves).

Optimizer state lives on the active values only: ``values`` is one Parameter per layer whose
momentum / Adam moments have its shape. On every topology change a new Parameter of the new
size replaces the old one, in the module and in the attached optimizer's parameter groups
(autograd pins a leaf's shape while a graph that used it is alive, so resizing in place is not
possible between steps); its state tensors and a pending gradient are remapped alongside:
kept connections keep their state, pruned ones drop it, grown ones start at zero, exactly what
the masked engine does by zeroing. The optimizer must therefore be attached
(``attach_optimizer``), as the trainer does.

Initial topology: the engine starts from a placeholder draw at each layer's target count, to be
replaced by the method's ``init_masks`` (``random_masks``). When the model was built with real
(dense) initial weights, the active values are those weights, and for layers of at most
``EXACT_DRAW_MAX_NUMEL`` weights ``random_masks`` makes the masked engine's draw (a
``randperm``) from the same generator; so on such models both engines start from the same
topology and weights and a run follows the same trajectory on either (up to float summation
order). The dense initial weights are kept only until ``apply_masks`` (which the
trainer calls right after ``init_masks``) or ``load_state_dict``. Larger layers draw by
rejection (:func:`sample_distinct`), in O(target) memory, and a model built on the ``meta``
device never had dense weights at all: its sparse values follow ``nn.Linear``'s default rule
and its other parameters are materialized by their modules' ``reset_parameters``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import nn

from .distributions import active_counts, layer_densities
from .engine import LayerDensity, MaskedLayer, SparsityEngine, adopt_counts, prunable_modules
from .sparse_conv import SparseConv2d
from .sparse_conv import supports as supports_conv
from .sparse_layers import SparseLinear, default_init_values, sparse_values

# Up to this many weights a layer's initial topology is drawn exactly as the masked engine draws
# it (a randperm of all positions: 4M int64 = 32 MiB at most); above, by rejection sampling.
EXACT_DRAW_MAX_NUMEL = 1 << 22
# Seed of the placeholder topology the engine starts from (replaced by ``init_masks``).
PLACEHOLDER_SEED = 0


@dataclass
class SparseLayer(LayerDensity):
    """One always-sparse layer (linear or conv): its module holds the indices and values."""

    name: str
    module: SparseLinear   # or SparseConv2d, a SparseLinear with a conv's forward
    target_active: int

    @property
    def values(self) -> nn.Parameter:
        return self.module.values

    @property
    def numel(self) -> int:
        return self.module.numel

    @property
    def out_features(self) -> int:
        return self.module.out_features

    @property
    def fan_in(self) -> int:
        return self.module.in_features

    @property
    def device(self) -> torch.device:
        return self.module.values.device

    def n_active(self) -> int:
        return self.module.nnz

    @property
    def weight(self):
        raise AttributeError(f"layer {self.name} runs always-sparse and has no dense weight; "
                             "this method needs sparsity.engine: masked")

    @property
    def mask(self):
        raise AttributeError(f"layer {self.name} runs always-sparse and has no dense mask; "
                             "this method needs sparsity.engine: masked")


def sample_distinct(numel: int, k: int, generator: torch.Generator,
                    exclude: torch.Tensor | None = None) -> torch.Tensor:
    """``k`` distinct flat indices in [0, numel), uniformly among all k-subsets of the positions
    not in ``exclude`` (ascending, CPU int64), without any numel-sized tensor.

    Rejection: draw uniform positions with replacement, drop excluded ones and repeats, repeat
    until k remain, then keep a uniformly random k of them. Every step treats positions
    symmetrically, so the result is a uniform k-subset. Expected draws are about k·numel/free
    (free = numel - |exclude|), so callers use it where k is well below the free positions.
    """
    n_excl = 0 if exclude is None else exclude.numel()
    free = numel - n_excl
    if k > free:
        raise ValueError(f"asked for {k} distinct positions among {free} free ones")
    if k <= 0:
        return torch.zeros(0, dtype=torch.long)
    exclude = None if exclude is None else torch.sort(exclude.cpu()).values
    found = torch.zeros(0, dtype=torch.long)
    while found.numel() < k:
        need = k - found.numel()
        draw = int(need * numel / free * 1.1) + 16
        cand = torch.randint(0, numel, (draw,), generator=generator)
        if exclude is not None and exclude.numel():
            cand = cand[~_sorted_contains(exclude, cand)]
        found = torch.unique(torch.cat([found, cand]))
    if found.numel() > k:
        found = torch.sort(found[torch.randperm(found.numel(), generator=generator)[:k]]).values
    return found


def _sorted_contains(sorted_set: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """One bool per query entry: whether it is in ``sorted_set`` (ascending). O(q log n)."""
    if sorted_set.numel() == 0:
        return torch.zeros(query.shape, dtype=torch.bool, device=query.device)
    pos = torch.searchsorted(sorted_set, query).clamp_(max=sorted_set.numel() - 1)
    return sorted_set[pos] == query


class SparseExecutionEngine:
    """Always-sparse layers plus an inner masked engine for unsupported convolutions (above)."""

    def __init__(self, layers: list, masked: SparsityEngine | None):
        self.layers = layers
        self.by_name = {layer.name: layer for layer in layers}
        self.sparse_layers = [layer for layer in layers if isinstance(layer, SparseLayer)]
        self.masked = masked
        self.optimizer: torch.optim.Optimizer | None = None
        self._own_version = 0
        self._dense_init: dict[str, torch.Tensor] = {}   # until the initial topology is fixed

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def for_model(cls, model: nn.Module, density: float, distribution: str, *,
                  dense_first_layer: bool = False, dense_last_layer: bool = False,
                  device: torch.device | str | None = None) -> "SparseExecutionEngine":
        """Swap every prunable ``nn.Linear`` of ``model`` (in place) for a :class:`SparseLinear`
        and every supported ``nn.Conv2d`` for a :class:`SparseConv2d`, at its target count;
        targets as in :meth:`SparsityEngine.for_model`.

        ``device``: where a model built on the ``meta`` device is materialized (default: cpu).
        """
        modules = prunable_modules(model, dense_first_layer, dense_last_layer)
        if not modules:
            raise ValueError("the model has no prunable (Linear or Conv2d) layers")
        shapes = {name: tuple(m.weight.shape) for name, m in modules}
        densities = layer_densities(shapes, density, distribution)
        counts = active_counts(shapes, densities, total_density=density)
        on_meta = any(p.is_meta for p in model.parameters())
        device = torch.device(device or "cpu") if on_meta else next(model.parameters()).device
        placeholder = torch.Generator().manual_seed(PLACEHOLDER_SEED)
        layers, conv_layers, dense_init = [], [], {}
        for name, m in modules:
            if isinstance(m, nn.Linear) or supports_conv(m):
                source = None if m.weight.is_meta else m.weight.detach()
                idx = _draw(m.weight.numel(), counts[name], placeholder,
                            like_masked=source is not None)
                fan_in = m.weight[0].numel()
                values = _initial_values(source, idx, fan_in, device)
                bias = None if m.bias is None else _initial_bias(m, fan_in, device)
                if isinstance(m, nn.Linear):
                    sparse = SparseLinear(m.in_features, m.out_features, idx.to(device), values,
                                          bias)
                else:
                    sparse = SparseConv2d(**SparseConv2d.geometry_of(m), indices=idx.to(device),
                                          values=values, bias=bias)
                _replace_module(model, name, sparse)
                layers.append(SparseLayer(name, sparse, counts[name]))
                if source is not None:
                    dense_init[name] = source
            else:
                layer = MaskedLayer(name, m, torch.ones(m.weight.shape, dtype=torch.bool,
                                                        device=device), counts[name])
                layers.append(layer)
                conv_layers.append(layer)
        if on_meta:
            _materialize(model, device)
        engine = cls(layers, SparsityEngine(conv_layers) if conv_layers else None)
        engine._dense_init = dense_init
        return engine

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        if self.masked is not None:
            self.masked.attach_optimizer(optimizer)

    # ---- per-step invariants -----------------------------------------------------------------
    @property
    def mask_version(self) -> int:
        """Bumped on every topology change of any layer (caches key on it)."""
        return self._own_version + (self.masked.mask_version if self.masked else 0)

    @property
    def fully_dense(self) -> bool:
        return (all(layer.n_active() == layer.numel for layer in self.sparse_layers)
                and (self.masked is None or self.masked.fully_dense))

    def mask_gradients(self) -> None:
        """Only masked conv layers have inactive gradients to zero."""
        if self.masked is not None:
            self.masked.mask_gradients()

    def apply_masks(self) -> None:
        """Zero the masked conv layers' inactive weights; the initial topology is now fixed, so
        the dense initial weights kept for ``random_masks`` are dropped."""
        self._dense_init = {}
        if self.masked is not None:
            self.masked.apply_masks()

    # ---- reporting ---------------------------------------------------------------------------
    def layer_densities(self) -> dict[str, float]:
        return {layer.name: layer.density() for layer in self.layers}

    def global_density(self) -> float:
        return sum(layer.n_active() for layer in self.layers) / self.num_prunable()

    def target_density(self) -> float:
        return sum(layer.target_active for layer in self.layers) / self.num_prunable()

    def num_prunable(self) -> int:
        return sum(layer.numel for layer in self.layers)

    # ---- index-and-value accessors -----------------------------------------------------------
    @staticmethod
    def active_indices(layer) -> torch.Tensor:
        """Flat indices of the active connections, ascending."""
        if isinstance(layer, MaskedLayer):
            return SparsityEngine.active_indices(layer)
        return layer.module.indices

    @staticmethod
    def active_values(layer) -> torch.Tensor:
        """The weights at :meth:`active_indices`, in the same order."""
        if isinstance(layer, MaskedLayer):
            return SparsityEngine.active_values(layer)
        return layer.module.values.detach()

    @staticmethod
    def magnitudes(layer) -> torch.Tensor:
        """|w| as a score for :meth:`smallest_active`: one entry per active connection."""
        if isinstance(layer, MaskedLayer):
            return SparsityEngine.magnitudes(layer)
        return layer.module.values.detach().abs()

    @staticmethod
    def is_active(layer, idx: torch.Tensor) -> torch.Tensor:
        """One bool per flat index in ``idx`` (binary search in the sorted active set)."""
        if isinstance(layer, MaskedLayer):
            return SparsityEngine.is_active(layer, idx)
        return _sorted_contains(layer.module.indices, idx.to(layer.module.indices.device))

    @staticmethod
    def inactive_indices(layer) -> torch.Tensor:
        """Flat indices of the inactive connections, ascending: O(numel) by nature, as on the
        masked engine (GSE asks only for layers at least half dense)."""
        if isinstance(layer, MaskedLayer):
            return SparsityEngine.inactive_indices(layer)
        keep = torch.ones(layer.numel, dtype=torch.bool, device=layer.device)
        keep[layer.module.indices] = False
        return keep.nonzero().squeeze(1)

    # ---- selection primitives ----------------------------------------------------------------
    global_largest = staticmethod(SparsityEngine.global_largest)
    global_smallest = staticmethod(SparsityEngine.global_smallest)

    @staticmethod
    def _aligned(layer: SparseLayer, score: torch.Tensor) -> torch.Tensor:
        score = score.detach().flatten()
        if score.numel() != layer.n_active():
            raise ValueError(f"layer {layer.name} is always-sparse: a score has one entry per "
                             f"active connection ({layer.n_active()}), got {score.numel()}")
        return score.float()

    def smallest_active(self, layer, k: int, score: torch.Tensor) -> torch.Tensor:
        """Flat indices of the ``k`` active connections with the smallest ``score`` (for a
        sparse layer: one score per active connection, aligned with ``active_indices``)."""
        if isinstance(layer, MaskedLayer):
            return SparsityEngine.smallest_active(layer, k, score)
        k = min(k, layer.n_active())
        pos = torch.topk(self._aligned(layer, score), k, largest=False, sorted=False).indices
        return layer.module.indices[pos]

    def largest_inactive(self, layer, k: int, score: torch.Tensor,
                         also: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(layer, MaskedLayer):
            return SparsityEngine.largest_inactive(layer, k, score, also)
        raise NotImplementedError(f"layer {layer.name} is always-sparse: a score for every "
                                  "inactive connection is dense; grow from a candidate list "
                                  "(global_largest over candidate scores) instead")

    def random_inactive(self, layer, k: int, generator: torch.Generator,
                        also: torch.Tensor | None = None) -> torch.Tensor:
        """``k`` distinct inactive connections (or ``also``), uniformly at random."""
        if isinstance(layer, MaskedLayer):
            return SparsityEngine.random_inactive(layer, k, generator, also)
        active = layer.module.indices.cpu()
        if also is not None and also.numel():
            active = active[~torch.isin(active, also.cpu())]
        k = min(k, layer.numel - active.numel())
        return sample_distinct(layer.numel, k, generator, exclude=active).to(layer.device)

    def keep_largest(self, scores: Mapping[str, torch.Tensor], keep: int) -> None:
        """Of the active connections of the layers in ``scores``, keep the ``keep`` with the
        largest score and prune the rest (one global selection). Masked layers take
        weight-shaped scores, sparse layers one score per active connection."""
        candidates = {}
        for n, score in scores.items():
            layer = self.by_name[n]
            if isinstance(layer, MaskedLayer):
                candidates[n] = score.detach().flatten().float().masked_fill(
                    ~layer.mask.flatten(), float("inf"))
            else:
                candidates[n] = self._aligned(layer, score)
        n_active = sum(self.by_name[n].n_active() for n in scores)
        drop = self.global_smallest(candidates, max(0, n_active - keep))
        for n, pos in drop.items():
            if pos.numel():
                layer = self.by_name[n]
                self.prune(layer, pos if isinstance(layer, MaskedLayer)
                           else layer.module.indices[pos.to(layer.device)])

    def adopt_current_counts(self) -> None:
        """Make each layer's active count its new target (the run's total must not change)."""
        adopt_counts(self.layers)

    # ---- topology changes --------------------------------------------------------------------
    @torch.no_grad()
    def prune(self, layer, idx: torch.Tensor) -> None:
        """Deactivate ``idx``: their values, optimizer state and gradient are dropped."""
        if isinstance(layer, MaskedLayer):
            return self.masked.prune(layer, idx)
        old = layer.module.indices
        idx = idx.to(old.device, torch.long).flatten()
        # The active set is sorted: binary search finds each pruned entry, O(k log nnz).
        pos = torch.searchsorted(old, idx).clamp_(max=max(0, old.numel() - 1))
        found = old[pos] == idx if old.numel() else torch.zeros_like(idx, dtype=torch.bool)
        if not bool(found.all()):
            raise ValueError(f"prune on layer {layer.name}: indices must be active")
        keep = torch.ones(old.numel(), dtype=torch.bool, device=old.device)
        keep[pos] = False
        self._rebuild(layer, old[keep], lambda t: t[keep])

    @torch.no_grad()
    def grow(self, layer, idx: torch.Tensor, values: torch.Tensor | None = None) -> None:
        """Activate ``idx`` (inactive, distinct); weights start at ``values`` (zero by default),
        optimizer state at zero."""
        if isinstance(layer, MaskedLayer):
            return self.masked.grow(layer, idx, values)
        old = layer.module.indices
        idx = idx.to(old.device, torch.long).flatten()
        if idx.numel() == 0:
            return
        if bool(self.is_active(layer, idx).any()) or torch.unique(idx).numel() != idx.numel():
            raise ValueError(f"grow on layer {layer.name}: indices must be inactive and distinct")
        merged, order = torch.sort(torch.cat([old, idx]), stable=True)
        new_values = (torch.zeros(idx.numel(), dtype=layer.values.dtype, device=old.device)
                      if values is None else values.detach().to(old.device, layer.values.dtype))

        def remap(t: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
            extra = torch.zeros(idx.numel(), dtype=t.dtype, device=t.device) if fill is None else fill
            return torch.cat([t, extra])[order]
        self._rebuild(layer, merged, remap, values=remap(layer.values.detach(), new_values))

    def _rebuild(self, layer: SparseLayer, indices: torch.Tensor, remap, *,
                 values: torch.Tensor | None = None) -> None:
        """New active set. A new values Parameter replaces the old one (see
        :class:`SparseLinear` for why) in the module and in the optimizer's parameter groups;
        every optimizer state tensor shaped like the values, and a pending gradient, go through
        ``remap``, so kept connections keep their state."""
        old = layer.values
        new = sparse_values(remap(old.detach()) if values is None else values)
        new.requires_grad_(old.requires_grad)
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["params"] = [new if p is old else p for p in group["params"]]
            state = self.optimizer.state.pop(old, None)
            if state is not None:
                self.optimizer.state[new] = {
                    key: remap(t) if torch.is_tensor(t) and t.shape == old.shape else t
                    for key, t in state.items()}
        if old.grad is not None:
            new.grad = remap(old.grad)
        layer.module.set_topology(indices, new)
        self._own_version += 1

    def set_active(self, layer, indices: torch.Tensor, values: torch.Tensor | None = None) -> None:
        """Replace a sparse layer's whole active set (ascending flat indices); values default to
        the dense initial weights while they are kept, else ``nn.Linear``'s default rule.
        Optimizer state restarts at zero."""
        if isinstance(layer, MaskedLayer):
            mask = torch.zeros(layer.numel, dtype=torch.bool, device=layer.mask.device)
            mask[indices.to(mask.device)] = True
            return self.masked.set_mask(layer, mask)
        indices = torch.sort(indices.to(layer.device, torch.long)).values
        if values is None:
            values = _initial_values(self._dense_init.get(layer.name), indices, layer.fan_in,
                                     layer.device)
        zeros = lambda t: torch.zeros(indices.numel(), dtype=t.dtype, device=t.device)  # noqa: E731
        self._rebuild(layer, indices, zeros, values=values)

    def set_mask(self, layer, mask: torch.Tensor) -> None:
        """Replace a masked (conv) layer's mask; a sparse layer has no mask (``set_active``)."""
        if isinstance(layer, MaskedLayer):
            return self.masked.set_mask(layer, mask)
        raise NotImplementedError(f"layer {layer.name} is always-sparse: a dense mask is not "
                                  "accepted; give its active flat indices to set_active")

    @torch.no_grad()
    def random_masks(self, generator: torch.Generator) -> None:
        """Each layer keeps ``target_active`` connections chosen uniformly at random: the
        masked engine's draw for a layer whose dense initial weights are still kept (and at most
        EXACT_DRAW_MAX_NUMEL of them), so that both engines start alike; by rejection sampling,
        in O(target) memory, otherwise."""
        for layer in self.layers:
            if isinstance(layer, MaskedLayer):  # dense anyway: the masked engine's own draw
                keep = torch.randperm(layer.numel, generator=generator)[: layer.target_active]
            else:
                keep = _draw(layer.numel, layer.target_active, generator,
                             like_masked=layer.name in self._dense_init)
            self.set_active(layer, keep)
        self._dense_init = {}

    # ---- checkpoint --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Targets (and the conv masks); the sparse topology travels in the model's buffers."""
        return {"targets": {layer.name: layer.target_active for layer in self.layers},
                "masked": self.masked.state_dict() if self.masked else None}

    def load_state_dict(self, state: dict) -> None:
        for layer in self.layers:
            layer.target_active = int(state["targets"][layer.name])
        if self.masked is not None:
            self.masked.load_state_dict(state["masked"])
        self._dense_init = {}
        self._own_version += 1


def build_engine(model: nn.Module, density: float, distribution: str, *, engine: str = "masked",
                 dense_first_layer: bool = False, dense_last_layer: bool = False,
                 device: torch.device | str | None = None):
    """The run's engine: ``masked`` (:class:`SparsityEngine`) or ``sparse``
    (:class:`SparseExecutionEngine`, which swaps the model's linear layers in place)."""
    kwargs = dict(dense_first_layer=dense_first_layer, dense_last_layer=dense_last_layer)
    if engine == "masked":
        return SparsityEngine.for_model(model, density, distribution, **kwargs)
    if engine == "sparse":
        return SparseExecutionEngine.for_model(model, density, distribution, device=device, **kwargs)
    raise ValueError(f"sparsity.engine must be 'masked' or 'sparse', got {engine!r}")


# ---- helpers --------------------------------------------------------------------------------

def _draw(numel: int, k: int, generator: torch.Generator, *, like_masked: bool) -> torch.Tensor:
    """k distinct positions, ascending: the masked engine's randperm draw where asked (and the
    layer has at most EXACT_DRAW_MAX_NUMEL weights) or where k is over half the layer (the
    permutation is then O(k) anyway), rejection sampling otherwise."""
    if (like_masked and numel <= EXACT_DRAW_MAX_NUMEL) or 2 * k > numel:
        return torch.sort(torch.randperm(numel, generator=generator)[:k]).values
    return sample_distinct(numel, k, generator)


def _initial_values(source: torch.Tensor | None, idx: torch.Tensor, fan_in: int,
                    device: torch.device) -> torch.Tensor:
    if source is not None:
        return source.reshape(-1)[idx.to(source.device)].to(device)
    return default_init_values(idx.numel(), fan_in, device=device)


def _initial_bias(module: nn.Module, fan_in: int, device: torch.device) -> torch.Tensor:
    if module.bias.is_meta:  # nn.Linear's and nn.Conv2d's rule alike
        return default_init_values(module.bias.numel(), fan_in, device=device)
    return module.bias.detach().to(device)


def _replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _materialize(model: nn.Module, device: torch.device) -> None:
    """Give every module still on ``meta`` real storage and its own initialization."""
    for name, module in model.named_modules():
        tensors: Iterable[torch.Tensor] = [*module.parameters(recurse=False),
                                           *module.buffers(recurse=False)]
        if any(t.is_meta for t in tensors):
            module.to_empty(device=device, recurse=False)
            if not hasattr(module, "reset_parameters"):
                raise ValueError(f"module {name or type(model).__name__} was built on the meta "
                                 "device and has no reset_parameters() to initialize it")
            module.reset_parameters()
