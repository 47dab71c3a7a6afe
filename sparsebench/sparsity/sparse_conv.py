"""The always-sparse convolution: only the active connections exist, as flat indices and values.

A conv weight of shape (out, C_in, kh, kw) is viewed, as everywhere in sparsebench, as the
matrix W of shape (out, fan_in), fan_in = C_in·kh·kw, with input unit j = c·kh·kw + u·kw + v
(``weight.view(out, -1)``, the order ``F.unfold`` uses). :class:`SparseConv2d` holds W as
:class:`~.sparse_layers.SparseLinear` holds a linear weight (ascending flat ``indices``, one
``values`` Parameter, the same CSR structure of W and Wᵀ, the same topology changes and
checkpoint handling; it is that class with a conv's forward). For an input X of B images and
R = B·L output positions, with U the (fan_in, R) im2col matrix of X:

    forward          Y  = W U  (+ b)          CSR × dense, Y viewed (out, B, Ho, Wo)
    input gradient   dX = col2im(Wᵀ dY)       CSR of Wᵀ × dense, then fold
    weight gradient  dW[i,j] = Σ_r dY[i,r] U[j,r]  at active (i,j) only   sampled product

so no tensor of the weight's shape (out·fan_in elements) is ever formed: the operands are the
activations (R·fan_in for U, R·out for Y) and the nnz-long values.

Choices, measured with ``benchmarks/sparse_conv.py`` (numbers in the README's section):

* im2col is one strided view of the zero-padded input, copied once into the (fan_in, B, Ho, Wo)
  layout the CSR product reads (``F.unfold`` gives (B, fan_in, L), which would need a second
  copy to reach it); col2im is kh·kw strided adds into the padded input gradient;
* the output is written by the CSR product as (out, B, Ho, Wo) memory, and handed on as a
  (B, out, Ho, Wo) tensor with those strides (no copy; batch norm and the elementwise ops that
  follow accept any strides), the conv analogue of the linear layer's transposed output;
* U is not kept for the backward pass: the input X is (kh·kw times smaller), and U is rebuilt
  from it for the weight gradient, so the activation memory of a step is that of a dense conv.

What is swapped: ``nn.Conv2d`` with ``groups = 1``, ``padding_mode = 'zeros'`` and a padding
that is a number, a pair, ``'valid'``, or ``'same'`` with stride 1 and an odd effective kernel
(:func:`supports`). Other convolutions (depthwise / grouped ones, reflect padding) stay masked
dense layers inside the sparse engine; none of the registered models has one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .sparse_layers import CsrStructure, SparseLinear, csr_addmm, sampled_mm


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


def _channels_outer(b: int, out: int, ho: int, wo: int, like: Tensor) -> Tensor:
    """An empty (B, out, Ho, Wo) tensor laid out as (out, B, Ho, Wo) in memory: the layout the
    CSR product writes. A tensor of its own, not a view (in-place ReLU follows LeNet's convs)."""
    return torch.empty_strided((b, out, ho, wo), (ho * wo, b * ho * wo, wo, 1),
                               dtype=like.dtype, device=like.device)


def _rows_by_channel(t: Tensor) -> Tensor:
    """(B, C, H, W) → (C, B·H·W); a view when ``t`` has the channels-outer layout."""
    return t.transpose(0, 1).reshape(t.shape[1], -1)


class _SparseConvFunction(torch.autograd.Function):
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

    def forward(self, x: Tensor) -> Tensor:
        return _SparseConvFunction.apply(x, self.values, self.bias, self.structure(),
                                         self.geometry, self.out_channels)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"nnz={self.nnz}, density={self.nnz / max(1, self.numel):.4g}, "
                f"bias={self.bias is not None}")

    def to_dense(self) -> Tensor:
        """The dense weight (for tests and small-model inspection only)."""
        return super().to_dense().view(self.out_channels, self.in_channels, *self.kernel_size)
