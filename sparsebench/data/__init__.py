"""Data sets for sparsebench: finding them on disk and building train/test loaders.

Small data sets (the MNISTs, CIFAR) are decoded once per process, normalized once
on the training device and batched by TensorLoader; ImageNet streams from an
ImageFolder tree through torchvision (optional dependency).

Imports only :mod:`sparsebench.torch_versions` of sparsebench (which torchvision fits the
installed torch); training, scoring and the preflight checks import it.
"""

from __future__ import annotations

import functools
import os
import pathlib
from dataclasses import dataclass

import torch

from . import cifar, idx
from .imagenet import MEAN as MEAN_IMAGENET, STD as STD_IMAGENET
from .loader import Loader, TensorLoader
from .validation import hold_out

__all__ = ["DATASETS", "PAD_VALUES", "Data", "DatasetInfo", "Loader", "TensorLoader", "build_data",
           "find_root", "pad_fill"]

DATASETS: tuple[str, ...] = ("fashion_mnist", "mnist", "cifar10", "cifar100", "imagenet")

# What the random crop pads with (``data.pad_value``). black: a black raw pixel, normalized like
# the image, (0 - mean) / std per channel, as torchvision's RandomCrop(padding=4) before
# Normalize pads (the GSE authors' and most CIFAR code); mean: 0 after normalizing, the data
# set's mean colour (sparsebench before issue 26).
PAD_VALUES: tuple[str, ...] = ("black", "mean")

# System-wide location searched last (Debian's dataset-* packages install here).
SYSTEM_DIR = pathlib.Path("/usr/share/datasets")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_shape: tuple[int, int, int]
    train_size: int
    test_size: int


@dataclass
class Data:
    info: DatasetInfo
    train: Loader
    test: Loader
    validation: Loader | None = None    # data.validation: N examples held out of train


@dataclass(frozen=True)
class DatasetSpec:
    aliases: tuple[str, ...]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str | None  # default augmentation of the train loader
    how_to_get: str


_SPECS = {
    "fashion_mnist": DatasetSpec(
        ("fashion_mnist", "fashion-mnist", "FashionMNIST"), 10, (0.2860,), (0.3530,), None,
        "`apt-get install dataset-fashion-mnist` (or `make data`), or put the four IDX .gz files "
        "(train-images-idx3-ubyte.gz, ...) in ./data/fashion_mnist/",
    ),
    "mnist": DatasetSpec(
        ("mnist", "MNIST"), 10, (0.1307,), (0.3081,), None,
        "put the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in ./data/mnist/",
    ),
    "cifar10": DatasetSpec(
        ("cifar10", "cifar-10", cifar.CIFAR10_DIR), 10,
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "crop_flip",
        "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and "
        "extract it into ./data/cifar10/ (giving ./data/cifar10/cifar-10-batches-py/)",
    ),
    "cifar100": DatasetSpec(
        ("cifar100", "cifar-100", cifar.CIFAR100_DIR), 100,
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "crop_flip",
        "download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and "
        "extract it into ./data/cifar100/ (giving ./data/cifar100/cifar-100-python/)",
    ),
    "imagenet": DatasetSpec(
        ("imagenet", "ImageNet"), 1000, MEAN_IMAGENET, STD_IMAGENET, None,  # see imagenet.py
        "arrange ImageNet as an ImageFolder tree ./data/imagenet/{train,val}/<class>/*.JPEG "
        "and install torchvision (`pip install -e .[vision]`)",
    ),
}


def dataset_spec(name: str) -> DatasetSpec:
    """The registered facts of a data set (raises naming the allowed ones)."""
    if name not in _SPECS:
        raise ValueError(f"unknown data set {name!r}; choose from {DATASETS}")
    return _SPECS[name]


def _holds(name: str, folder: pathlib.Path) -> bool:
    """Whether `folder` holds data set `name` in a layout the readers understand."""
    if name in ("fashion_mnist", "mnist"):
        return idx.mnist_dir(folder) is not None
    if name == "cifar10":
        return cifar.resolve_dir(folder, cifar.CIFAR10_DIR, cifar.CIFAR10_TEST[0]) is not None
    if name == "cifar100":
        return cifar.resolve_dir(folder, cifar.CIFAR100_DIR, cifar.CIFAR100_TEST[0]) is not None
    return (folder / "train").is_dir() and (folder / "val").is_dir()


def search_paths(name: str) -> list[pathlib.Path]:
    bases = [pathlib.Path(os.environ["SPARSEBENCH_DATA"])] if os.environ.get("SPARSEBENCH_DATA") else []
    bases += [pathlib.Path.cwd() / "data", SYSTEM_DIR]
    return [base / alias for base in bases for alias in _SPECS[name].aliases]


def find_root(name: str, root: str | None = None) -> pathlib.Path:
    """The folder holding data set `name`.

    `root`, if given, is that folder itself. Otherwise the first folder holding the data
    among $SPARSEBENCH_DATA/<alias>, ./data/<alias>, /usr/share/datasets/<alias> is used.
    Raises FileNotFoundError listing every path looked in and how to get the data.
    """
    spec = dataset_spec(name)
    candidates = [pathlib.Path(root)] if root is not None else search_paths(name)
    for c in candidates:
        if _holds(name, c):
            return c
    looked = "\n".join(f"  {c}{'' if c.exists() else ' (missing)'}" for c in candidates)
    raise FileNotFoundError(f"data set {name!r} not found; looked in:\n{looked}\nTo get it: {spec.how_to_get}")


@functools.lru_cache(maxsize=4)
def _load_uint8(name: str, folder: str):
    """Decoded (x_train, y_train, x_test, y_test) on the CPU, cached per process.

    Callers must not modify the returned tensors in place (they are shared).
    """
    if name in ("fashion_mnist", "mnist"):
        return idx.load_mnist_like(folder)
    if name == "cifar10":
        return cifar.load_cifar10(folder)
    return cifar.load_cifar100(folder)


def pad_fill(name: str, pad_value: str) -> torch.Tensor | None:
    """The crop's padding per channel in normalized units (None: 0, the mean colour)."""
    spec = dataset_spec(name)
    if pad_value not in PAD_VALUES:
        raise ValueError(f"unknown pad_value {pad_value!r}; choose from {PAD_VALUES}")
    if pad_value == "mean":
        return None
    return (0.0 - torch.tensor(spec.mean)) / torch.tensor(spec.std)


def _normalize(x: torch.Tensor, spec: DatasetSpec, device: torch.device) -> torch.Tensor:
    # Copy uint8 to the device first (4x less traffic than float), then convert there.
    x = x.to(device).float().div_(255)
    mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std)


def build_data(name: str, *, batch_size: int, test_batch_size: int, device: torch.device, seed: int,
               augment: bool | None = None, root: str | None = None,
               train_subset: int | None = None, rank: int = 0, world_size: int = 1,
               pad_value: str = "black", validation: int | None = None) -> Data:
    """Train and test loaders for data set `name` (see DATASETS).

    augment: None = the data set's default (crop_flip for CIFAR, none for the MNISTs,
    the standard augmentations for ImageNet), True = on, False = off.
    train_subset keeps the first N training examples (for smoke tests).
    pad_value: what crop_flip pads with, see PAD_VALUES (black: as torchvision).
    validation holds N of the (remaining) training examples out (:mod:`.validation`).
    rank, world_size: a data-parallel run's rank gets its share of every global batch of
    ``batch_size`` / ``test_batch_size`` (sparsebench.distributed).
    """
    spec = dataset_spec(name)
    if train_subset is not None and train_subset < 1:
        raise ValueError(f"train_subset must be >= 1, got {train_subset}")
    device = torch.device(device)
    folder = find_root(name, root)
    if name == "imagenet":
        if validation:
            raise ValueError("data.validation: not available for imagenet (its own val split "
                             "is the test set here); allowed: null")
        return _build_imagenet(folder, batch_size, test_batch_size, device, seed, augment, train_subset,
                               rank, world_size)

    x_tr, y_tr, x_te, y_te = _load_uint8(name, str(folder.resolve()))
    if train_subset is not None:
        x_tr, y_tr = x_tr[:train_subset], y_tr[:train_subset]
    val = None
    if validation:
        x_tr, y_tr, x_val, y_val = hold_out(x_tr, y_tr, validation, seed)
        val = TensorLoader(_normalize(x_val, spec, device), y_val.to(device), test_batch_size,
                           shuffle=False, drop_last=False, augment=None, seed=seed, rank=rank,
                           world_size=world_size)
    aug = spec.augment if augment is None else ("crop_flip" if augment else None)
    train = TensorLoader(_normalize(x_tr, spec, device), y_tr.to(device), batch_size,
                         shuffle=True, drop_last=True, augment=aug, seed=seed, rank=rank,
                         world_size=world_size, pad_fill=pad_fill(name, pad_value))
    test = TensorLoader(_normalize(x_te, spec, device), y_te.to(device), test_batch_size,
                        shuffle=False, drop_last=False, augment=None, seed=seed, rank=rank,
                        world_size=world_size)
    info = DatasetInfo(name, spec.num_classes, tuple(x_tr.shape[1:]), len(x_tr), len(x_te))
    return Data(info, train, test, val)


def _build_imagenet(folder, batch_size, test_batch_size, device, seed, augment, train_subset,
                    rank, world_size) -> Data:
    from .imagenet import CROP, load_imagenet

    shard = {"rank": rank, "world_size": world_size}
    train = load_imagenet(folder, batch_size, train=True, device=device, seed=seed,
                          subset=train_subset, augment=augment, **shard)
    test = load_imagenet(folder, test_batch_size, train=False, device=device, seed=seed, **shard)
    info = DatasetInfo("imagenet", len(test.classes), (3, CROP, CROP), train.num_examples, test.num_examples)
    return Data(info, train, test)
