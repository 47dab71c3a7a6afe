"""Readers for the CIFAR-10 / CIFAR-100 "python version" pickle folders.

Layouts (as extracted from cifar-10-python.tar.gz / cifar-100-python.tar.gz):
  cifar-10-batches-py/  data_batch_1..5, test_batch   keys b"data" (N, 3072 uint8), b"labels"
  cifar-100-python/     train, test                    keys b"data", b"fine_labels"
The folder passed in may be that directory itself or its parent.

These folders are Python pickles, and unpickling a file can run any code in it: sparsebench
reads them only from the data folder you point it at, and so should only be pointed at files
from a source you trust (the archives from https://www.cs.toronto.edu/~kriz/cifar.html).
"""

from __future__ import annotations

import pathlib
import pickle

import numpy as np
import torch

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = ("test_batch",)
CIFAR100_TRAIN = ("train",)
CIFAR100_TEST = ("test",)


def resolve_dir(folder: str | pathlib.Path, inner: str, marker: str) -> pathlib.Path | None:
    """Return `folder` or `folder/inner`, whichever holds the file `marker`; else None."""
    folder = pathlib.Path(folder)
    for d in (folder / inner, folder):
        if (d / marker).is_file():
            return d
    return None


def _read_batch(path: pathlib.Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise
    except Exception as e:  # unpickling garbage raises many different types
        raise ValueError(f"{path}: not a CIFAR pickle ({type(e).__name__}: {e}); CIFAR batches "
                         f"are read with pickle, which runs code from the file: use only the "
                         f"archives of a source you trust") from e
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a dict, got {type(d).__name__}")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or label_key not in d:
        raise ValueError(f"{path}: missing key 'data' or {label_key!r} (has {sorted(d)})")
    data = np.asarray(d["data"])
    labels = np.asarray(d[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: expected uint8 data of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {labels.shape} labels for {data.shape[0]} images")
    return data, labels


def _read_split(folder: pathlib.Path, files: tuple[str, ...], label_key: str):
    parts = [_read_batch(folder / name, label_key) for name in files]
    # concatenate copies, so the tensors own writable memory (pickled arrays may not be).
    x = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
    y = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(x), torch.from_numpy(y)


def _load(folder, inner, train_files, test_files, label_key):
    d = resolve_dir(folder, inner, test_files[0])
    if d is None:
        raise FileNotFoundError(f"{folder}: no {test_files[0]} in it or in {inner}/")
    return (*_read_split(d, train_files, label_key), *_read_split(d, test_files, label_key))


def load_cifar10(folder: str | pathlib.Path):
    """(x_train, y_train, x_test, y_test): uint8 (N, 3, 32, 32) images, int64 labels."""
    return _load(folder, CIFAR10_DIR, CIFAR10_TRAIN, CIFAR10_TEST, "labels")


def load_cifar100(folder: str | pathlib.Path):
    """(x_train, y_train, x_test, y_test) with the 100 fine labels."""
    return _load(folder, CIFAR100_DIR, CIFAR100_TRAIN, CIFAR100_TEST, "fine_labels")
