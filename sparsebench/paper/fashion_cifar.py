"""Fashion-MNIST written in the CIFAR python-pickle layout: real data that the paper's CIFAR
pipeline (the CIFAR reader, crop-and-flip augmentation, 32 × 32 × 3 models) can train on a CPU.

Each 28 × 28 grey image is padded with two black pixels on every side (Fashion-MNIST's
background is black, so nothing is resized or invented) and copied into three equal channels:
32 × 32 × 3 uint8 in CIFAR's channel-major row layout. The labels are Fashion-MNIST's ten
classes. It is NOT CIFAR: it stands in for CIFAR-10 in the miniature paper and in the
comparisons with the GSE authors' code (which reads the same files).

    write_cifar10_format(folder, source, ...)   folder/cifar-10-batches-py/{data_batch_1..5, test_batch}
    write_cifar100_format(folder, source, ...)  folder/cifar-100-python/{train, test}

The CIFAR-100 layout holds the same ten classes as ``fine_labels`` (no 100-class data set can
be had here): a 100-way classifier trained on it uses ten of its outputs. It shows the
pipeline of the CIFAR-100 cells on real data, not CIFAR-100's difficulty.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..storage import atomic
from ..data.cifar import (CIFAR10_DIR, CIFAR10_TEST, CIFAR10_TRAIN, CIFAR100_DIR, CIFAR100_TEST,
                          CIFAR100_TRAIN)
from ..data.idx import load_mnist_like

SOURCE = Path("/usr/share/datasets/fashion-mnist")
MARKER = "FASHION_MNIST_NOT_CIFAR.txt"
PAD = 2   # 28 + 2·2 = 32


def as_cifar_rows(images: np.ndarray) -> np.ndarray:
    """(N, 1, 28, 28) uint8 -> (N, 3072) uint8: black 2-pixel border, three equal channels."""
    n = images.shape[0]
    padded = np.pad(images[:, 0], ((0, 0), (PAD, PAD), (PAD, PAD)))
    return np.repeat(padded[:, None], 3, axis=1).reshape(n, -1)


def _balanced_first(labels: np.ndarray, n: int | None) -> np.ndarray:
    """Indices of the first ``n`` examples taken class by class in turn (all when None), so a
    small subset keeps the classes balanced; sorted, so it is a subset in file order."""
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    classes = np.unique(labels)
    per_class = [np.flatnonzero(labels == c) for c in classes]
    take = [idx[: n // len(classes) + (i < n % len(classes))] for i, idx in enumerate(per_class)]
    return np.sort(np.concatenate(take))


def splits(source: Path = SOURCE, train: int | None = None, test: int | None = None):
    """((x_train, y_train), (x_test, y_test)) as CIFAR rows and int64 labels."""
    x_tr, y_tr, x_te, y_te = (t.numpy() for t in load_mnist_like(source))
    out = []
    for x, y, n in ((x_tr, y_tr, train), (x_te, y_te, test)):
        keep = _balanced_first(y, n)
        out.append((as_cifar_rows(x[keep]), y[keep].astype(np.int64)))
    return out


def _dump(path: Path, data: np.ndarray, labels: np.ndarray, label_key: str) -> None:
    blob = pickle.dumps({"data": data, label_key: labels.tolist(),
                         "note": "Fashion-MNIST written by sparsebench.paper.fashion_cifar; not CIFAR"})
    atomic.write_bytes(path, blob)


def _note(folder: Path, layout: str, train: int, test: int) -> None:
    atomic.write_text(folder / MARKER, (
        f"Fashion-MNIST (10 classes) in the {layout} file layout, written by "
        f"sparsebench.paper.fashion_cifar: {train} training and {test} test images, each 28x28 "
        "padded with 2 black pixels to 32x32, three equal channels.\n"
        "This is NOT CIFAR; it only has CIFAR's file format.\n"))


def write_cifar10_format(folder: Path, source: Path = SOURCE, train: int | None = None,
                         test: int | None = None) -> Path:
    """Fashion-MNIST in ``folder/cifar-10-batches-py``; returns that folder."""
    inner = Path(folder) / CIFAR10_DIR
    (x, y), (xt, yt) = splits(source, train, test)
    for part, xs, ys in zip(CIFAR10_TRAIN, np.array_split(x, 5), np.array_split(y, 5)):
        _dump(inner / part, xs, ys, "labels")
    _dump(inner / CIFAR10_TEST[0], xt, yt, "labels")
    _note(inner, "CIFAR-10", len(y), len(yt))
    return inner


def write_cifar100_format(folder: Path, source: Path = SOURCE, train: int | None = None,
                          test: int | None = None) -> Path:
    """Fashion-MNIST's ten classes as ``fine_labels`` in ``folder/cifar-100-python``."""
    inner = Path(folder) / CIFAR100_DIR
    (x, y), (xt, yt) = splits(source, train, test)
    _dump(inner / CIFAR100_TRAIN[0], x, y, "fine_labels")
    _dump(inner / CIFAR100_TEST[0], xt, yt, "fine_labels")
    _note(inner, "CIFAR-100 (ten of its hundred labels used)", len(y), len(yt))
    return inner
