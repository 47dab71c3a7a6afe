"""Densities that keep the number of active connections constant across widths (figure 3).

The paper widens every layer of a model by 1–4× while training the same number of active
connections as the ×1 model at 98 % sparsity, so the wider model is sparser. Sweep cells pair a
width with its density, so they are listed (``include``) rather than a grid; this module
computes them, and a test checks the shipped sweeps against it::

    python -m sparsebench.paper.width resnet56 cifar100 --density 0.02 --widths 2 3 4
"""
from __future__ import annotations

import argparse
import sys

from .. import models
from ..sparsity.engine import prunable_modules
from ..cli import prog

# The input of one example per data set (C, H, W) and its classes, as the data loaders give them.
SHAPES = {"cifar10": (10, (3, 32, 32)), "cifar100": (100, (3, 32, 32)),
          "fashion_mnist": (10, (1, 28, 28)), "mnist": (10, (1, 28, 28)),
          "imagenet": (1000, (3, 224, 224))}


def prunable_weights(model: str, dataset: str, width: float, *, dense_first_layer: bool = False,
                     dense_last_layer: bool = False) -> int:
    classes, shape = SHAPES[dataset]
    net = models.build_model(model, num_classes=classes, in_shape=shape, width=width)
    return sum(m.weight.numel() for _, m in prunable_modules(net, dense_first_layer,
                                                            dense_last_layer))


def active_connections(cfg) -> int:
    """The active weights a resolved run config starts with (its engine's target counts)."""
    from ..sparsity.engine import SparsityEngine

    classes, shape = SHAPES[cfg.data.name]
    net = models.build_model(cfg.model.name, num_classes=classes, in_shape=shape,
                             width=cfg.model.width)
    engine = SparsityEngine.for_model(net, cfg.density, cfg.sparsity.distribution,
                                      dense_first_layer=cfg.sparsity.dense_first_layer,
                                      dense_last_layer=cfg.sparsity.dense_last_layer)
    return sum(layer.target_active for layer in engine.layers)


def density_at(model: str, dataset: str, width: float, density: float,
               reference_width: float = 1.0, **kw) -> float:
    """The density at ``width`` that holds as many active weights as ``density`` at
    ``reference_width`` (rounded to 5 significant digits, as the sweep files hold it)."""
    active = round(density * prunable_weights(model, dataset, reference_width, **kw))
    return float(f"{active / prunable_weights(model, dataset, width, **kw):.5g}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog("paper width"),
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("dataset", choices=sorted(SHAPES))
    parser.add_argument("--density", type=float, default=0.02)
    parser.add_argument("--reference-width", type=float, default=1.0)
    parser.add_argument("--widths", type=float, nargs="+", default=[1, 2, 3, 4])
    args = parser.parse_args(argv)
    for w in args.widths:
        d = density_at(args.model, args.dataset, w, args.density, args.reference_width)
        print(f"{{model.name: {args.model}, model.width: {w:g}, density: {d}}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
