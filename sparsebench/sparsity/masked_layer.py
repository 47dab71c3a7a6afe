"""A prunable layer as a dense weight and a boolean mask (``sparsity.engine: masked``).

The invariant: inactive weights are exactly zero and carry no optimizer state. Gradients of
inactive weights are zeroed before each optimizer step (after the method has seen the dense
gradient, which RigL needs); with a zero gradient, SGD (momentum, Nesterov, weight decay) and
AdamW leave a zero weight with zero state at zero, so no per-step rewrite of the weights is
needed. Pruning and growing reset the state of the connections they touch.

Masks are created like the weight (``ones_like``), so they share its memory format; every flat
position goes through :func:`~.protocol.take`/:func:`~.protocol.put` or a logical flatten, so a
channels-last model gives the same positions as a contiguous one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import nn

from .protocol import Candidates, PrunableLayer, put, take
from .selection import top_k


@dataclass(eq=False)
class MaskedLayer(PrunableLayer):
    """One prunable weight, its boolean mask and its target number of active connections."""

    name: str
    module: nn.Module
    mask: torch.Tensor
    target_active: int
    # Connections that receive gradients and keep optimizer state; None: the active ones.
    # A superset of ``mask`` for methods whose backward set is larger than their forward set
    # (Top-KAST's B ⊇ A); such weights are zero in the forward pass and are trained.
    grad_mask: torch.Tensor | None = None
    _float_mask: torch.Tensor = field(init=False, repr=False)
    _float_grad_mask: torch.Tensor = field(init=False, repr=False)
    _n_active: int | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self.mask_changed()

    @classmethod
    def wrap(cls, name: str, module: nn.Module, target_active: int,
             device: torch.device | None = None) -> "MaskedLayer":
        """All connections active (a mask like the weight, memory format included; on
        ``device`` for a weight still on the meta device)."""
        mask = torch.ones_like(module.weight, dtype=torch.bool, device=device)
        return cls(name, module, mask, target_active)

    def mask_changed(self) -> None:
        """Refresh the float masks the per-step multiplications use and forget the count of
        active connections (after any mask change)."""
        self._n_active = None
        self._float_mask = self.mask.to(self.weight.dtype)
        self._float_grad_mask = (self._float_mask if self.grad_mask is None
                                 else self.grad_mask.to(self._float_mask.dtype))

    @property
    def trainable(self) -> torch.Tensor:
        return self.mask if self.grad_mask is None else self.grad_mask

    @property
    def weight(self) -> nn.Parameter:
        return self.module.weight

    # ---- counts ------------------------------------------------------------------------------
    @property
    def numel(self) -> int:
        return self.mask.numel()

    @property
    def out_features(self) -> int:
        return self.mask.shape[0]

    @property
    def fan_in(self) -> int:
        return self.numel // self.out_features

    def n_active(self) -> int:
        # Counted once per mask change: an update asks several times, and on a GPU each count
        # is a device-to-host copy.
        if self._n_active is None:
            self._n_active = int(self.mask.sum())
        return self._n_active

    # ---- index-and-value accessors -------------------------------------------------------------
    def active_indices(self) -> torch.Tensor:
        return self.mask.reshape(-1).nonzero().squeeze(1)

    def inactive_indices(self) -> torch.Tensor:
        return (~self.mask.reshape(-1)).nonzero().squeeze(1)

    def active_values(self) -> torch.Tensor:
        return take(self.weight.detach(), self.active_indices())

    def magnitudes(self) -> torch.Tensor:
        return self.weight.detach().abs()

    def is_active(self, idx: torch.Tensor) -> torch.Tensor:
        return take(self.mask, idx)

    # ---- selection ------------------------------------------------------------------------------
    def drop_candidates(self, score: torch.Tensor) -> Candidates:
        return Candidates(score.detach().flatten().float().masked_fill(~self.mask.flatten(),
                                                                       float("inf")))

    def _eligible(self, also: torch.Tensor | None) -> torch.Tensor:
        eligible = ~self.mask.flatten()
        if also is not None:
            eligible = eligible.clone()
            eligible[also] = True
        return eligible

    def grow_candidates(self, k: int, score: torch.Tensor | None,
                        generator: torch.Generator | None,
                        also: torch.Tensor | None = None) -> Candidates:
        eligible = self._eligible(also)
        if score is None:  # the GSE authors' random grow score, torch.rand over the layer
            score = torch.rand(self.numel, generator=generator).to(eligible.device)
        else:
            score = score.detach().flatten().float()
        return Candidates(score.masked_fill(~eligible, float("-inf")))

    def smallest_active(self, k: int, score: torch.Tensor) -> torch.Tensor:
        # Over the active scores only, in index order, as the always-sparse layer ranks its
        # values: at density d a d-th of the work of ranking the whole layer, and the same
        # choice among ties (such as just-grown weights, all zero).
        k = min(k, self.n_active())
        active = self.active_indices()
        kept = take(score.detach(), active).float()
        return active[torch.topk(kept, k, largest=False, sorted=False).indices]

    def largest_inactive(self, k: int, score: torch.Tensor,
                         also: torch.Tensor | None = None) -> torch.Tensor:
        eligible = self._eligible(also)
        k = min(k, int(eligible.sum()))
        masked = score.detach().flatten().float().masked_fill(~eligible, float("-inf"))
        return top_k(masked, k, largest=True)

    def random_inactive(self, k: int, generator: torch.Generator,
                        also: torch.Tensor | None = None) -> torch.Tensor:
        inactive = (~self.mask.flatten()).nonzero().squeeze(1)
        if also is not None:
            inactive = torch.cat([inactive, also.to(inactive.device)])
        k = min(k, inactive.numel())
        pick = torch.randperm(inactive.numel(), generator=generator)[:k].to(inactive.device)
        return inactive[pick]

    def random_draw(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randperm(self.numel, generator=generator)[: self.target_active]

    # ---- topology changes -----------------------------------------------------------------------
    def _state_tensors(self, optimizer: torch.optim.Optimizer | None) -> Iterable[torch.Tensor]:
        """Optimizer state shaped like the weight: momentum, Adam's moments."""
        if optimizer is None:
            return ()
        state = optimizer.state.get(self.weight, {})
        return [v for v in state.values() if torch.is_tensor(v) and v.shape == self.weight.shape]

    def _mask_changed_at(self, idx: torch.Tensor, active: bool) -> None:
        """:meth:`mask_changed` after the mask changed at ``idx`` alone: the float mask is
        written there (O(k), not a conversion of the whole mask); a separate gradient mask
        (Top-KAST) is rebuilt."""
        if self.grad_mask is not None:
            self.mask_changed()
            return
        self._n_active = None
        put(self._float_mask, idx, 1.0 if active else 0.0)   # also _float_grad_mask (the same)

    @torch.no_grad()
    def prune(self, idx: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> None:
        put(self.mask, idx, False)
        put(self.weight, idx, 0.0)
        for state in self._state_tensors(optimizer):
            put(state, idx, 0.0)
        self._mask_changed_at(idx, False)

    @torch.no_grad()
    def grow(self, idx: torch.Tensor, values: torch.Tensor | None,
             optimizer: torch.optim.Optimizer | None) -> None:
        put(self.mask, idx, True)
        put(self.weight, idx, 0.0 if values is None else values)
        for state in self._state_tensors(optimizer):
            put(state, idx, 0.0)
        self._mask_changed_at(idx, True)

    @torch.no_grad()
    def set_active(self, idx: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> None:
        mask = torch.zeros(self.numel, dtype=torch.bool)
        mask[idx.cpu()] = True
        self.set_mask(mask.to(self.mask.device), None)
        self.apply_mask(optimizer)

    @torch.no_grad()
    def set_active_values(self, values: torch.Tensor) -> None:
        put(self.weight, self.active_indices(), values)

    @torch.no_grad()
    def set_mask(self, mask: torch.Tensor, grad_mask: torch.Tensor | None) -> None:
        self.mask.copy_(mask.to(torch.bool).reshape(self.mask.shape))
        self.grad_mask = (None if grad_mask is None
                          else grad_mask.to(torch.bool).reshape(self.mask.shape))
        self.mask_changed()

    # ---- per-step invariants and checkpoints ----------------------------------------------------
    def gradient_mask(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        grad = self.weight.grad
        return None if grad is None else (grad, self._float_grad_mask)

    @torch.no_grad()
    def apply_mask(self, optimizer: torch.optim.Optimizer | None) -> None:
        self.weight.mul_(self._float_mask)
        for state in self._state_tensors(optimizer):
            state.mul_(self._float_grad_mask)

    def state_dict(self) -> dict:
        out = {"mask": self.mask.clone()}
        if self.grad_mask is not None:
            out["grad_mask"] = self.grad_mask.clone()
        return out

    def load_state_dict(self, state: dict) -> None:
        self.mask.copy_(state["mask"])
        grad_mask = state.get("grad_mask")
        self.grad_mask = None if grad_mask is None else grad_mask.clone()
        self.mask_changed()
