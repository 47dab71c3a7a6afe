"""Multilayer perceptron (LeNet-300-100).

The 784-300-100-10 fully connected network of LeCun, Bottou, Bengio & Haffner,
"Gradient-Based Learning Applied to Document Recognition", Proc. IEEE 86(11),
1998 — the standard MLP of the pruning literature (Han et al., NeurIPS 2015;
Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .registry import register, scaled


@register("mlp")
class MLP(nn.Module):
    """Flatten, then Linear+ReLU hidden layers, then a Linear classifier.

    ``hidden`` gives the hidden sizes at width 1 (default ``(300, 100)``);
    each is multiplied by ``width`` and rounded (minimum 1).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_shape: tuple[int, ...],
        width: float = 1.0,
        hidden: tuple[int, ...] = (300, 100),
    ):
        super().__init__()
        sizes = [math.prod(in_shape)] + [scaled(h, width) for h in hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(sizes[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
