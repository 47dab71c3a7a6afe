"""Readers for the IDX format used by MNIST and Fashion-MNIST.

An IDX file is: two zero bytes, a dtype code, the number of dimensions, then one
big-endian uint32 per dimension, then the data (row-major, big-endian). Files may
be gzip-compressed; compression is detected from the content, not the file name.
"""

from __future__ import annotations

import gzip
import math
import pathlib
import struct
import zlib

import numpy as np
import torch

# IDX dtype code -> (big-endian numpy dtype, torch dtype)
_DTYPES = {
    0x08: (np.dtype(">u1"), torch.uint8),
    0x09: (np.dtype(">i1"), torch.int8),
    0x0B: (np.dtype(">i2"), torch.int16),
    0x0C: (np.dtype(">i4"), torch.int32),
    0x0D: (np.dtype(">f4"), torch.float32),
    0x0E: (np.dtype(">f8"), torch.float64),
}

# The four files of an MNIST-like data set, without the optional ".gz".
MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _read_bytes(path: pathlib.Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":  # not gzip: a plain IDX file
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: corrupt gzip data ({e})") from e


def read_idx(path: str | pathlib.Path) -> torch.Tensor:
    """Read one IDX file (gzipped or plain) into a tensor of the file's dtype.

    MNIST files are uint8, so they come back as torch.uint8. Raises ValueError
    naming the file when the magic number or the size does not match.
    """
    path = pathlib.Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES or data[3] == 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    np_dtype, _ = _DTYPES[data[2]]
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(dims) * np_dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{path}: IDX size mismatch: dims {dims} need {expected} bytes, file has {len(data)}"
        )
    arr = np.frombuffer(data, dtype=np_dtype, offset=header).reshape(dims)
    # astype to native byte order also copies, so the tensor owns writable memory.
    return torch.from_numpy(arr.astype(np_dtype.newbyteorder("="), copy=True))


def _find_file(folder: pathlib.Path, stem: str) -> pathlib.Path:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: neither {stem}.gz nor {stem} exists")


def mnist_dir(folder: str | pathlib.Path) -> pathlib.Path | None:
    """The folder holding the IDX files: `folder` itself or torchvision's `folder/raw`."""
    folder = pathlib.Path(folder)
    stem = MNIST_FILES["x_train"]
    for d in (folder, folder / "raw"):
        if (d / (stem + ".gz")).is_file() or (d / stem).is_file():
            return d
    return None


def load_mnist_like(
    folder: str | pathlib.Path,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Load an MNIST-like folder into (x_train, y_train, x_test, y_test).

    Images come back as uint8 (N, 1, H, W) (a channel axis is added so all data
    sets share the (N, C, H, W) layout), labels as int64 (N,).
    """
    folder = pathlib.Path(folder)
    d = mnist_dir(folder) or folder
    out = []
    for split in ("train", "test"):
        xp = _find_file(d, MNIST_FILES[f"x_{split}"])
        yp = _find_file(d, MNIST_FILES[f"y_{split}"])
        x, y = read_idx(xp), read_idx(yp)
        if x.dtype != torch.uint8 or x.dim() != 3:
            raise ValueError(f"{xp}: expected uint8 images with 3 dims, got {x.dtype} {tuple(x.shape)}")
        if y.dtype != torch.uint8 or y.dim() != 1:
            raise ValueError(f"{yp}: expected uint8 labels with 1 dim, got {y.dtype} {tuple(y.shape)}")
        if len(x) != len(y):
            raise ValueError(f"{yp}: {len(y)} labels for {len(x)} images in {xp.name}")
        out += [x.unsqueeze(1), y.long()]
    return tuple(out)  # type: ignore[return-value]
