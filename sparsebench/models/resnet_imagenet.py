"""ImageNet ResNet-50 (v1.5), in plain torch.

He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR
2016 (Table 1, 50-layer): a 7x7/2 stem conv and 3x3/2 max pool, then
[3, 4, 6, 3] bottleneck blocks of widths 64/128/256/512 (expansion 4), global
average pooling and a linear classifier. "v1.5" puts the stride-2 of a
downsampling block on the 3x3 conv instead of the first 1x1 conv, as in
Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour",
2017, and torchvision. Projection shortcuts (1x1 conv + BN) where shapes
change. Adaptive pooling makes any input of at least 32x32 work.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import image_shape, init_convs_and_batchnorm, register, scaled


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int):
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        # The shortcut runs after conv3, matching its creation order.
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


@register("resnet50")
class ResNet50(nn.Module):
    """ResNet-50 v1.5; stem and bottleneck widths multiplied by ``width``."""

    def __init__(self, *, num_classes: int, in_shape: tuple[int, ...], width: float = 1.0):
        super().__init__()
        c, _, _ = image_shape(in_shape, "resnet50")
        stem = scaled(64, width)
        self.conv1 = nn.Conv2d(c, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.maxpool = nn.MaxPool2d(3, 2, 1)

        blocks, in_ch = [], stem
        for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
            planes = scaled(planes, width)
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(Bottleneck(in_ch, planes, stride))
                in_ch = planes * Bottleneck.expansion
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

        init_convs_and_batchnorm(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.pool(self.layers(x))
        return self.fc(torch.flatten(x, 1))
