"""The always-sparse convolution: only the active connections exist, as flat indices and values.

A conv weight of shape (out, C_in, kh, kw) is viewed, as everywhere in sparsebench, as the
matrix W of shape (out, fan_in), fan_in = C_in·kh·kw, with input unit j = c·kh·kw + u·kw + v
(``weight.view(out, -1)``, the order ``F.unfold`` uses). :class:`SparseConv2d` holds W as
:class:`~.sparse_linear.SparseLinear` holds a linear weight (ascending flat ``indices``, one
``values`` Parameter, the same topology changes and checkpoint handling; it is that class with
a conv's forward and the CSR structure that forward needs). Two formulations, neither of
which forms a tensor of the weight's shape (out·fan_in elements):

**Stride 1 (most convs): shifted windows.** With the zero-padded input laid out channels
outermost and flattened, X_p of shape (C_in, N), N = B·Hp·Wp, kernel offset (u, v) is a shift of
the flat position by s_uv = u·dh·Wp + v·dw, so with W_uv the (out × C_in) slice of the active
connections at that offset (CSR, split once per topology):

    forward          Y[:, n]      = Σ_uv W_uv X_p[:, n + s_uv]             kh·kw CSR × dense
    input gradient   dX_p[:, n + s_uv] += W_uvᵀ dY[:, n]                   CSR of W_uvᵀ × dense
    weight gradient  dW_uv[i, c]  = Σ_n dY[i, n] X_p[c, n + s_uv]   at active (i, c) only

Each window X_p[:, s_uv : s_uv + N] is a view (row stride N + slack), so nothing is unfolded:
the operands are the padded input and output (about the activations' size), and the products
are computed at every padded position (a factor Hp·Wp / (Ho·Wo): 1.13 at 32×32, 1.56 at 8×8)
and cropped, dY being zero at the positions that are no output.

**Other strides: im2col.** With U the (fan_in, R) im2col matrix of X, R = B·Ho·Wo:

    forward          Y  = W U  (+ b)          CSR × dense, Y viewed (out, B, Ho, Wo)
    input gradient   dX = col2im(Wᵀ dY)       CSR of Wᵀ × dense, then fold
    weight gradient  dW[i,j] = Σ_r dY[i,r] U[j,r]  at active (i,j) only   sampled product

im2col is one strided view of the padded input copied once into (fan_in, B, Ho, Wo) (twice as
fast as ``F.unfold``, which also needs a transposing copy), col2im kh·kw strided adds (12×
faster than ``F.fold`` at 16 channels and 32×32); U is rebuilt from X for the weight gradient
rather than kept, since it is kh·kw times larger.

Measured (``benchmarks/sparse_conv.py``, batch 128, one thread, a loaded 2-core CPU): at
ResNet-56's 16-channel 32×32 conv and 98 % sparsity the forward took 272 ms as im2col and 70 ms
as shifted windows, against 50 ms for the dense ``conv2d`` (oneDNN's direct convolution); at
these channel counts the sparse conv's cost is in moving activations, which sparsity does not
shrink, so it approaches dense time rather than beating it. What it gains is memory and time
linear in the active connections as channels widen (``benchmarks/width_scaling_cnn.py``).

Both layers write their output as (out, B, Ho, Wo) memory handed on as a (B, out, Ho, Wo)
tensor with those strides (no copy; batch norm and the elementwise ops that follow accept any
strides), the conv analogue of the linear layer's transposed output.

What is swapped: ``nn.Conv2d`` with ``groups = 1``, ``padding_mode = 'zeros'`` and a padding
that is a number, a pair, ``'valid'``, or ``'same'`` with stride 1 and an odd effective kernel
(:func:`supports`). Other convolutions (depthwise / grouped ones, reflect padding) stay masked
dense layers inside the sparse engine; none of the registered models has one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import register_flop_formula

from . import native
from .sparse_linear import (KERNELS, CsrStructure, SparseLinear, csr_addmm, csr_row_pointers,
                            sampled_mm)


def _csr_accumulate(crow: Tensor, col: Tensor, values: Tensor, dense: Tensor, result: Tensor,
                    positions: int) -> None:
    """result += A @ dense, A (rows × dense.shape[0]) in CSR; ``dense`` may be a row-strided
    view (a shifted window of a larger matrix). ``positions``: the output positions the product
    stands for, for the FLOP count only."""
    if native.spmm_usable(values, dense, result):
        native.spmm(crow, col, values, dense, None, result, accumulate=True)
        return
    matrix = torch.sparse_csr_tensor(crow, col, values, (crow.numel() - 1, dense.shape[0]),
                                     check_invariants=False)
    result.addmm_(matrix, dense)


csr_accumulate = torch.library.custom_op("sparsebench::csr_accumulate", _csr_accumulate,
                                         mutates_args=("result",))


@csr_accumulate.register_fake
def _(crow, col, values, dense, result, positions):
    return None


@register_flop_formula(torch.ops.sparsebench.csr_accumulate)
def _csr_accumulate_flops(crow_shape, col_shape, values_shape, dense_shape, result_shape,
                          positions, *args, **kwargs) -> int:
    """The dense conv's share this product stands for: one kernel offset of a conv with
    ``positions`` output positions (the padded positions it also computes are not counted)."""
    return 2 * (crow_shape[0] - 1) * dense_shape[0] * positions


KERNELS["csr_accumulate"] = _csr_accumulate


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def supports(conv: nn.Conv2d) -> bool:
    """Whether :class:`SparseConv2d` can stand for ``conv`` (see the module docstring)."""
    return conv.groups == 1 and conv.padding_mode == "zeros" and _padding(conv) is not None


def _padding(conv: nn.Conv2d) -> tuple[int, int] | None:
    """The conv's zero padding as a pair, or None where it is not symmetric."""
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        kh, kw = _pair(conv.kernel_size)
        dh, dw = _pair(conv.dilation)
        if _pair(conv.stride) != (1, 1) or (dh * (kh - 1)) % 2 or (dw * (kw - 1)) % 2:
            return None
        return (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
    return _pair(conv.padding)


class ConvGeometry:
    """Kernel, stride, padding and dilation of one conv; im2col and col2im for it."""

    def __init__(self, in_channels: int, kernel_size, stride, padding, dilation):
        self.in_channels = in_channels
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)

    @property
    def fan_in(self) -> int:
        return self.in_channels * self.kernel_size[0] * self.kernel_size[1]

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (self.kernel_size, self.stride, self.padding,
                                                  self.dilation)
        return ((h + 2 * ph - dh * (kh - 1) - 1) // sh + 1,
                (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1)

    @property
    def shifted(self) -> bool:
        """Whether the shifted-window products serve this conv (stride 1), else im2col."""
        return self.stride == (1, 1)

    def padded(self, x: Tensor) -> tuple[Tensor, int, int]:
        """X zero-padded, channels outermost and flattened: (C, N + slack) with N = B·Hp·Wp,
        plus N and Wp. Kernel offset (u, v) reads the window starting at u·dh·Wp + v·dw."""
        (kh, kw), (ph, pw), (dh, dw) = self.kernel_size, self.padding, self.dilation
        b, c, h, w = x.shape
        hp, wp = h + 2 * ph, w + 2 * pw
        n = b * hp * wp
        xc = x.new_zeros(c, n + (kh - 1) * dh * wp + (kw - 1) * dw)
        xc[:, :n].view(c, b, hp, wp)[:, :, ph: ph + h, pw: pw + w] = x.transpose(0, 1)
        return xc, n, wp

    def offset(self, k: int, wp: int) -> int:
        """Start of kernel offset k = u·kw + v's window in :meth:`padded`'s flat layout."""
        u, v = divmod(k, self.kernel_size[1])
        return u * self.dilation[0] * wp + v * self.dilation[1]

    def im2col(self, x: Tensor) -> Tensor:
        """U: (fan_in, B·Ho·Wo), contiguous; row j = c·kh·kw + u·kw + v, column (b, oh, ow)."""
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (self.kernel_size, self.stride, self.padding,
                                                  self.dilation)
        b, c, h, w = x.shape
        ho, wo = self.output_size(h, w)
        xp = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
        s_b, s_c, s_h, s_w = xp.stride()
        patches = xp.as_strided((c, kh, kw, b, ho, wo),
                                (s_c, dh * s_h, dw * s_w, s_b, sh * s_h, sw * s_w),
                                xp.storage_offset())
        return patches.reshape(self.fan_in, b * ho * wo)

    def col2im(self, cols: Tensor, input_shape: torch.Size) -> Tensor:
        """The adjoint of :meth:`im2col`: every column entry added back to its input pixel."""
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (self.kernel_size, self.stride, self.padding,
                                                  self.dilation)
        b, c, h, w = input_shape
        ho, wo = self.output_size(h, w)
        grad = cols.new_zeros(b, c, h + 2 * ph, w + 2 * pw)
        blocks = cols.view(c, kh, kw, b, ho, wo)
        for u in range(kh):
            for v in range(kw):
                target = grad[:, :, u * dh: u * dh + sh * (ho - 1) + 1: sh,
                              v * dw: v * dw + sw * (wo - 1) + 1: sw]
                target.add_(blocks[:, u, v].transpose(0, 1))
        return grad[:, :, ph: ph + h, pw: pw + w] if ph or pw else grad


class OffsetStructure:
    """W split by kernel offset k = u·kw + v: for each k, the (out × C_in) matrix W_k of the
    active connections with that offset, in CSR (``sel`` picks its values from ``values``), and
    the CSR of W_kᵀ (``t_sel``); computed once per topology, as :class:`CsrStructure`."""

    def __init__(self, indices: Tensor, out_channels: int, geom: "ConvGeometry"):
        kk = geom.kernel_size[0] * geom.kernel_size[1]
        rows = torch.div(indices, geom.fan_in, rounding_mode="floor")
        j = indices - rows * geom.fan_in
        channel = torch.div(j, kk, rounding_mode="floor")
        offset = j - channel * kk
        # Stable: within one offset the entries stay in row-major (row, channel) order.
        order = torch.argsort(offset, stable=True)
        counts = torch.bincount(offset, minlength=kk).tolist()
        self.parts, start = [], 0
        for k, n in enumerate(counts):
            sel = order[start: start + n]
            start += n
            r, c = rows[sel], channel[sel]
            t = torch.argsort(c * out_channels + r)
            self.parts.append((k, sel, csr_row_pointers(r, out_channels), c, sel[t],
                               csr_row_pointers(c, geom.in_channels), r[t]))


class _ShiftedConvFunction(torch.autograd.Function):
    """A stride-1 conv as kh·kw CSR products over shifted windows of the padded input (see
    :class:`SparseConv2d`); outputs are computed at every padded position and cropped."""

    @staticmethod
    def forward(ctx, x: Tensor, values: Tensor, bias: Tensor | None, s: OffsetStructure,
                geom: ConvGeometry, out_channels: int) -> Tensor:
        x = x.to(values.dtype)
        b, _, h, w = x.shape
        ho, wo = geom.output_size(h, w)
        xc, n, wp = geom.padded(x)
        y = values.new_zeros(out_channels, n)
        for k, sel, crow, col, *_ in s.parts:
            off = geom.offset(k, wp)
            csr_accumulate(crow, col, values[sel], xc[:, off: off + n], y, b * ho * wo)
        out = _channels_outer(b, out_channels, ho, wo, values)
        crop = y.view(out_channels, b, -1, wp)[:, :, :ho, :wo]
        if bias is None:
            out.transpose(0, 1).copy_(crop)
        else:
            torch.add(crop, bias.to(values.dtype)[:, None, None, None], out=out.transpose(0, 1))
        ctx.save_for_backward(xc, values)
        ctx.structure, ctx.geom, ctx.has_bias, ctx.x_shape = s, geom, bias is not None, x.shape
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        xc, values = ctx.saved_tensors
        s: OffsetStructure = ctx.structure
        geom: ConvGeometry = ctx.geom
        b, c, h, w = ctx.x_shape
        (ph, pw) = geom.padding
        hp, wp = h + 2 * ph, w + 2 * pw
        n = b * hp * wp
        _, out_channels, ho, wo = grad_out.shape
        # dY at every padded output position, zero where no real output is.
        dy = values.new_zeros(out_channels, b, hp, wp)
        dy[:, :, :ho, :wo] = grad_out.transpose(0, 1)
        dy = dy.view(out_channels, n)
        grad_x = grad_values = grad_bias = None
        if ctx.needs_input_grad[0]:
            dxc = values.new_zeros(xc.shape)
            for k, _, _, _, t_sel, t_crow, t_col in s.parts:
                off = geom.offset(k, wp)
                csr_accumulate(t_crow, t_col, values[t_sel], dy, dxc[:, off: off + n], b * ho * wo)
            grad_x = dxc[:, :n].view(c, b, hp, wp)[:, :, ph: ph + h, pw: pw + w].transpose(0, 1)
        if ctx.needs_input_grad[1]:
            grad_values = values.new_empty(values.shape)
            for k, sel, crow, col, *_ in s.parts:
                off = geom.offset(k, wp)
                grad_values[sel] = sampled_mm(crow, col, dy, xc[:, off: off + n].t())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum((0, 2, 3))
        return grad_x, grad_values, grad_bias, None, None, None


def _channels_outer(b: int, out: int, ho: int, wo: int, like: Tensor) -> Tensor:
    """An empty (B, out, Ho, Wo) tensor laid out as (out, B, Ho, Wo) in memory: the layout the
    CSR product writes. A tensor of its own, not a view (in-place ReLU follows LeNet's convs)."""
    return torch.empty_strided((b, out, ho, wo), (ho * wo, b * ho * wo, wo, 1),
                               dtype=like.dtype, device=like.device)


def _rows_by_channel(t: Tensor) -> Tensor:
    """(B, C, H, W) → (C, B·H·W); a view when ``t`` has the channels-outer layout."""
    return t.transpose(0, 1).reshape(t.shape[1], -1)


class _Im2colConvFunction(torch.autograd.Function):
    """A conv of any stride as one CSR product over the im2col matrix (see the module)."""

    @staticmethod
    def forward(ctx, x: Tensor, values: Tensor, bias: Tensor | None, s: CsrStructure,
                geom: ConvGeometry, out_channels: int) -> Tensor:
        x = x.to(values.dtype)
        b, _, h, w = x.shape
        ho, wo = geom.output_size(h, w)
        y = _channels_outer(b, out_channels, ho, wo, values)
        csr_addmm(s.crow, s.cols, values, geom.im2col(x), bias, _rows_by_channel(y))
        ctx.save_for_backward(x, values)
        ctx.structure, ctx.geom, ctx.has_bias = s, geom, bias is not None
        return y

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, values = ctx.saved_tensors
        s: CsrStructure = ctx.structure
        geom: ConvGeometry = ctx.geom
        dy = _rows_by_channel(grad_out.to(values.dtype))           # (out, R)
        grad_x = grad_values = grad_bias = None
        if ctx.needs_input_grad[0]:
            cols = values.new_empty(geom.fan_in, dy.shape[1])
            csr_addmm(s.t_crow, s.t_col, values[s.t_perm], dy, None, cols)
            grad_x = geom.col2im(cols, x.shape)
        if ctx.needs_input_grad[1]:
            grad_values = sampled_mm(s.crow, s.cols, dy, geom.im2col(x).t())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = dy.sum(1)
        return grad_x, grad_values, grad_bias, None, None, None


class SparseConv2d(SparseLinear):
    """``nn.Conv2d`` (groups = 1) with only its active connections stored.

    The topology machinery is :class:`SparseLinear`'s over the (out, fan_in) view
    (``in_features`` is fan_in, ``out_features`` the output channels); only the forward
    differs. The conv attributes the GSE capture reads (``kernel_size``, ``stride``,
    ``padding``, ``dilation``, ``groups``, ``padding_mode``) are those of ``nn.Conv2d``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride, padding,
                 dilation, indices: Tensor, values: Tensor, bias: Tensor | None):
        self.geometry = ConvGeometry(in_channels, kernel_size, stride, padding, dilation)
        super().__init__(self.geometry.fan_in, out_channels, indices, values, bias)
        self.in_channels, self.out_channels = in_channels, out_channels
        g = self.geometry
        self.kernel_size, self.stride = g.kernel_size, g.stride
        self.padding, self.dilation = g.padding, g.dilation
        self.groups, self.padding_mode = 1, "zeros"

    @staticmethod
    def geometry_of(conv: nn.Conv2d) -> dict:
        """The constructor's geometry arguments for a supported ``nn.Conv2d``."""
        return dict(in_channels=conv.in_channels, out_channels=conv.out_channels,
                    kernel_size=conv.kernel_size, stride=conv.stride, padding=_padding(conv),
                    dilation=conv.dilation)

    def structure(self):
        """Per-offset CSR for the shifted-window products (stride 1), else CSR of W and Wᵀ."""
        if self._structure is None:
            self._structure = (OffsetStructure(self.indices, self.out_channels, self.geometry)
                               if self.geometry.shifted else
                               CsrStructure(self.indices, self.out_features, self.in_features))
        return self._structure

    @property
    def function(self) -> type[torch.autograd.Function]:
        return _ShiftedConvFunction if self.geometry.shifted else _Im2colConvFunction

    def forward(self, x: Tensor) -> Tensor:
        return self.function.apply(x, self.values, self.bias, self.structure(), self.geometry,
                                   self.out_channels)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"nnz={self.nnz}, density={self.nnz / max(1, self.numel):.4g}, "
                f"bias={self.bias is not None}")

    def to_dense(self) -> Tensor:
        """The dense weight (for tests and small-model inspection only)."""
        return super().to_dense().view(self.out_channels, self.in_channels, *self.kernel_size)
