"""Which device a run trains on, and the one check that needs the machine the run is on.

A run's device is checked where the run starts: on a SLURM cluster that is the compute node,
not the (often GPU-less) login node that submitted it. Inside a SLURM job that was allocated
GPUs, a torch that sees no CUDA device is an error whatever ``device`` says (``auto`` would
otherwise train on the CPU for days): the usual causes are a CPU-only torch build or a
missing ``module load cuda`` in the sweep's ``slurm.setup``.
"""
from __future__ import annotations

import os

import torch

from ..config.schema import ConfigError

# Variables SLURM sets in a job (or step) that was given GPUs: lists of GPU indices ("0",
# "0,1"), then counts, possibly typed ("2", "a100:2"), where 0 means none.
SLURM_GPU_INDICES = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS")
SLURM_GPU_COUNTS = ("SLURM_GPUS_ON_NODE", "SLURM_GPUS", "SLURM_GPUS_PER_NODE",
                    "SLURM_GPUS_PER_TASK")


def slurm_gpu_allocation() -> str | None:
    """``NAME=value`` of the first variable saying this SLURM job holds GPUs, else None."""
    for name in SLURM_GPU_INDICES + SLURM_GPU_COUNTS:
        value = os.environ.get(name, "").strip()
        if not value or value in ("N/A", "(null)"):
            continue
        if name in SLURM_GPU_COUNTS and value.rsplit(":", 1)[-1] in ("0", ""):
            continue
        return f"{name}={value}"
    return None


def _no_cuda_reason() -> str:
    build = ("a CPU-only build" if torch.version.cuda is None
             else f"built for CUDA {torch.version.cuda}")
    return f"torch {torch.__version__}, {build}"


def check_device(name: str) -> None:
    """ConfigError (field ``device``) when the device cannot be had on this machine."""
    if torch.cuda.is_available():
        return
    allocated = slurm_gpu_allocation()
    if allocated:
        raise ConfigError("device", f"got {name!r} in a SLURM job that was allocated GPUs "
                                    f"({allocated}) but torch sees no CUDA device "
                                    f"({_no_cuda_reason()}); install a CUDA build of torch or load "
                                    f"the cluster's CUDA module (slurm.setup: ['module load cuda'])")
    if name == "cuda":
        raise ConfigError("device", f"got 'cuda' but torch sees no CUDA device here "
                                    f"({_no_cuda_reason()}); allowed here: auto, cpu")


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA where torch sees a device, else the CPU; raises ConfigError as
    :func:`check_device` does."""
    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
