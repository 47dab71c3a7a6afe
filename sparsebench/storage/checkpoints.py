"""Epoch checkpoints that are safe to load and never stick when damaged.

* **Safe to load.** ``torch.load(..., weights_only=True)``: tensors, plain containers and
  numbers only, plus the few types in :data:`ALLOWED_GLOBALS`. A checkpoint file planted in a
  shared scratch folder therefore cannot run code when a run resumes from it.
* **Two generations.** Saving keeps the current ``checkpoint.pt`` as ``checkpoint.prev.pt``
  only once the new one is completely on disk (:mod:`sparsebench.storage.atomic`), so one bad write (a
  full disk, a crash mid-write) loses at most one epoch, and ``checkpoint.pt`` is never absent
  in between: a run stopped mid-save keeps the older one under its usual name.
* **A damaged checkpoint is moved aside.** One that cannot be read or does not fit the run
  (truncated, empty, from another config) is renamed ``checkpoint.pt.corrupt-<UTC time>``, the
  run's log and the console say so naming both files, and the run resumes from the previous
  generation if that one is good, else from scratch, exactly as if there had been no file.
* **One chooser in a data-parallel run.** (:func:`sparsebench.training.state.resume_checkpoint`): rank 0 alone reads, chooses and moves
  damaged generations aside while the other ranks wait; they then load the generation rank 0
  applied (or all start from scratch).
"""
from __future__ import annotations

import copy
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from . import atomic, paths

# Non-tensor types a checkpoint may hold beyond what weights_only allows anyway (dicts, lists,
# tuples, numbers, strings, None, tensors, torch.Size/dtype/device). The trainer's state is all
# of those; a method plug-in whose state_dict needs another type appends it here.
ALLOWED_GLOBALS: list[Any] = []


def previous_of(path: Path) -> Path:
    """The older generation kept beside ``path``."""
    return Path(path).with_name(paths.CHECKPOINT_PREVIOUS)


def save(path: Path, state: dict) -> None:
    """Write ``state`` atomically to ``path``, keeping the generation before as the previous."""
    atomic.torch_save(path, state, previous=previous_of(path))


def remove(path: Path) -> None:
    """Delete both generations (a finished run needs neither)."""
    for p in (Path(path), previous_of(path)):
        p.unlink(missing_ok=True)


def read(path: Path, map_location: Any = None) -> dict:
    """The checkpoint at ``path``, loaded without running any code from the file."""
    with torch.serialization.safe_globals(ALLOWED_GLOBALS):
        state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"expected a dict of states, got {type(state).__name__}")
    return state


def move_aside(path: Path) -> Path:
    """Rename a damaged checkpoint to ``<name>.corrupt-<UTC time>`` and return the new path."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, target)
    return target


def _reason(err: BaseException) -> str:
    text = " ".join(line.strip() for line in str(err).strip().splitlines())
    return f"{type(err).__name__}: {text[:200]}"


def load(path: Path, current: Callable[[], dict], apply: Callable[[dict], None], *,
         map_location: Any = None, log: Callable[[str], None] = lambda message: None) -> Path | None:
    """Resume from the newest good generation; returns the file applied, or None.

    ``current()`` gives the state as it is now (the fresh run) and ``apply(state)`` loads a
    checkpoint's state into the run. A generation that fails to read or to apply is moved
    aside and reported through ``log`` and on stderr; if one failed half-way through
    ``apply``, the fresh state is applied back before the next is tried, so that starting
    from scratch really starts from scratch.
    """
    path = Path(path)
    candidates = [p for p in (path, previous_of(path)) if p.is_file()]
    fresh = None
    for candidate in candidates:
        try:
            state = read(candidate, map_location)
            if fresh is None:
                fresh = copy.deepcopy(current())
            apply(state)
        except Exception as err:  # any damage: unreadable, wrong structure, wrong shapes
            if fresh is not None:
                apply(fresh)
            moved = move_aside(candidate)
            _say(log, f"checkpoint {candidate} cannot be used ({_reason(err)}); "
                      f"moved aside to {moved.name}")
            continue
        if candidate != path:
            _say(log, f"resuming from the previous checkpoint {candidate.name}")
        return candidate
    if fresh is not None or len(candidates) != 0:
        _say(log, "no usable checkpoint left: training from scratch")
    return None


def _say(log: Callable[[str], None], message: str) -> None:
    log(message)
    print(f"warning: {message}", file=sys.stderr, flush=True)
