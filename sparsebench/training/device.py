"""Which device a run trains on."""
from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA where torch sees a device, else the CPU; ``cuda`` without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for but torch sees no CUDA device")
    return torch.device(name)
