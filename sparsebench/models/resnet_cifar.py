"""CIFAR ResNets (ResNet-20/32/56).

He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR
2016, Section 4.2: a 3x3 conv with 16 filters, then three stages of n basic
blocks with 16/32/64 filters (the first block of stages 2 and 3 has stride
2), global average pooling and a linear classifier; depth = 6n + 2.
Shortcuts are "option A": identity, with stride-2 subsampling and zero
padding of the extra channels, so they have no parameters. Weights use
Kaiming initialisation (He et al., "Delving Deep into Rectifiers", ICCV 2015).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import image_shape, init_convs_and_batchnorm, register, scaled


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad channels to ``out_ch``."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.stride = stride
        self.pad_front = (out_ch - in_ch) // 2
        self.pad_back = out_ch - in_ch - self.pad_front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        if stride != 1 or in_ch != out_ch:
            self.shortcut: nn.Module = PadShortcut(in_ch, out_ch, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images, base widths 16/32/64 times ``width``."""

    def __init__(
        self, *, depth: int, num_classes: int, in_shape: tuple[int, ...], width: float = 1.0
    ):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        c, _, _ = image_shape(in_shape, f"resnet{depth}")
        widths = [scaled(w, width) for w in (16, 32, 64)]

        self.conv1 = nn.Conv2d(c, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        blocks, in_ch = [], widths[0]
        for stage, out_ch in enumerate(widths):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(in_ch, out_ch, stride))
                in_ch = out_ch
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

        init_convs_and_batchnorm(self, linear=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.pool(self.layers(x))
        return self.fc(torch.flatten(x, 1))


@register("resnet20")
def resnet20(**kwargs) -> CifarResNet:
    """ResNet-20 (n=3), ~0.27M parameters (He et al., CVPR 2016, Table 6)."""
    return CifarResNet(depth=20, **kwargs)


@register("resnet32")
def resnet32(**kwargs) -> CifarResNet:
    """ResNet-32 (n=5), ~0.46M parameters (He et al., CVPR 2016, Table 6)."""
    return CifarResNet(depth=32, **kwargs)


@register("resnet56")
def resnet56(**kwargs) -> CifarResNet:
    """ResNet-56 (n=9), ~0.85M parameters (He et al., CVPR 2016, Table 6)."""
    return CifarResNet(depth=56, **kwargs)
