"""Where a run stands, and the checkpoint that carries it across restarts.

A restarted run resumes from its last epoch checkpoint and ends with exactly the result an
uninterrupted run gets (on CPU): the data order and augmentation of an epoch depend only on the
seed and the epoch; everything else (model, optimizer, schedule, engine, method, RNG, progress)
is in the checkpoint. Files and their damage handling: :mod:`sparsebench.storage.checkpoints`.

A data-parallel run's ranks hold the same model, optimizer, engine and progress, but each its
own random-number generators (a rank's CUDA generator drives its own dropout, say): the
checkpoint keeps every rank's generator states, in rank order, and each rank restores its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from .. import distributed
from ..storage import checkpoints

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
    mask_updates: int = 0           # topology changes so far (result.json's mask_updates)


def rng_state(cuda: bool) -> dict:
    """This process's generator states: the CPU's and, on CUDA, every visible device's."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if cuda else None}


def set_rng_state(state: dict, cuda: bool) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    if cuda and state["cuda"] is not None:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def checkpoint_state(trainer: "Trainer", *, all_ranks: bool = True) -> dict:
    """The whole state of a run, as plain containers and tensors (loadable weights-only).
    With several ranks and ``all_ranks`` every rank must call it (it gathers their generator
    states); ``all_ranks=False`` keeps this rank's alone (a snapshot to roll back to)."""
    rng = rng_state(trainer.cuda)
    return {
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "engine": trainer.engine.state_dict(),
        "method": trainer.method.state_dict(),
        "rng": distributed.gather_objects(rng) if all_ranks else [rng],   # per rank, in order
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
    ranks = state["rng"]
    # A run resumed on more ranks than it saved: the new ranks continue rank 0's streams.
    set_rng_state(ranks[trainer.world.rank] if trainer.world.rank < len(ranks) else ranks[0],
                  trainer.cuda)
    trainer.progress = Progress(**state["progress"])
    saved = state.get("callbacks", {})  # absent in checkpoints written before callbacks had state
    for cb in trainer.callbacks:
        if type(cb).__name__ in saved:
            cb.load_state_dict(saved[type(cb).__name__])


def resume_checkpoint(path: Path, current: Callable[[], dict], apply: Callable[[dict], None], *,
           map_location: Any = None, log: Callable[[str], None] = lambda message: None) -> bool:
    """:func:`~sparsebench.storage.checkpoints.load` on one rank or several; returns whether a checkpoint was applied.

    With several ranks, only rank 0 looks at the files (so one process renames a damaged one,
    and says so once); the others wait for its choice, then read that same generation. Rank 0
    writes no checkpoint before the next epoch ends, which needs every rank, so the chosen
    file stays in place while they read it.
    """
    world = distributed.current()
    chosen = checkpoints.load(path, current, apply, map_location=map_location, log=log) if world.is_main else None
    chosen = distributed.broadcast_object(None if chosen is None else str(chosen))
    if chosen is None:
        return False
    if not world.is_main:
        apply(checkpoints.read(Path(chosen), map_location))
    return True
