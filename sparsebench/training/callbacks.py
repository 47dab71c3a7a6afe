"""The hook point for per-step and per-epoch concerns that are not a sparse-training method.

A :class:`Callback` is told when a run starts, after every optimizer step, after every
evaluated epoch and when the run ends; the trainer calls every callback in its ``callbacks``
list at those moments, in order (open_lth's ``standard_callbacks`` in spirit). Progress
display, experiment tracking, gradient statistics, an EMA of the weights: each is one
subclass overriding only the moments it needs. A callback must not change the training
trajectory unless that is its purpose (an EMA does not; gradient clipping belongs in the
step), and should not force a host-device synchronization on every step.

Methods (``sparsebench.methods``) change the topology; callbacks observe the run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

if TYPE_CHECKING:
    import torch

    from .loop import Trainer


@dataclass
class StepEnd:
    """What a callback sees after one optimizer step."""

    step: int                       # optimizer steps completed in the run (all rounds)
    epoch: int                      # index of the epoch in its round, from 0
    round: int
    loss: "torch.Tensor"            # the step's loss, on the device (reading it syncs a GPU)
    output: "torch.Tensor"
    batch_size: int                 # examples of this rank's batch
    correct: "torch.Tensor"         # of them classified right, on the device (the loop's count)


class Callback:
    """Override what you need; every moment is a no-op here."""

    def on_run_start(self, trainer: "Trainer") -> None:
        pass

    def on_step_end(self, trainer: "Trainer", step: StepEnd) -> None:
        pass

    def on_epoch_end(self, trainer: "Trainer", row: dict[str, Any]) -> None:
        pass

    def on_run_end(self, trainer: "Trainer", status: str) -> None:
        pass

    # A callback with state that must survive a restart (the topology statistics' ever-active
    # sets) returns it here; it travels in the run's checkpoint, keyed by the class's name,
    # and comes back through load_state_dict before on_run_start.
    def state_dict(self) -> dict | None:
        return None

    def load_state_dict(self, state: dict) -> None:
        pass


class ProgressBar(Callback):
    """A tqdm bar over the run's steps (all rounds), on rank 0 when ``progress: true``."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def on_run_start(self, trainer: "Trainer") -> None:
        cfg = trainer.cfg
        self.bar = tqdm(total=trainer.total_steps * trainer.rounds, initial=trainer.progress.step,
                        desc=f"{cfg.method.name} d={cfg.density:g}", unit="step",
                        disable=not self.enabled, leave=False, dynamic_ncols=True)

    def on_step_end(self, trainer: "Trainer", step: StepEnd) -> None:
        if self.bar is not None:  # None where epochs are driven without run() (benchmarks)
            self.bar.update(1)

    def on_epoch_end(self, trainer: "Trainer", row: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row['test_acc']:.2f}")

    def on_run_end(self, trainer: "Trainer", status: str) -> None:
        if self.bar is not None:
            self.bar.close()
