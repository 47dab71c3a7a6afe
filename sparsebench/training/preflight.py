"""The checks a resolved config passes before anything is written or submitted.

:func:`sparsebench.resolve.resolve` checks each field on its own; this pass checks what
needs the environment or several fields at once, so that ``sparsebench.train`` and
``sparsebench.sweep`` (for every cell, before submitting any) stop with exit code 2 and one
line instead of recording a ``failed`` run:

* the data set is installed (``data.root``, when given, exists and holds it);
* the device exists (``device=cuda`` needs a CUDA device torch can see; inside a SLURM job
  allocated GPUs, any device does: :mod:`sparsebench.training.device`), unless
  ``device=False``: a sweep submitted to SLURM leaves that check to the node its run starts on;
* ImageNet has a torchvision that imports beside the installed torch (the release built for
  it: :mod:`sparsebench.torch_versions`), else the line names the pair to install;
* one training batch fits in the training set (``data.batch_size`` against its size, after
  ``data.train_subset``), since the trainer drops the last partial batch (the same count gives
  a plan its steps per epoch: :func:`steps_per_epoch`);
* the trackers asked for (``tracking.*``) are installed;
* ``model.width`` leaves every layer at least one unit: models round each layer's size and
  keep at least one unit, so a tiny width would quietly train e.g. a 784-1-1-10 MLP.

Every failure is a :class:`~sparsebench.config.schema.ConfigError` naming the field. Where a
cluster's data is visible only on its compute nodes, ``data=False`` (``sweep
--skip-data-check``) leaves the data checks to the job, which runs them again and fails the
run with the same one-line message.
"""
from __future__ import annotations

import functools
import gzip
import math
from pathlib import Path

import torch
from torch import nn

from .. import methods, torch_versions
from . import tracking
from ..config.schema import ConfigError, RunConfig
from ..data import dataset_spec, find_root, idx, search_paths
from .device import check_device

# Training-set sizes of the pickle data sets (fixed by their archives); IDX files carry theirs
# in the header, and an ImageFolder tree is not counted (a walk over a million files).
_TRAIN_SIZES = {"cifar10": 50_000, "cifar100": 50_000}
# One example's shape, for building a model's layers without loading its data.
_IN_SHAPES = {"fashion_mnist": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32),
              "cifar100": (3, 32, 32), "imagenet": (3, 224, 224)}


def check(cfg: RunConfig, *, data: bool = True, device: bool = True) -> None:
    """Raise ConfigError for the first problem found (see the module docstring)."""
    if device:
        check_device(cfg.device)
    check_vision(cfg)
    check_width(cfg)
    tracking.check_installed(cfg)
    if data:
        folder = check_data(cfg)
        check_batch(cfg, train_size(cfg.data.name, folder))


def check_vision(cfg: RunConfig) -> None:
    if cfg.data.name == "imagenet":
        problem = torch_versions.vision_problem()
        if problem:
            raise ConfigError("data.name", f"got 'imagenet', which needs torchvision: {problem}")


def check_data(cfg: RunConfig) -> Path:
    """The data set's folder; ConfigError (one line) when it is not there."""
    name, root = cfg.data.name, cfg.data.root
    if root is not None and not Path(root).is_dir():
        raise ConfigError("data.root", f"{root} does not exist or is not a folder; "
                                       f"to get {name}: {dataset_spec(name).how_to_get}")
    try:
        return find_root(name, root)
    except FileNotFoundError:
        looked = [Path(root)] if root is not None else search_paths(name)
        field = "data.root" if root is not None else "data.name"
        raise ConfigError(field, f"data set {name!r} not found (looked in "
                                 f"{', '.join(map(str, looked))}); to get it: "
                                 f"{dataset_spec(name).how_to_get}") from None


def train_size(name: str, folder: Path) -> int | None:
    """Examples in the training split, without decoding it (None where unknown)."""
    if name in _TRAIN_SIZES:
        return _TRAIN_SIZES[name]
    if name in ("fashion_mnist", "mnist"):
        d = idx.mnist_dir(folder)
        if d is None:
            return None
        stem = idx.MNIST_FILES["y_train"]
        for path in (d / (stem + ".gz"), d / stem):
            if path.is_file():
                try:
                    with open(path, "rb") as f:
                        raw = f.read(2)
                    opener = gzip.open if raw == b"\x1f\x8b" else open
                    with opener(path, "rb") as f:
                        header = f.read(8)  # magic (4 bytes), then the count, big-endian
                    return int.from_bytes(header[4:8], "big") if len(header) == 8 else None
                except OSError:
                    return None  # a damaged file: the reader's own error says more
    return None


def trained_examples(cfg: RunConfig, size: int) -> tuple[int, str]:
    """The examples a run trains on, of a training split of ``size`` (after
    ``data.train_subset`` and ``data.validation``), and where that number comes from."""
    subset = cfg.data.train_subset
    if subset is not None and subset < size:
        size, what = subset, f"data.train_subset={subset} examples"
    else:
        what = f"{size} training examples in {cfg.data.name}"
    held = cfg.data.validation
    if held is not None:
        if held >= size:
            raise ConfigError("data.validation", f"got {held}, the whole of the {what}; "
                                                 f"allowed: 1 to {size - 1}")
        size, what = size - held, f"{size - held} training examples left after data.validation"
    return size, what


def steps_per_epoch(cfg: RunConfig) -> int | None:
    """Optimizer steps in one epoch, as the trainer's loader makes them (full batches of the
    global ``data.batch_size`` only), without loading the data; None where the training split's
    size is not known here (the data set not found, ImageNet)."""
    try:
        folder = find_root(cfg.data.name, cfg.data.root)
    except FileNotFoundError:
        return None
    size = train_size(cfg.data.name, folder)
    if size is None:
        return None
    return trained_examples(cfg, size)[0] // cfg.data.batch_size


# What :func:`few_updates_warning` says of a dynamic run whose steps are not known here.
UNKNOWN_STEPS = "unknown steps"


def few_updates_warning(cfg: RunConfig) -> str | None:
    """:func:`sparsebench.methods.few_updates_warning` for the run ``cfg`` (its steps from
    :func:`steps_per_epoch`): the line, None when the method is not dynamic or its schedule
    fits, :data:`UNKNOWN_STEPS` when the steps are not known here."""
    method = methods.get(cfg.method.name)
    if not method.dynamic:
        return None
    per_epoch = steps_per_epoch(cfg)
    if per_epoch is None:
        return UNKNOWN_STEPS
    return methods.few_updates_warning(method, method.Params(**cfg.method.params),
                                       total_steps=cfg.epochs * per_epoch,
                                       steps_per_epoch=per_epoch)


def check_batch(cfg: RunConfig, size: int | None) -> None:
    if size is None:
        return
    size, what = trained_examples(cfg, size)
    if cfg.data.batch_size > size:
        raise ConfigError("data.batch_size", f"got {cfg.data.batch_size}, more than the "
                                             f"{what} (the trainer keeps full batches only); "
                                             f"allowed: 1 to {size}")


@functools.lru_cache(maxsize=32)  # a sweep checks many cells of the same few models
def _layer_sizes(model_name: str, width: float, num_classes: int,
                 in_shape: tuple[int, ...]) -> tuple[tuple[str, int], ...]:
    from ..models import build_model

    with torch.device("meta"):  # shapes only: no memory, no initialization cost
        model = build_model(model_name, num_classes=num_classes, in_shape=in_shape, width=width)
    return tuple((name, m.out_features if isinstance(m, nn.Linear) else m.out_channels)
            for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d)))


def check_width(cfg: RunConfig) -> None:
    """Every hidden layer keeps at least half a unit before rounding (one unit after)."""
    width = cfg.model.width
    if width >= 1:
        return
    full = _layer_sizes(cfg.model.name, 1.0, dataset_spec(cfg.data.name).num_classes, _IN_SHAPES[cfg.data.name])
    # The classifier's outputs are the classes, whatever the width.
    hidden = [(name, n) for name, n in full[:-1] if n > 0]
    if not hidden:
        return
    name, smallest = min(hidden, key=lambda item: item[1])
    if smallest * width < 0.5:
        least = math.ceil(0.5 / smallest * 1e4) / 1e4
        raise ConfigError("model.width", f"got {width:g}: layer {name} ({smallest} units at width "
                                         f"1) would have {smallest * width:.2g} units, rounded up "
                                         f"to 1; allowed for {cfg.model.name}: a width >= {least:g}")
