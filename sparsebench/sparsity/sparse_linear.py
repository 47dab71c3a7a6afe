"""The always-sparse linear layer: only the active connections exist, as flat indices and values.

A weight W of shape (out, in) is held as ``indices`` (flat positions ``i·in + j``, ascending) and
``values`` (an ``nn.Parameter`` of shape ``(nnz,)``, in the same order); nothing of shape
(out, in) is ever created. For a batch X (R rows, ``in`` columns) and output gradient dY:

    forward          Y  = X Wᵀ + b       = (W Xᵀ)ᵀ               CSR × dense
    input gradient   dX = dY W           = (Wᵀ dYᵀ)ᵀ             CSR of Wᵀ × dense
    weight gradient  dW[i,j] = Σ_r dY[r,i] X[r,j]  at active (i,j) only   sampled dense-dense product

so forward and backward each cost O(R · nnz) (plus O(R · (in + out)) for the dense operands).

Layout, measured on this repository's 2-core CPU (``benchmarks/sparse_layer.py``, R = 128, one
thread): CSR (``torch.sparse.mm``, MKL's CSR × dense) is the fastest forward at every size and
sparsity tried, 10-25× faster than COO at 90-99 % sparsity (``sparse.mm`` on COO goes through a
slower coalesced kernel) and 10-25× faster than a gather/``index_add_`` formulation (which moves
R·nnz gathered elements through memory); against dense it breaks even near 90 % and is about
10× faster at 99 %, as the GSE paper reports. For the weight gradient,
``torch.sparse.sampled_addmm`` (CSR) beats chunked gather-and-reduce by about 13× at n = 8192.
The input gradient needs CSR of Wᵀ: its structure (a permutation of the active entries sorted
by column) is computed once per topology, and each backward only gathers the values through it
(O(nnz)); multiplying by the transposed view ``W.t()`` instead goes through a slow conversion
(about 7×), which is why torch's own CSR autograd is 2-3× slower than this layer for forward +
backward. On CUDA the same calls run on cuSPARSE (SpMM and SDDMM, both CSR-native), so CSR is
the layout there too (not yet measured: no GPU was available when this was written).

On the CPU, float32 products run on the C kernels of :mod:`.native` where they can be built
(about 2× MKL's each), and the backward takes both gradients in one pass over W's CSR: dW by
the sampled product and dX by scattering ``v · dYᵀ[i]`` into row j of dXᵀ, so no CSR of Wᵀ
is needed there (it is built lazily, for torch's kernels and the conv only).

The products are registered as custom operators (``sparsebench::csr_addmm``,
``sparsebench::sampled_mm``, ``sparsebench::linear_backward``) so that
``torch.utils.flop_counter`` can count them: each reports
the FLOPs of the dense product it stands for, the same number FlopCounterMode reports for a
masked ``nn.Linear``. :mod:`sparsebench.flops` scales each prunable layer's dense cost by its
density itself (RigL's accounting), so both engines give the same FLOP columns for the same
topology.
"""
from __future__ import annotations

import functools
import math
import warnings

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import register_flop_formula

from . import native

# torch warns once per process that CSR is "in beta"; it is what we use.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


# ---- the two kernels -----------------------------------------------------------------------

def _csr_addmm(crow: Tensor, col: Tensor, values: Tensor, dense: Tensor, bias: Tensor | None,
               result: Tensor) -> None:
    """result ← bias[:, None] + A @ dense, with A (rows × dense.shape[0]) given in CSR by
    ``crow``/``col``/``values``; ``result`` (rows × R) is written in place."""
    if native.spmm_usable(values, dense, result):
        native.spmm(crow, col, values, dense, bias, result)
        return
    matrix = torch.sparse_csr_tensor(crow, col, values, (crow.numel() - 1, dense.shape[0]),
                                     check_invariants=False)
    if bias is None:
        torch.mm(matrix, dense, out=result)
    else:
        torch.addmm(bias.to(result.dtype)[:, None], matrix, dense, out=result)


csr_addmm = torch.library.custom_op("sparsebench::csr_addmm", _csr_addmm, mutates_args=("result",))


@csr_addmm.register_fake
def _(crow, col, values, dense, bias, result):
    return None


@register_flop_formula(torch.ops.sparsebench.csr_addmm)
def _csr_addmm_flops(crow_shape, col_shape, values_shape, dense_shape, *args, **kwargs) -> int:
    """The dense product this stands for (see the module docstring)."""
    return 2 * (crow_shape[0] - 1) * dense_shape[0] * dense_shape[1]


def _sampled_mm(crow: Tensor, col: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """(a @ b) at the CSR positions only, as a vector aligned with ``col``: a is (rows × R),
    b is (R × n_cols). An SDDMM; no (rows × n_cols) tensor is formed."""
    if native.usable(a, b):
        return native.sddmm(crow, col, a, b)
    # sampled_addmm computes beta·input + a@b even for beta = 0 (NaNs propagate), so the
    # input's values are zeros rather than the weights.
    pattern = torch.sparse_csr_tensor(crow, col, a.new_zeros(col.numel()),
                                      (crow.numel() - 1, b.shape[1]), check_invariants=False)
    return torch.sparse.sampled_addmm(pattern, a, b, beta=0.0).values()


sampled_mm = torch.library.custom_op("sparsebench::sampled_mm", _sampled_mm, mutates_args=())


@sampled_mm.register_fake
def _(crow, col, a, b):
    return a.new_empty(col.shape[0])


@register_flop_formula(torch.ops.sparsebench.sampled_mm)
def _sampled_mm_flops(crow_shape, col_shape, a_shape, b_shape, *args, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def _linear_backward(crow: Tensor, col: Tensor, values: Tensor, grad_t: Tensor, x_t: Tensor,
                     grad_x_t: Tensor) -> Tensor:
    """Both gradients of Y = X Wᵀ in one pass over the active connections (the C kernels
    only, :func:`native.linear_backward`): dXᵀ into ``grad_x_t`` (zeros on entry), and dW at
    the active positions, returned. ``grad_t`` is dYᵀ (out × R), ``x_t`` is Xᵀ (in × R)."""
    return native.linear_backward(crow, col, values, grad_t, x_t, grad_x_t)


linear_backward = torch.library.custom_op("sparsebench::linear_backward", _linear_backward,
                                          mutates_args=("grad_x_t",))


@linear_backward.register_fake
def _(crow, col, values, grad_t, x_t, grad_x_t):
    return values.new_empty(col.shape[0])


@register_flop_formula(torch.ops.sparsebench.linear_backward)
def _linear_backward_flops(crow_shape, col_shape, values_shape, grad_shape, x_shape, *args,
                           **kwargs) -> int:
    """The two dense products it stands for: dX = dY W and dW = dYᵀ X."""
    return 2 * 2 * (crow_shape[0] - 1) * x_shape[0] * x_shape[1]


# The Python bodies of the custom operators by name: a TorchDispatchMode sees a custom operator
# as one call, so tests that audit every tensor created run these bodies under the mode.
KERNELS = {"csr_addmm": _csr_addmm, "sampled_mm": _sampled_mm,
           "linear_backward": _linear_backward}


# ---- structure derived from the indices, once per topology -----------------------------------

class CsrStructure:
    """CSR of W and of Wᵀ for a set of ascending flat indices of an (out, in) weight.

    ``t_perm`` lists the active entries in column-major order, so ``values[t_perm]`` are the
    values of Wᵀ in CSR order (row-major flat order is already W's CSR order).
    """

    def __init__(self, indices: Tensor, out_features: int, in_features: int):
        rows = torch.div(indices, in_features, rounding_mode="floor")
        cols = indices - rows * in_features
        self.rows, self.cols = rows, cols
        self.out_features, self.in_features = out_features, in_features
        self.crow = csr_row_pointers(rows, out_features)

    # Wᵀ's CSR only where a kernel asks for it: the C backward of the linear layer scatters
    # the input gradient and needs none (three fewer int64 arrays per topology).
    @functools.cached_property
    def t_perm(self) -> Tensor:
        return torch.argsort(self.cols * self.out_features + self.rows)

    @functools.cached_property
    def t_crow(self) -> Tensor:
        return csr_row_pointers(self.cols, self.in_features)

    @functools.cached_property
    def t_col(self) -> Tensor:
        return self.rows[self.t_perm]


def csr_row_pointers(rows: Tensor, n: int) -> Tensor:
    """CSR row pointers (n + 1 of them) from each entry's row index, any order."""
    counts = torch.bincount(rows, minlength=n)
    crow = torch.zeros(n + 1, dtype=torch.long, device=rows.device)
    torch.cumsum(counts, 0, out=crow[1:])
    return crow


def _row_major_transposed(lead: tuple[int, ...], cols: int, like: Tensor) -> Tensor:
    """An empty (*lead, cols) tensor whose 2-D view (R, cols) has strides (1, R): its
    transpose (cols, R) is contiguous, the layout the CSR product writes and reads fastest.
    It is a tensor of its own, not a view: autograd forbids in-place ops (``ReLU(inplace)``) on
    a view returned by a custom Function."""
    strides, step = [], 1
    for size in reversed(lead):
        strides.append(step)
        step *= size
    return torch.empty_strided((*lead, cols), (*reversed(strides), step), dtype=like.dtype,
                               device=like.device)


class _SparseLinearFunction(torch.autograd.Function):
    """Y = X Wᵀ + b for X of shape (..., in), W given by its CSR structure and values."""

    @staticmethod
    def forward(ctx, x: Tensor, values: Tensor, bias: Tensor | None, s: CsrStructure,
                out_features: int) -> Tensor:
        lead, in_features = tuple(x.shape[:-1]), x.shape[-1]
        x2d = x.reshape(-1, in_features).to(values.dtype)
        ctx.save_for_backward(x2d, values)
        ctx.structure, ctx.x_shape, ctx.has_bias = s, x.shape, bias is not None
        if len(lead) == 1:
            # (R, out) with R contiguous: the next linear layer's Xᵀ is then contiguous.
            y = _row_major_transposed(lead, out_features, values)
            csr_addmm(s.crow, s.cols, values, x2d.t(), bias, y.t())
            return y
        # Token inputs (ViT): a contiguous output, as nn.Linear gives, for the reshapes and
        # attention kernels that follow (one extra copy of the output).
        y_t = values.new_empty(out_features, x2d.shape[0])
        csr_addmm(s.crow, s.cols, values, x2d.t(), bias, y_t)
        y = values.new_empty(*lead, out_features)
        y.view(-1, out_features).copy_(y_t.t())
        return y

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x2d, values = ctx.saved_tensors
        s: CsrStructure = ctx.structure
        grad_out = grad_out.reshape(-1, grad_out.shape[-1]).to(values.dtype)
        grad_x = grad_values = grad_bias = None
        lead, in_features = tuple(ctx.x_shape[:-1]), ctx.x_shape[-1]
        if ctx.needs_input_grad[0] and ctx.needs_input_grad[1] and native.usable(values,
                                                                                 grad_out, x2d):
            grad_x = _row_major_transposed(lead, in_features, values)
            grad_x_t = grad_x.view(-1, in_features).t()
            grad_x_t.zero_()
            grad_values = linear_backward(s.crow, s.cols, values, grad_out.t(), x2d.t(),
                                          grad_x_t)
        elif ctx.needs_input_grad[0]:
            grad_x = _row_major_transposed(lead, in_features, values)
            csr_addmm(s.t_crow, s.t_col, values[s.t_perm], grad_out.t(), None,
                      grad_x.view(-1, in_features).t())
        if ctx.needs_input_grad[1] and grad_values is None:
            grad_values = sampled_mm(s.crow, s.cols, grad_out.t(), x2d)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(0)
        return grad_x, grad_values, grad_bias, None, None


class SparseLinear(nn.Module):
    """``nn.Linear`` with only its active connections stored (see the module docstring).

    ``indices`` (a buffer, so checkpoints carry the topology) and ``values`` change together
    through :meth:`set_topology`, which installs a new ``values`` Parameter: autograd keeps a
    leaf's gradient accumulator, with the leaf's shape, for as long as any graph that used it
    is alive (the trainer still holds the last step's loss when a method changes the
    topology), so a Parameter cannot change size in place between steps. The sparse engine
    moves the optimizer's reference and state to the new Parameter.
    """

    def __init__(self, in_features: int, out_features: int, indices: Tensor, values: Tensor,
                 bias: Tensor | None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("indices", torch.empty(0, dtype=torch.long, device=values.device))
        self.values = sparse_values(values)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self._structure: CsrStructure | None = None
        self.set_topology(indices, self.values)

    @property
    def numel(self) -> int:
        """Size of the dense weight this layer stands for."""
        return self.in_features * self.out_features

    @property
    def nnz(self) -> int:
        return self.values.numel()

    @torch.no_grad()
    def set_topology(self, indices: Tensor, values: nn.Parameter) -> None:
        """Replace the active set (ascending flat indices) and its values Parameter."""
        if indices.numel() != values.numel():
            raise ValueError(f"{indices.numel()} indices but {values.numel()} values")
        self.indices = indices.to(device=self.indices.device, dtype=torch.long)
        self.values = values
        self._structure = None

    def structure(self) -> CsrStructure:
        if self._structure is None:
            self._structure = CsrStructure(self.indices, self.out_features, self.in_features)
        return self._structure

    def forward(self, x: Tensor) -> Tensor:
        return _SparseLinearFunction.apply(x, self.values, self.bias, self.structure(),
                                           self.out_features)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A checkpoint may hold a different number of active connections (global-scope methods
        # move budget between layers): take its size before the usual copy. Resizing in place
        # keeps the Parameter the optimizer holds; no graph is alive while a checkpoint loads.
        idx, vals = state_dict.get(prefix + "indices"), state_dict.get(prefix + "values")
        if idx is not None and vals is not None and vals.shape != self.values.shape:
            self.indices = torch.empty(idx.shape, dtype=torch.long, device=self.indices.device)
            self.values.data = self.values.data.new_empty(vals.shape)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self._structure = None

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"nnz={self.nnz}, density={self.nnz / max(1, self.numel):.4g}, "
                f"bias={self.bias is not None}")

    def to_dense(self) -> Tensor:
        """The dense weight (for tests and small-model inspection only)."""
        w = self.values.new_zeros(self.numel)
        w[self.indices] = self.values.detach()
        return w.view(self.out_features, self.in_features)


def sparse_values(values: Tensor) -> nn.Parameter:
    """A layer's active values as a Parameter, marked as a weight: weight decay applies to it
    although it is 1-D (:func:`sparsebench.training.schedules.build_optimizer`)."""
    param = nn.Parameter(values.detach().clone())
    param.sparse_weight = True
    return param


def default_init_values(n: int, fan_in: int, *, device=None, dtype=torch.float32,
                        generator: torch.Generator | None = None) -> Tensor:
    """``nn.Linear``'s default rule (kaiming_uniform with a = √5): U(-1/√fan_in, 1/√fan_in),
    drawn for ``n`` entries only. Used where no dense initial weight exists (meta models)."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    out = torch.empty(n, dtype=dtype)
    out.uniform_(-bound, bound, generator=generator)
    return out.to(device)
