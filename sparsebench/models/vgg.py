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

from . import _image_shape, register, scaled

CFG_16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


@register("vgg16")
class VGG16(nn.Module):
    """VGG-16-BN; every conv's channel count is multiplied by ``width``."""

    def __init__(self, *, num_classes: int, in_shape: tuple[int, ...], width: float = 1.0):
        super().__init__()
        in_ch, _, _ = _image_shape(in_shape, "vgg16")
        layers: list[nn.Module] = []
        for v in CFG_16:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                out_ch = scaled(v, width)
                layers += [
                    nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out_ch),
                    nn.ReLU(inplace=True),
                ]
                in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_ch, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))
