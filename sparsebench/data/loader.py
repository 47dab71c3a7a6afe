"""Batching of small data sets that live entirely as tensors on the training device.

The idea follows airbench's CifarLoader: normalize once, then make each batch by
indexing and augment whole batches with vectorized ops (no per-sample Python loop).

Determinism: all randomness of epoch e (the shuffle and the augmentation) is drawn
at the start of the epoch from a fresh CPU torch.Generator seeded from (seed, e).
So a run resumed from an end-of-epoch checkpoint replays exactly the same batches,
whatever was iterated before, and the global RNG is never touched.

Data-parallel runs (sparsebench.distributed): every rank draws the same epoch (the generator
depends on the seed and the epoch only) and takes its contiguous share of each global batch,
so N ranks together see exactly the batches one process sees.
"""

from __future__ import annotations

import hashlib
from typing import Iterator, Protocol

import torch

AUGMENTS = (None, "crop_flip")


class Loader(Protocol):
    """What the trainer needs from a loader."""

    def set_epoch(self, epoch: int) -> None: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed derived from (seed, epoch) by hashing.

    Hashing (instead of e.g. seed * K + epoch) keeps different (seed, epoch) pairs
    from colliding and decorrelates neighbouring epochs.
    """
    digest = hashlib.sha256(f"sparsebench:{int(seed)}:{int(epoch)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A fresh CPU generator for epoch `epoch` of a run with seed `seed`."""
    return torch.Generator(device="cpu").manual_seed(epoch_seed(seed, epoch))


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, pad: int,
              fill: torch.Tensor | None = None) -> torch.Tensor:
    """Crop each image of `x` (B, C, H, W) from its padded version, then maybe flip it.

    The border is ``fill`` (one value per channel, shape (C,)), or 0 where None. Example b is
    cropped at offset (dy[b], dx[b]) in [0, 2*pad] of the padded image and mirrored
    horizontally where flip[b]. Offsets (pad, pad) with no flip return x unchanged.
    Done as one gather with broadcast index tensors, so it is vectorized over the batch.
    """
    b, c, h, w = x.shape
    if fill is None:
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    else:
        padded = fill.to(x.device, x.dtype).view(1, c, 1, 1).repeat(b, 1, h + 2 * pad, w + 2 * pad)
        padded[:, :, pad:pad + h, pad:pad + w] = x
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = torch.arange(w, device=x.device).expand(b, w)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + dx[:, None]  # (B, W)
    return padded[
        torch.arange(b, device=x.device)[:, None, None, None],
        torch.arange(c, device=x.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


class TensorLoader:
    """Batches of (x, y) tensors already on the device.

    x: float (N, C, H, W), already normalized; y: int64 (N,), same device.
    augment: None, or "crop_flip" (random crop with 4-pixel padding + random
    horizontal flip, per example).
    pad_fill: the padding's value per channel, shape (C,), in x's (normalized) units; None: 0.
    torchvision's ``RandomCrop(32, padding=4)`` before ``Normalize`` pads with a black raw
    pixel, which is (0 - mean) / std here (:func:`sparsebench.data.build_data` passes that).
    rank, world_size: this process yields only its share of each batch of ``batch_size``
    (the global batch), see :func:`share`.
    """

    PAD = 4

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        augment: str | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pad_fill: torch.Tensor | None = None,
    ):
        if x.dim() != 4 or len(x) != len(y):
            raise ValueError(f"need x (N, C, H, W) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
        if x.device != y.device:
            raise ValueError(f"x on {x.device} but y on {y.device}")
        if augment not in AUGMENTS:
            raise ValueError(f"unknown augment {augment!r}; choose from {AUGMENTS}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if drop_last and len(x) < batch_size:
            # An epoch of zero batches would silently train on nothing.
            raise ValueError(f"drop_last with {len(x)} examples < batch_size {batch_size} gives no batches")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.augment = augment
        if pad_fill is not None and pad_fill.shape != (x.shape[1],):
            raise ValueError(f"pad_fill needs one value per channel ({x.shape[1]}), got "
                             f"{tuple(pad_fill.shape)}")
        self.pad_fill = pad_fill
        self.seed = seed
        self.epoch = 0
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.rank, self.world_size = rank, world_size

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def num_examples(self) -> int:
        return len(self.x)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose randomness the next iteration uses."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n, bs = len(self.x), self.batch_size
        return n // bs if self.drop_last else -(-n // bs)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, dev = len(self.x), self.device
        gen = epoch_generator(self.seed, self.epoch)
        # Draw everything for the whole epoch up front and in a fixed order, so the
        # batches do not depend on how far a previous iteration got.
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        if self.augment == "crop_flip":
            offsets = torch.randint(0, 2 * self.PAD + 1, (2, n), generator=gen)
            flips = torch.rand(n, generator=gen) < 0.5
            offsets, flips = offsets.to(dev), flips.to(dev)
        order = order.to(dev)
        for i in range(len(self)):
            start = i * self.batch_size
            lo, hi = share(min(self.batch_size, n - start), self.rank, self.world_size)
            pos = slice(start + lo, start + hi)
            idx = order[pos]
            xb = self.x[idx]
            if self.augment == "crop_flip":
                xb = crop_flip(xb, offsets[0, pos], offsets[1, pos], flips[pos], self.PAD,
                               self.pad_fill)
            yield xb, self.y[idx]


def share(batch: int, rank: int, world_size: int) -> tuple[int, int]:
    """[lo, hi) of rank ``rank``'s contiguous share of a batch of ``batch`` examples; the
    shares differ by at most one (as ``torch.tensor_split``) and cover the batch in rank order."""
    q, r = divmod(batch, world_size)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (rank < r)
