"""Generated CIFAR-100-format data (sparsebench.paper.synthetic, NOT CIFAR) for CPU tests of
the image models: a few hundred 32 × 32 × 3 images, found through ``SPARSEBENCH_DATA``."""
from __future__ import annotations

from pathlib import Path

from sparsebench.paper.synthetic import write_cifar100_format


def use_synthetic_cifar100(root: Path, monkeypatch, *, train: int = 200, test: int = 100) -> Path:
    """Write the data under ``root/cifar100`` and point ``SPARSEBENCH_DATA`` at ``root``."""
    write_cifar100_format(Path(root) / "cifar100", train=train, test=test)
    monkeypatch.setenv("SPARSEBENCH_DATA", str(root))
    return Path(root)
