"""VGG-16 with batch normalisation, CIFAR variant.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015 (configuration D), with batch normalisation after
every conv (Ioffe & Szegedy, ICML 2015) and, as is usual for CIFAR (e.g.
Frankle & Carbin, ICLR 2019), a single linear classifier in place of the
three 4096-unit fc layers. A 32x32 input gives a 1x1 final map; an adaptive
average pool to 1x1 lets other input sizes work too.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import image_shape, init_convs_and_batchnorm, register, scaled

CFG_16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def conv_stack(cfg: list, in_ch: int, width: float, *, bias: bool) -> tuple[nn.Sequential, int]:
    """conv3x3-BN-ReLU for each channel count in ``cfg`` (scaled by ``width``), max-pool for
    "M"; returns the stack and its output channels."""
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            out_ch = scaled(v, width)
            layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias), nn.BatchNorm2d(out_ch),
                       nn.ReLU(inplace=True)]
            in_ch = out_ch
    return nn.Sequential(*layers), in_ch


@register("vgg16")
class VGG16(nn.Module):
    """VGG-16-BN; every conv's channel count is multiplied by ``width``."""

    def __init__(self, *, num_classes: int, in_shape: tuple[int, ...], width: float = 1.0):
        super().__init__()
        in_ch, _, _ = image_shape(in_shape, "vgg16")
        self.features, in_ch = conv_stack(CFG_16, in_ch, width, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_ch, num_classes)

        init_convs_and_batchnorm(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


# The GSE authors' ``vgg16-small`` (Heddes et al., their models/vgg_cifar.py): configuration D
# with every conv's channels divided by 4 (16-128) and a 128-512-512-classes classifier with
# dropout; about 1.30 M parameters for CIFAR-100.
CFG_16_SMALL = [16, 16, "M", 32, 32, "M", 64, 64, 64, "M", 128, 128, 128, "M", 128, 128, 128, "M"]


@register("vgg16_small")
class VGG16Small(nn.Module):
    """VGG-16-BN ÷ 4 with a three-layer classifier. ``width`` multiplies every conv's channels
    and the classifier's hidden units, as the authors' width experiment does."""

    def __init__(self, *, num_classes: int, in_shape: tuple[int, ...], width: float = 1.0):
        super().__init__()
        in_ch, _, _ = image_shape(in_shape, "vgg16_small")
        self.features, in_ch = conv_stack(CFG_16_SMALL, in_ch, width, bias=True)
        self.pool = nn.AdaptiveAvgPool2d(1)  # 1x1 already for 32x32 inputs
        hidden = scaled(512, width)
        self.classifier = nn.Sequential(
            nn.Linear(in_ch, hidden), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(hidden, num_classes))
        # PyTorch's default initialization, as the authors' model (sparsity.init may redraw it).

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))
