"""A prunable layer that stores only its active connections (``sparsity.engine: sparse``).

:class:`SparseLayer` wraps a :class:`~.sparse_linear.SparseLinear` or
:class:`~.sparse_conv.SparseConv2d` module (sorted flat ``indices`` and their ``values``); no
tensor of the dense weight's shape is created, neither in a training step nor in a topology
update, except by :meth:`SparseLayer.inactive_indices` (O(numel) by nature). Scores are vectors
aligned with ``active_indices`` (one per active connection); a score for every inactive
connection would be dense, so :meth:`SparseLayer.largest_inactive` and a weight-shaped
``weight``/``mask`` do not exist here and say so: methods built on dense gradients or dense
weights (RigL, SNIP, magnitude pruning) need the masked engine, and say so through
``Method.engines`` (checked when a config resolves).

Optimizer state lives on the active values only: ``values`` is one Parameter per layer whose
momentum / Adam moments have its shape. On every topology change a new Parameter of the new
size replaces the old one, in the module and in the optimizer's parameter groups (autograd
pins a leaf's shape while a graph that used it is alive, so resizing in place is not possible
between steps); its state tensors and a pending gradient are remapped alongside: kept
connections keep their state, pruned ones drop it, grown ones start at zero, exactly what the
masked layer does by zeroing.

Initial topology: a layer starts from a placeholder draw at its target count, to be replaced by
the method's ``init_masks`` (``random_masks``). When the model was built with real (dense)
initial weights, the layer keeps them (``dense_init``) until its mask is applied or a
checkpoint loads, and for layers of at most ``EXACT_DRAW_MAX_NUMEL`` weights draws its topology
as the masked layer does (a ``randperm``) from the same generator; so on such models both
engines start from the same topology and weights. Larger layers draw by rejection
(:func:`sample_distinct`), in O(target) memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from .protocol import Candidates, PrunableLayer
from .sparse_conv import SparseConv2d
from .sparse_conv import supports as supports_conv
from .sparse_linear import SparseLinear, default_init_values, sparse_values

# Up to this many weights a layer's initial topology is drawn exactly as the masked layer draws
# it (a randperm of all positions: 4M int64 = 32 MiB at most); above, by rejection sampling.
EXACT_DRAW_MAX_NUMEL = 1 << 22


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
            cand = cand[~sorted_contains(exclude, cand)]
        found = torch.unique(torch.cat([found, cand]))
    if found.numel() > k:
        found = torch.sort(found[torch.randperm(found.numel(), generator=generator)[:k]]).values
    return found


def draw(numel: int, k: int, generator: torch.Generator, *, like_masked: bool) -> torch.Tensor:
    """k distinct positions, ascending: the masked layer's randperm draw where asked (and the
    layer has at most EXACT_DRAW_MAX_NUMEL weights) or where k is over half the layer (the
    permutation is then O(k) anyway), rejection sampling otherwise."""
    if (like_masked and numel <= EXACT_DRAW_MAX_NUMEL) or 2 * k > numel:
        return torch.sort(torch.randperm(numel, generator=generator)[:k]).values
    return sample_distinct(numel, k, generator)


def sorted_contains(sorted_set: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """One bool per query entry: whether it is in ``sorted_set`` (ascending). O(q log n)."""
    if sorted_set.numel() == 0:
        return torch.zeros(query.shape, dtype=torch.bool, device=query.device)
    pos = torch.searchsorted(sorted_set, query).clamp_(max=sorted_set.numel() - 1)
    return sorted_set[pos] == query


def initial_values(source: torch.Tensor | None, idx: torch.Tensor, fan_in: int,
                   device: torch.device) -> torch.Tensor:
    """The dense initial weights at ``idx`` (logical flat order), or ``nn.Linear``'s default
    rule where there are none (a model built on the meta device)."""
    if source is not None:
        return source.reshape(-1)[idx.to(source.device)].to(device)
    return default_init_values(idx.numel(), fan_in, device=device)


def top_uniform_order_statistics(n: int, k: int, generator: torch.Generator | None
                                 ) -> torch.Tensor:
    """The ``k`` largest of ``n`` iid U(0, 1) draws, in O(k): U_(n) = V_1^(1/n), and each next
    one is the previous times V_i^(1/(n-i+1)) (Rényi's representation), V_i iid U(0, 1)."""
    v = torch.rand(k, generator=generator, dtype=torch.float64)
    steps = torch.log(v) / torch.arange(n, n - k, -1, dtype=torch.float64)
    return torch.exp(torch.cumsum(steps, 0))


@dataclass(eq=False)
class SparseLayer(PrunableLayer):
    """One always-sparse layer (linear or conv): its module holds the indices and values."""

    name: str
    module: SparseLinear   # or SparseConv2d, a SparseLinear with a conv's forward
    target_active: int
    dense_init: torch.Tensor | None = None  # the dense initial weights, until the mask is fixed

    @property
    def values(self) -> nn.Parameter:
        return self.module.values

    @property
    def indices(self) -> torch.Tensor:
        return self.module.indices

    @property
    def device(self) -> torch.device:
        return self.module.values.device

    @property
    def weight(self):
        raise AttributeError(f"layer {self.name} runs always-sparse and has no dense weight; "
                             "this method needs sparsity.engine: masked")

    @property
    def mask(self):
        raise AttributeError(f"layer {self.name} runs always-sparse and has no dense mask; "
                             "this method needs sparsity.engine: masked")

    # ---- counts ------------------------------------------------------------------------------
    @property
    def numel(self) -> int:
        return self.module.numel

    @property
    def out_features(self) -> int:
        return self.module.out_features

    @property
    def fan_in(self) -> int:
        return self.module.in_features

    def n_active(self) -> int:
        return self.module.nnz

    # ---- index-and-value accessors -------------------------------------------------------------
    def active_indices(self) -> torch.Tensor:
        return self.indices

    def inactive_indices(self) -> torch.Tensor:
        keep = torch.ones(self.numel, dtype=torch.bool, device=self.device)
        keep[self.indices] = False
        return keep.nonzero().squeeze(1)

    def active_values(self) -> torch.Tensor:
        return self.values.detach()

    def magnitudes(self) -> torch.Tensor:
        return self.values.detach().abs()

    def is_active(self, idx: torch.Tensor) -> torch.Tensor:
        """Binary search in the sorted active set."""
        return sorted_contains(self.indices, idx.to(self.indices.device))

    # ---- selection ------------------------------------------------------------------------------
    def _aligned(self, score: torch.Tensor) -> torch.Tensor:
        score = score.detach().flatten()
        if score.numel() != self.n_active():
            raise ValueError(f"layer {self.name} is always-sparse: a score has one entry per "
                             f"active connection ({self.n_active()}), got {score.numel()}")
        return score.float()

    def drop_candidates(self, score: torch.Tensor) -> Candidates:
        return Candidates(self._aligned(score), self.indices)

    def grow_candidates(self, k: int, score: torch.Tensor | None,
                        generator: torch.Generator | None,
                        also: torch.Tensor | None = None) -> Candidates:
        """Without a score: ``k`` eligible connections chosen uniformly, carrying the k largest
        of as many uniform scores as there are eligible connections (drawn in O(k)), so that a
        largest-k over layers picks what iid scores on every eligible connection would."""
        if score is not None:
            raise NotImplementedError(self._dense_refusal())
        active = self._active_without(also)
        eligible = self.numel - active.numel()
        k = min(k, eligible)
        idx = self._sample_inactive(k, generator, active)
        order = torch.randperm(k, generator=generator)  # which candidate gets which score
        scores = top_uniform_order_statistics(eligible, k, generator)[order]
        return Candidates(scores.float().to(self.device), idx)

    def smallest_active(self, k: int, score: torch.Tensor) -> torch.Tensor:
        k = min(k, self.n_active())
        pos = torch.topk(self._aligned(score), k, largest=False, sorted=False).indices
        return self.indices[pos]

    def largest_inactive(self, k: int, score: torch.Tensor,
                         also: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError(self._dense_refusal())

    def _dense_refusal(self) -> str:
        return (f"layer {self.name} is always-sparse: a score for every inactive connection is "
                "dense; grow from a candidate list (global_largest over candidate scores) instead")

    def _active_without(self, also: torch.Tensor | None) -> torch.Tensor:
        active = self.indices.cpu()
        if also is not None and also.numel():
            active = active[~torch.isin(active, also.cpu())]
        return active

    def _sample_inactive(self, k: int, generator: torch.Generator, active: torch.Tensor
                         ) -> torch.Tensor:
        return sample_distinct(self.numel, k, generator, exclude=active).to(self.device)

    def random_inactive(self, k: int, generator: torch.Generator,
                        also: torch.Tensor | None = None) -> torch.Tensor:
        active = self._active_without(also)
        k = min(k, self.numel - active.numel())
        return self._sample_inactive(k, generator, active)

    def random_draw(self, generator: torch.Generator) -> torch.Tensor:
        return draw(self.numel, self.target_active, generator,
                    like_masked=self.dense_init is not None)

    # ---- topology changes -----------------------------------------------------------------------
    @torch.no_grad()
    def prune(self, idx: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> None:
        old = self.indices
        idx = idx.to(old.device, torch.long).flatten()
        # The active set is sorted: binary search finds each pruned entry, O(k log nnz).
        pos = torch.searchsorted(old, idx).clamp_(max=max(0, old.numel() - 1))
        found = old[pos] == idx if old.numel() else torch.zeros_like(idx, dtype=torch.bool)
        if not bool(found.all()):
            raise ValueError(f"prune on layer {self.name}: indices must be active")
        keep = torch.ones(old.numel(), dtype=torch.bool, device=old.device)
        keep[pos] = False
        self._rebuild(old[keep], lambda t: t[keep], optimizer)

    @torch.no_grad()
    def grow(self, idx: torch.Tensor, values: torch.Tensor | None,
             optimizer: torch.optim.Optimizer | None) -> None:
        old = self.indices
        idx = idx.to(old.device, torch.long).flatten()
        if idx.numel() == 0:
            return
        if bool(self.is_active(idx).any()) or torch.unique(idx).numel() != idx.numel():
            raise ValueError(f"grow on layer {self.name}: indices must be inactive and distinct")
        merged, order = torch.sort(torch.cat([old, idx]), stable=True)
        new_values = (torch.zeros(idx.numel(), dtype=self.values.dtype, device=old.device)
                      if values is None else values.detach().to(old.device, self.values.dtype))

        def remap(t: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
            extra = torch.zeros(idx.numel(), dtype=t.dtype, device=t.device) if fill is None else fill
            return torch.cat([t, extra])[order]
        self._rebuild(merged, remap, optimizer, values=remap(self.values.detach(), new_values))

    @torch.no_grad()
    def set_active(self, idx: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> None:
        """Values are the dense initial weights while they are kept, else ``nn.Linear``'s
        default rule; optimizer state restarts at zero."""
        indices = torch.sort(idx.to(self.device, torch.long)).values
        values = initial_values(self.dense_init, indices, self.fan_in, self.device)
        zeros = lambda t: torch.zeros(indices.numel(), dtype=t.dtype, device=t.device)  # noqa: E731
        self._rebuild(indices, zeros, optimizer, values=values)

    @torch.no_grad()
    def set_active_values(self, values: torch.Tensor) -> None:
        self.values.copy_(values.to(self.values.device, self.values.dtype))

    def set_mask(self, mask: torch.Tensor, grad_mask: torch.Tensor | None) -> None:
        raise NotImplementedError(f"layer {self.name} is always-sparse: a dense mask is not "
                                  "accepted; give its active flat indices to set_active")

    def _rebuild(self, indices: torch.Tensor, remap, optimizer: torch.optim.Optimizer | None,
                 *, values: torch.Tensor | None = None) -> None:
        """New active set. A new values Parameter replaces the old one (see
        :class:`SparseLinear` for why) in the module and in the optimizer's parameter groups;
        every optimizer state tensor shaped like the values, and a pending gradient, go through
        ``remap``, so kept connections keep their state."""
        old = self.values
        new = sparse_values(remap(old.detach()) if values is None else values)
        new.requires_grad_(old.requires_grad)
        if optimizer is not None:
            for group in optimizer.param_groups:
                group["params"] = [new if p is old else p for p in group["params"]]
            state = optimizer.state.pop(old, None)
            if state is not None:
                optimizer.state[new] = {
                    key: remap(t) if torch.is_tensor(t) and t.shape == old.shape else t
                    for key, t in state.items()}
        if old.grad is not None:
            new.grad = remap(old.grad)
        self.module.set_topology(indices, new)

    # ---- per-step invariants and checkpoints ----------------------------------------------------
    def gradient_mask(self) -> None:
        return None  # a gradient exists only at active positions

    def apply_mask(self, optimizer: torch.optim.Optimizer | None) -> None:
        self.dense_init = None  # the initial topology is fixed

    def state_dict(self) -> dict:
        return {}  # the topology travels in the module's buffers (the model's state dict)

    def load_state_dict(self, state: dict) -> None:
        self.dense_init = None


# ---- swapping a model's dense layers for sparse ones -------------------------------------------

def supports(module: nn.Module) -> bool:
    """Whether an always-sparse layer can stand for ``module``: any ``nn.Linear``, and an
    ``nn.Conv2d`` the sparse conv supports (groups = 1, zero padding)."""
    return isinstance(module, nn.Linear) or supports_conv(module)


def swap_in(model: nn.Module, name: str, module: nn.Module, target_active: int,
            placeholder: torch.Generator, device: torch.device) -> SparseLayer:
    """Replace ``model``'s submodule ``name`` (in place) by a :class:`SparseLinear` or
    :class:`SparseConv2d` at a placeholder topology of ``target_active`` connections."""
    source = None if module.weight.is_meta else module.weight.detach()
    idx = draw(module.weight.numel(), target_active, placeholder, like_masked=source is not None)
    fan_in = module.weight[0].numel()
    values = initial_values(source, idx, fan_in, device)
    bias = None if module.bias is None else _initial_bias(module, fan_in, device)
    if isinstance(module, nn.Linear):
        sparse = SparseLinear(module.in_features, module.out_features, idx.to(device), values, bias)
    else:
        sparse = SparseConv2d(**SparseConv2d.geometry_of(module), indices=idx.to(device),
                              values=values, bias=bias)
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, sparse)
    return SparseLayer(name, sparse, target_active, dense_init=source)


def _initial_bias(module: nn.Module, fan_in: int, device: torch.device) -> torch.Tensor:
    if module.bias.is_meta:  # nn.Linear's and nn.Conv2d's rule alike
        return default_init_values(module.bias.numel(), fan_in, device=device)
    return module.bias.detach().to(device)


def materialize(model: nn.Module, device: torch.device) -> None:
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
