"""CIFAR-100-format data for CPU tests of the image models (NOT CIFAR): a few hundred 32 × 32 × 3
Fashion-MNIST images in the CIFAR layout (sparsebench.paper.fashion_cifar), found through
``SPARSEBENCH_DATA``."""
from __future__ import annotations

from pathlib import Path

from sparsebench.paper.fashion_cifar import write_cifar100_format



def use_synthetic_cifar100(root: Path, monkeypatch, *, train: int = 200, test: int = 100) -> Path:
    """Write the data under ``root/cifar100`` and point ``SPARSEBENCH_DATA`` at ``root``."""
    write_cifar100_format(Path(root) / "cifar100", train=train, test=test)
    monkeypatch.setenv("SPARSEBENCH_DATA", str(root))
    return Path(root)
