"""LeNet-5.

LeCun, Bottou, Bengio & Haffner, "Gradient-Based Learning Applied to Document
Recognition", Proc. IEEE 86(11), 1998. Modernised as usual: ReLU and max
pooling instead of scaled tanh and trainable subsampling, and a plain Linear
output layer instead of RBF units.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import image_shape, register, scaled


@register("lenet5")
class LeNet5(nn.Module):
    """conv(6, 5x5)-pool-conv(16, 5x5)-pool-fc120-fc84-fc(num_classes).

    No padding: a 32x32 input gives a 5x5 final map (as in the paper), a
    28x28 input a 4x4 one; the first fc layer is sized from ``in_shape``.
    """

    def __init__(self, *, num_classes: int, in_shape: tuple[int, ...], width: float = 1.0):
        super().__init__()
        c, h, w = image_shape(in_shape, "lenet5")
        c1, c2, f1, f2 = (scaled(n, width) for n in (6, 16, 120, 84))
        # Spatial size after conv5 -> pool2 -> conv5 -> pool2.
        oh, ow = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
        if oh < 1 or ow < 1:
            raise ValueError(f"lenet5 needs inputs of at least 16x16, got {h}x{w}")
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * oh * ow, f1),
            nn.ReLU(inplace=True),
            nn.Linear(f1, f2),
            nn.ReLU(inplace=True),
            nn.Linear(f2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
