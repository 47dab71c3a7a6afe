"""SimpleViT-tiny, the GSE authors' ``simple-vit-tiny`` (Heddes et al., their
models/simple_vit.py, after Beyer, Zhai & Kolesnikov, "Better plain ViT baselines for
ImageNet-1k", 2022).

Patches of 4x4 pixels flattened to (p1 p2 c) vectors, LayerNorm, a linear embedding to
``dim`` and LayerNorm; a fixed 2-D sine-cosine position embedding; ``depth`` pre-norm blocks of
multi-head attention (``heads`` heads of 64 dimensions, bias-free qkv and output projections)
and a GELU MLP of ``mlp_dim`` units; mean pooling over tokens, LayerNorm and a linear head.
Tiny: dim 512, depth 4, 6 heads, MLP dim 256: about 4.28 M parameters for CIFAR-100 and 18
prunable (linear) layers. ``width`` scales dim, the number of heads and the MLP dim (head
dimension fixed at 64), as the authors' width experiment does (``int(512·w)``, ``int(6·w)``,
``int(256·w)``; here rounded, at least one head and dim a multiple of 4).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import image_shape, register, scaled


def posemb_sincos_2d(h: int, w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """(h·w, dim) fixed embedding: sin and cos of x and y at dim/4 frequencies each."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    omega = torch.arange(dim // 4) / max(1, dim // 4 - 1)
    omega = 1.0 / temperature ** omega
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int = 64):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        q, k, v = self.to_qkv(self.norm(x)).reshape(n, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)   # scale 1/√dim_head, as the authors'
        return self.to_out(out.transpose(1, 2).reshape(n, t, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register("simple_vit_tiny")
class SimpleViT(nn.Module):
    def __init__(self, *, num_classes: int, in_shape: tuple[int, ...], width: float = 1.0,
                 patch: int = 4, dim: int = 512, depth: int = 4, heads: int = 6, mlp_dim: int = 256):
        super().__init__()
        c, h, w = image_shape(in_shape, "simple_vit_tiny")
        if h % patch or w % patch:
            raise ValueError(f"simple_vit_tiny: input {h}x{w} is not divisible by patch size {patch}")
        dim, heads, mlp_dim = scaled(dim, width, multiple_of=4), scaled(heads, width), scaled(mlp_dim, width)
        self.patch = patch
        self.patch_dim = c * patch * patch
        self.patch_norm = nn.LayerNorm(self.patch_dim)
        self.patch_embed = nn.Linear(self.patch_dim, dim)
        self.embed_norm = nn.LayerNorm(dim)
        self.register_buffer("pos_embed", posemb_sincos_2d(h // patch, w // patch, dim), persistent=False)
        self.blocks = nn.ModuleList(nn.ModuleList([Attention(dim, heads), FeedForward(dim, mlp_dim)])
                                    for _ in range(depth))
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        n, c, h, w = img.shape
        p = self.patch
        # b c (h p1) (w p2) -> b (h w) (p1 p2 c), the authors' patch layout
        x = img.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(n, -1, self.patch_dim)
        x = self.embed_norm(self.patch_embed(self.patch_norm(x))) + self.pos_embed.to(img.dtype)
        for attn, ff in self.blocks:
            x = attn(x) + x
            x = ff(x) + x
        return self.head(x.mean(dim=1))
