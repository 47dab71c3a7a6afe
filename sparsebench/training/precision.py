"""How a run computes on its device: autocast, TF32, cuDNN autotuning, memory format.

Each is a run setting (``amp``, ``tf32``, ``cudnn_benchmark``, ``channels_last`` in
:class:`sparsebench.config.schema.RunConfig`) that also takes effect on the CPU wherever torch has a
CPU counterpart, so that tests reach every branch a GPU run takes:

=====================  ===================================================================
``amp``                ``auto``: bf16 autocast on CUDA, none on the CPU; ``bf16``: bf16
                       autocast on any device (``torch.autocast("cpu", dtype=bfloat16)`` on
                       the CPU); ``false``: fp32. (fp16 is not offered: it needs loss scaling,
                       whose overflow check syncs the host on every step.)
``tf32``               TF32 tensor-core math for float32 matmuls and cuDNN convolutions
                       (``torch.backends.cuda.matmul.allow_tf32``, ``torch.backends.cudnn.
                       allow_tf32``, as the GSE authors' ``training.py`` sets them); ``false``
                       switches both off (strict fp32). No effect on the CPU.
``cudnn_benchmark``    cuDNN's autotuner (``torch.backends.cudnn.benchmark``). No effect on the
                       CPU.
``channels_last``      ``auto``: on CUDA for image input; ``true``: for image input on any
                       device; ``false``: never. Model and input batches are converted.
=====================  ===================================================================

The backend flags are process-wide: every run sets all of them when it starts, so that one
run's choice never leaks into the next run of the same process (the inline executor, tests).
:meth:`Precision.record` is what result.json says was in effect.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

AMP_DTYPES = {"bf16": torch.bfloat16}


@dataclass(frozen=True)
class Precision:
    device_type: str                    # "cuda" or "cpu"
    amp_dtype: torch.dtype | None       # autocast dtype; None: fp32
    channels_last: bool                 # model and inputs in channels-last memory format
    tf32: bool
    cudnn_benchmark: bool

    @classmethod
    def for_run(cls, cfg, device: torch.device, image_input: bool) -> "Precision":
        """The settings of ``cfg`` resolved for ``device`` (``auto`` becomes what it means there)."""
        cuda = device.type == "cuda"
        amp = ("bf16" if cuda else False) if cfg.amp == "auto" else cfg.amp
        channels_last = cuda if cfg.channels_last == "auto" else cfg.channels_last
        return cls(device_type=device.type, amp_dtype=AMP_DTYPES[amp] if amp else None,
                   channels_last=bool(channels_last and image_input), tf32=cfg.tf32,
                   cudnn_benchmark=cfg.cudnn_benchmark)

    def apply(self) -> None:
        """Set the process-wide backend flags (all of them, see the module's docstring)."""
        torch.backends.cuda.matmul.allow_tf32 = self.tf32
        torch.backends.cudnn.allow_tf32 = self.tf32
        torch.backends.cudnn.benchmark = self.cudnn_benchmark

    def autocast(self):
        """The context forward passes run in (training, evaluation, scoring)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.amp_dtype)

    def memory_format(self, x: torch.Tensor) -> torch.Tensor:
        """An input batch in the model's memory format."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def record(self) -> dict:
        """What was in effect, read back from torch where torch holds it (result.json)."""
        return {
            "amp": next((k for k, v in AMP_DTYPES.items() if v == self.amp_dtype), None),
            "autocast_device": self.device_type if self.amp_dtype is not None else None,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "channels_last": self.channels_last,
        }
