"""Guided Stochastic Exploration's machinery (Heddes et al., ICLR 2024 submission): capture a
batch's layer inputs and output gradients, turn them into a sampling distribution over
(output unit, input unit) pairs, draw candidate connections, and compute the gradient of only
those candidates.

A layer's weight is viewed as ``(out, fan_in)``; for a conv, ``fan_in = in_channels·kh·kw`` with
input unit ``j = c·kh·kw + u·kw + v`` (``weight.view(out, -1)``, the order ``F.unfold`` uses).
Both layer kinds are reduced to one layout: inputs ``U`` of shape (B, fan_in, L) and output
gradients ``dY`` of shape (B, out, L), with L positions per example (conv: output pixels, via
``F.unfold``; linear: tokens, 1 for an MLP). The gradient of the loss w.r.t. weight (i, j) is

    G[i, j] = Σ_b Σ_l dY[b, i, l] · U[b, j, l],

so the candidates' gradients are a sampled dense-dense product over the batch (the same SDDMM
the always-sparse layers compute their weight gradient with): no dense gradient and no tensor of the weight's shape is ever
built (:func:`candidate_gradients`). Candidate sampling asks the layer which drawn pairs are
active (``is_active``), so it builds nothing of the weight's size on either engine.

Samplers (:mod:`sparsebench.sparsity.samplers`) give p_out (over out) and p_in (over fan_in); a
pair is drawn as i ~ p_out, j ~ p_in independently, i.e. from the product distribution
p_out(i)·p_in(j):

* ``uniform``: all equal;
* ``grabo``: p_in[j] = Σ_{b,l} |U[b,j,l]|, p_out[i] = Σ_{b,l} |dY[b,i,l]|, the factors of the
  bound |G[i,j]| ≤ (Σ_r |dY[r,i]|)(Σ_r |U[r,j]|) with rows r = (b, l);
* ``graest``: an AMS sketch of the same inner product: fresh random signs s_r = ±1 for every
  row r = (b, l) at every update, p_in[j] = |Σ_r s_r U[r,j]|, p_out[i] = |Σ_r s_r dY[r,i]|, since
  E[(Σ_r s_r dY[r,i])(Σ_r s_r U[r,j])] = G[i,j].

Deviations from the authors' code, on purpose: (1) their conv backward hook sums only the first
row of the output gradient (``grad_outputs[0]`` after rebinding), here every row is used; (2) they
reuse one sign per row index across the batches of an update, here each update draws fresh
signs from the method's generator (the sketch needs independent signs per sample and position);
(3) an all-zero distribution (e.g. a layer whose output gradient vanished) falls back to uniform
instead of raising.

Data-parallel runs (sparsebench.distributed): each rank captures its share of the global batch
(or, with score batches, whole batches of its own), so the samplers' statistics are made the
whole draw's before they are sampled from (:mod:`sparsebench.sparsity.samplers`), and GraEst
draws the signs of every row of every batch on every rank and uses its own rows'. Every rank
then holds the same p_out, p_in and generator state.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .protocol import PrunableLayer
from .sparse_conv import SparseConv2d
from .sparse_linear import csr_row_pointers, sampled_mm

# Layers whose input is unfolded into patches: masked convs and always-sparse ones.
CONV_TYPES = (nn.Conv2d, SparseConv2d)


# ---- capture -----------------------------------------------------------------------------------

@dataclass
class LayerCapture:
    """One layer's input and output gradient from one forward/backward pass."""

    module: nn.Module
    x: torch.Tensor | None = None          # the layer's input, as the forward saw it
    dy: torch.Tensor | None = None         # dLoss/dOutput (pre-activation)
    _inputs: torch.Tensor | None = field(default=None, repr=False)

    def inputs(self) -> torch.Tensor:
        """U: (B, fan_in, L), float32; a conv's input unfolded into patches."""
        if self._inputs is None:
            if self.x is None:
                raise RuntimeError("no input captured for this layer (was capture armed?)")
            self._inputs = _as_rows_in(self.module, self.x.float())
        return self._inputs

    def output_grads(self) -> torch.Tensor:
        """dY: (B, out, L), float32."""
        if self.dy is None:
            raise RuntimeError("no output gradient captured for this layer (no backward pass?)")
        dy = self.dy.float()
        if isinstance(self.module, CONV_TYPES):
            return dy.flatten(2)
        return dy.reshape(dy.shape[0], -1, dy.shape[-1]).transpose(1, 2)

    @property
    def batch(self) -> int:
        return self.output_grads().shape[0]

    def release(self) -> None:
        """Drop the captured tensors (once the layer's share of an update is computed)."""
        self.x = self.dy = self._inputs = None

    @property
    def positions(self) -> int:
        """L: output positions per example (conv pixels, tokens; 1 for an MLP layer)."""
        return self.output_grads().shape[2]


def _as_rows_in(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(module, CONV_TYPES):
        if module.groups != 1:
            raise NotImplementedError("GSE sampling supports convolutions with groups=1 only")
        if module.padding_mode != "zeros":
            raise NotImplementedError("GSE sampling supports zero padding only")
        padding = module.padding
        if isinstance(padding, str):
            if padding != "valid":
                raise NotImplementedError(f"conv padding {padding!r} is not supported")
            padding = 0
        return F.unfold(x, module.kernel_size, dilation=module.dilation, padding=padding,
                        stride=module.stride)
    return x.reshape(x.shape[0], -1, x.shape[-1]).transpose(1, 2)


class ActivationCapture:
    """Forward hooks that keep each layer's input and, through a hook on its output tensor, the
    gradient w.r.t. that output. Armed only for the steps that need it, so other steps pay
    nothing. (A tensor hook sees the gradient of the value the layer produced, even when an
    in-place activation such as ``ReLU(inplace=True)`` overwrites it afterwards.)
    """

    def __init__(self, layers: list[PrunableLayer]):
        self.layers = {layer.name: LayerCapture(layer.module) for layer in layers}
        self._handles: list = []

    def __getitem__(self, name: str) -> LayerCapture:
        return self.layers[name]

    @property
    def armed(self) -> bool:
        return bool(self._handles)

    def arm(self) -> None:
        self.remove()
        self.reset()
        for name, cap in self.layers.items():
            self._handles.append(cap.module.register_forward_hook(self._forward_hook(cap, name)))

    @staticmethod
    def _forward_hook(cap: LayerCapture, name: str) -> Callable:
        def hook(module, args, output):
            if cap.x is not None:
                raise RuntimeError(f"layer {name} ran twice in one forward pass; GSE capture "
                                   "supports layers that run once per step")
            cap.x = args[0].detach()
            if output.requires_grad:
                output.register_hook(lambda grad: setattr(cap, "dy", grad.detach()))
        return hook

    def remove(self) -> None:
        """Drop the hooks and the captured tensors."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def clear(self) -> None:
        self.remove()
        self.reset()

    def reset(self) -> None:
        """Drop the captured tensors and keep the hooks (for the next batch of a pass)."""
        for cap in self.layers.values():
            cap.release()


# ---- candidates --------------------------------------------------------------------------------

def _probabilities(weights: torch.Tensor) -> torch.Tensor:
    """CPU float64 weights for ``torch.multinomial``; all-zero or non-finite → uniform."""
    w = weights.detach().double().cpu()
    if not torch.isfinite(w).all() or float(w.sum()) <= 0:
        return torch.ones_like(w)
    return w


def sample_pairs(p_out: torch.Tensor, p_in: torch.Tensor, n: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` pairs (i, j) drawn with replacement from p_out(i)·p_in(j) (row and column drawn
    independently, as the authors' ``utils.sample``). Returned on the CPU."""
    if n <= 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    rows = torch.multinomial(_probabilities(p_out), n, replacement=True, generator=generator)
    cols = torch.multinomial(_probabilities(p_in), n, replacement=True, generator=generator)
    return rows, cols


def sample_candidates(layer: PrunableLayer, p_out: torch.Tensor, p_in: torch.Tensor, n: int,
                      generator: torch.Generator) -> torch.Tensor:
    """Flat indices of the distinct inactive connections among ``n`` drawn pairs, ascending.

    Drawn active connections and repeats are dropped (the paper's candidate set is a subset of
    the inactive connections), so fewer than ``n`` usually remain.
    """
    return distinct_inactive(layer, *sample_pairs(p_out, p_in, n, generator))


def sample_uniform_candidates(layer: PrunableLayer, n: int,
                              generator: torch.Generator) -> torch.Tensor:
    """:func:`sample_candidates` with p_out and p_in uniform: the same distribution, drawn with
    ``torch.randint`` (about a tenth of ``torch.multinomial``'s time at these sizes)."""
    if n <= 0:
        return torch.zeros(0, dtype=torch.long)
    rows = torch.randint(layer.out_features, (n,), generator=generator)
    cols = torch.randint(layer.fan_in, (n,), generator=generator)
    return distinct_inactive(layer, rows, cols)


def distinct_inactive(layer: PrunableLayer, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Flat indices of the distinct inactive connections among the pairs (rows, cols), ascending."""
    flat = torch.unique(rows * layer.fan_in + cols)
    # A protocol question, not the layer's mask: on a sparse layer it is a binary search in the
    # sorted active indices, O(n log nnz), and no tensor of the weight's size is built.
    active = layer.is_active(flat)
    return flat.to(active.device)[~active]


def candidate_gradients(cap: LayerCapture, flat: torch.Tensor) -> torch.Tensor:
    """dLoss/dW at the flat indices ``flat``: G[i,j] = Σ_{b,l} dY[b,i,l]·U[b,j,l] for each
    (i, j) = divmod(flat, fan_in). Equal to the dense gradient at those positions (same loss
    scaling), without computing it.

    Both layer kinds use the sampled dense-dense product the always-sparse layers compute their
    weight gradient with (``sampled_mm``, an SDDMM over the candidates' CSR pattern), with rows
    r = (b, l): dY as (out, R) and U as (R, fan_in). Candidates then cost what active
    connections cost in a backward pass, O(R · candidates), and nothing of the weight's size
    is formed (U is the unfolded input, R·fan_in elements).
    """
    if cap.x is None or cap.dy is None:
        raise RuntimeError("no input or output gradient captured for this layer")
    if isinstance(cap.module, CONV_TYPES):
        dy, u = cap.output_grads(), cap.inputs()        # (B, out, L), (B, fan_in, L)
        dy2d = dy.transpose(0, 1).reshape(dy.shape[1], -1)
        x2d = u.transpose(1, 2).reshape(-1, u.shape[1])
    else:
        fan_in, out_features = cap.x.shape[-1], cap.dy.shape[-1]
        x2d = cap.x.reshape(-1, fan_in).float()
        dy2d = cap.dy.reshape(-1, out_features).float().t()
    fan_in, out_features = x2d.shape[1], dy2d.shape[0]
    flat = flat.to(dy2d.device)
    order = None
    if flat.numel() > 1 and not bool((flat[1:] > flat[:-1]).all()):
        flat, order = torch.sort(flat)          # CSR needs row-major order
    rows = torch.div(flat, fan_in, rounding_mode="floor")
    cols = flat - rows * fan_in
    grads = sampled_mm(csr_row_pointers(rows, out_features), cols, dy2d, x2d)
    if order is not None:
        grads = torch.empty_like(grads).scatter_(0, order, grads)
    return grads


class CandidateGradients:
    """The candidates' gradients summed over batches (float64, order-independent) and then
    over the ranks (``reduce``, see :func:`sparsebench.sparsity.samplers.gradient_reduce`)."""

    def __init__(self, candidates: dict[str, torch.Tensor], reduce: Callable[[torch.Tensor], torch.Tensor]):
        self.candidates, self.reduce = candidates, reduce
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, name: str, cap: LayerCapture) -> None:
        grads = candidate_gradients(cap, self.candidates[name]).double()
        self.sums[name] = self.sums[name] + grads if name in self.sums else grads

    def total(self, name: str) -> torch.Tensor:
        if name not in self.sums:   # this rank scored no batch
            return self.reduce(torch.zeros(self.candidates[name].numel(), dtype=torch.float64))
        return self.reduce(self.sums[name])


def candidate_gradient_flops(n_candidates: int, positions: int) -> float:
    """FLOPs per example of :func:`candidate_gradients`: a multiply and an add per candidate
    and position."""
    return 2.0 * n_candidates * positions
