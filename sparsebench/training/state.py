"""Where a run stands, and the checkpoint that carries it across restarts.

A restarted run resumes from its last epoch checkpoint and ends with exactly the result an
uninterrupted run gets (on CPU): the data order and augmentation of an epoch depend only on the
seed and the epoch; everything else (model, optimizer, schedule, engine, method, RNG, progress)
is in the checkpoint. Files and their damage handling: :mod:`sparsebench.checkpoints`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .loop import Trainer


@dataclass
class Progress:
    """Everything about where a run stands that a checkpoint must carry."""

    epoch: int = 0                  # epochs completed in the current round
    step: int = 0                   # optimizer steps completed (all rounds)
    elapsed_s: float = 0.0          # training wall-clock over all sessions
    update_s: float = 0.0           # of which in method hooks (mask updates)
    best_test_acc: float = -math.inf  # with data.validation: the test accuracy at best_val_acc
    best_val_acc: float = -math.inf
    history: list[dict] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    examples_seen: int = 0          # training examples processed (steps x batch)
    train_flops: float = 0.0        # summed over the actual run, see sparsebench.flops
    round: int = 0                  # current round (methods with several rounds, e.g. Lottery)
    rounds: list[dict] = field(default_factory=list)   # one summary per finished round


def checkpoint_state(trainer: "Trainer") -> dict:
    """The whole state of a run, as plain containers and tensors (loadable weights-only)."""
    return {
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "engine": trainer.engine.state_dict(),
        "method": trainer.method.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if trainer.cuda else None,
        "progress": trainer.progress.__dict__,
        "callbacks": {type(cb).__name__: state for cb in trainer.callbacks
                      if (state := cb.state_dict()) is not None},
    }


def apply_checkpoint(trainer: "Trainer", state: dict) -> None:
    """Put ``trainer`` where :func:`checkpoint_state` found it."""
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.engine.load_state_dict(state["engine"])
    trainer.method.load_state_dict(state["method"])
    torch.set_rng_state(state["rng_cpu"].cpu())
    if trainer.cuda and state["rng_cuda"] is not None:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
    trainer.progress = Progress(**state["progress"])
    saved = state.get("callbacks", {})  # absent in checkpoints written before callbacks had state
    for cb in trainer.callbacks:
        if type(cb).__name__ in saved:
            cb.load_state_dict(saved[type(cb).__name__])
