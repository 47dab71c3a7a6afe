"""How the paper names things: methods, data sets, models, sparsities.

Method labels are ours (:func:`sparsebench.reporting.results.method_label`: ``gse (grabo)``); the paper
writes them as below, in the order of its Table 1. A label the paper does not have is shown
as it is, after the paper's. A miniature replaces data set names with its stand-ins (see
``sweeps/mini/common.yaml``), so that generated data is never called CIFAR.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

# Table 1's rows, top to bottom.
METHODS = {
    "dense": "Dense",
    "lottery": "Lottery",
    "magnitude": "Gradual",
    "static": "Static",
    "snip": "SNIP",
    "grasp": "GraSP",
    "synflow": "SynFlow",
    "set": "SET",
    "rigl": "RigL",
    "topkast": "Top-KAST",
    "gse (uniform)": "GSE (uniform)",
    "gse (grabo)": "GSE (GraBo)",
    "gse (graest)": "GSE (GraEst)",
}
SAMPLERS = {"uniform": "uniform", "grabo": "GraBo", "graest": "GraEst"}
DATASETS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet",
            "fashion_mnist": "Fashion-MNIST", "mnist": "MNIST"}
MODELS = {"resnet56": "ResNet-56", "resnet20": "ResNet-20", "resnet32": "ResNet-32",
          "resnet50": "ResNet-50", "vgg16": "VGG-16", "vgg16_small": "VGG-16 (small)",
          "vit": "ViT", "simple_vit_tiny": "ViT (tiny)", "mlp": "MLP", "lenet5": "LeNet-5"}


def method_rank(label: str) -> tuple[int, str]:
    order = list(METHODS)
    return (order.index(label) if label in order else len(order), str(label))


@dataclass
class Names:
    """Display names, with a miniature's stand-in data set names on top."""

    datasets: dict[str, str] = field(default_factory=dict)

    def method(self, label: str) -> str:
        return METHODS.get(str(label), str(label))

    def dataset(self, name: str) -> str:
        return self.datasets.get(name, DATASETS.get(name, str(name)))

    def model(self, name: str) -> str:
        return MODELS.get(name, str(name))

    def methods_in_order(self, labels) -> list[str]:
        labels = {str(x) for x in labels if isinstance(x, str) and x}
        return sorted(labels, key=method_rank)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
