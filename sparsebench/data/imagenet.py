"""ImageNet from an ImageFolder tree (root/train/<class>/*.JPEG, root/val/<class>/*.JPEG).

torchvision is an optional dependency, the release built for the installed torch
(sparsebench/torch_versions.py; `make setup VISION=1`), imported only inside load_imagenet,
so the rest of sparsebench works without it. Preflight checks it before a run or sweep starts.
"""

from __future__ import annotations

import os
import pathlib
from typing import Iterator

import torch

from .loader import epoch_seed, share

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# The standard pipeline's sizes: train RandomResizedCrop(CROP), evaluate Resize(RESIZE) then
# CenterCrop(CROP). (The tests shrink both to train a reduced-resolution ResNet-50 quickly.)
CROP, RESIZE = 224, 256


class DeviceLoader:
    """Wraps a DataLoader into the TensorLoader interface; batches are moved to `device`.

    Shuffling and the workers' base seed come from a generator reseeded from
    (seed, epoch) at every iteration. Workers are not persistent, since persistent
    workers keep the RNG state of the first epoch and a resumed run would differ.
    With num_workers > 0 the augmentations are then reproducible too (each worker's
    torch RNG is seeded from the base seed); with num_workers=0 they use the global RNG.
    With several ranks each takes its share of every global batch (:class:`GlobalBatchShards`).
    """

    def __init__(self, dataset, batch_size: int, *, shuffle: bool, drop_last: bool,
                 device: torch.device, seed: int = 0, num_workers: int = 0, classes=(),
                 rank: int = 0, world_size: int = 1):
        self.dataset = dataset
        self.classes = list(classes)
        self.device = torch.device(device)
        self.seed, self.epoch = seed, 0
        self.batch_size = batch_size
        self.generator = torch.Generator()
        batches = GlobalBatchShards(len(dataset), batch_size, shuffle=shuffle, drop_last=drop_last,
                                    generator=self.generator, rank=rank, world_size=world_size)
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=batches, num_workers=num_workers, pin_memory=self.device.type == "cuda",
            generator=self.generator, persistent_workers=False,
        )

    @property
    def num_examples(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.generator.manual_seed(epoch_seed(self.seed, self.epoch))
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class GlobalBatchShards(torch.utils.data.Sampler):
    """A distributed batch sampler: one permutation of the data set per epoch (from
    ``generator``, which the loader reseeds from (seed, epoch)), cut into global batches of
    ``batch_size``, of which this rank yields its contiguous share. Unlike torch's
    DistributedSampler, N ranks together see exactly the global batches one process sees."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, drop_last: bool,
                 generator: torch.Generator, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size = n, batch_size
        self.shuffle, self.drop_last, self.generator = shuffle, drop_last, generator
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        for i in range(len(self)):
            start = i * self.batch_size
            lo, hi = share(min(self.batch_size, self.n - start), self.rank, self.world_size)
            yield order[start + lo:start + hi].tolist()


def load_imagenet(root: str | pathlib.Path, batch_size: int, *, train: bool,
                  device: torch.device | str = "cpu", seed: int = 0,
                  num_workers: int | None = None, subset: int | None = None,
                  augment: bool | None = None, rank: int = 0, world_size: int = 1) -> DeviceLoader:
    """A loader over root/train (shuffled, RandomResizedCrop 224 + flip) or root/val
    (in order, resize 256 + center crop 224; see CROP and RESIZE).

    augment overrides the choice of pipeline (None: augment iff train). subset keeps
    the first `subset` images (for smoke tests); rank and world_size: this rank's share of each
    global batch of ``batch_size``. Raises RuntimeError when torchvision
    cannot be imported.
    """
    from .. import torch_versions

    problem = torch_versions.vision_problem()
    if problem:
        raise RuntimeError(f"torchvision is needed for ImageNet: {problem}")
    from torchvision import datasets, transforms
    split = pathlib.Path(root) / ("train" if train else "val")
    if not split.is_dir():
        raise FileNotFoundError(f"{split}: missing (expected an ImageFolder tree {split}/<class>/*.JPEG)")
    use_aug = train if augment is None else augment
    if use_aug:
        aug = [transforms.RandomResizedCrop(CROP), transforms.RandomHorizontalFlip()]
    else:
        aug = [transforms.Resize(RESIZE), transforms.CenterCrop(CROP)]
    tf = transforms.Compose([*aug, transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    ds = datasets.ImageFolder(str(split), transform=tf)
    classes = ds.classes
    if subset is not None:
        ds = torch.utils.data.Subset(ds, range(min(subset, len(ds))))
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1)
    return DeviceLoader(ds, batch_size, shuffle=train, drop_last=train, device=torch.device(device),
                        seed=seed, num_workers=num_workers, classes=classes, rank=rank,
                        world_size=world_size)
