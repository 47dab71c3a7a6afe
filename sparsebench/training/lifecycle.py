"""One run from start to result.json: the one-writer lock, training, and the record it leaves.

:func:`train` resolves the run folder, takes the run's lock, and writes ``config.yaml`` first
and ``result.json`` last. Whatever happens in between leaves a result: ``completed``,
``diverged`` (a non-finite loss: the run is over, its measurements are kept) or ``failed``
(the error, named with the rank that raised it, and whatever the trainer had measured; the
error then propagates). An interrupted run (``stop_after_epochs``, a killed job) leaves its
checkpoint instead and resumes from it.
"""
from __future__ import annotations

import contextlib
import os
import traceback
from pathlib import Path
from typing import Sequence

from ..storage import atomic, checkpoints, locks, paths
from .. import distributed
from . import preflight
from ..config.schema import ConfigError, RunConfig, run_id, to_dict
from .callbacks import Callback
from .device import resolve_device
from .final import save_final
from .loop import Diverged, RunLog, Trainer
from .result import measured_result, now_iso, result_header, run_result
from .tracking_callbacks import tracking_callbacks


def run_folder(cfg: RunConfig) -> Path:
    return paths.run_dir(cfg.sweep, run_id(cfg))


def train(cfg: RunConfig, *, stop_after_epochs: int | None = None, force: bool = False,
          callbacks: Sequence[Callback] = ()) -> dict:
    """Run one config to completion (resuming if a checkpoint exists) and write its results.

    Returns the result dict. A completed run is not repeated unless ``force``. A run that
    raises is recorded with status ``failed`` and its error, then the error propagates.
    One process trains a run at a time: a second raises :class:`sparsebench.storage.locks.Busy`
    without touching the run's files.
    ``callbacks`` are added to the trainer's (e.g. the SLURM requeue at an epoch boundary).
    Launched as one rank of several (torchrun, SLURM tasks), it joins the run's process group
    and trains data-parallel; rank 0 alone writes (see sparsebench.distributed).
    """
    try:  # first: a node without its device fails in seconds, before data or process groups
        device = resolve_device(cfg.device)
    except ConfigError as err:
        _record_unstartable(cfg, err)
        raise
    world = distributed.setup(device.type)
    distributed.validate(cfg, world.size)
    run_dir = run_folder(cfg)
    with run_lock(cfg, run_dir, world):
        return _train_locked(cfg, run_dir, world, stop_after_epochs, force, list(callbacks))


def run_lock(cfg: RunConfig, run_dir: Path, world):
    """The run's one-writer lock (sparsebench.storage.locks). Of a data-parallel run only rank 0 takes
    it: the other ranks of the same run are not a second writer."""
    if not world.is_main:
        return contextlib.nullcontext()
    log = RunLog(run_dir / paths.LOG)
    # wait_s: a reader that asks whether the run is live (sparsebench.reporting.results, a sweep's plan)
    # holds the lock for microseconds; a second trainer still gets Busy a second later.
    return locks.hold(
        run_dir / paths.RUN_LOCK,
        lambda holder: f"run {run_id(cfg)} of sweep {cfg.sweep} is being trained by {holder} "
                       f"(lock {run_dir / paths.RUN_LOCK}); wait for it to end or stop it first",
        wait_s=1.0,
        on_takeover=lambda previous: log(f"took over the lock of a process that is gone "
                                         f"({previous})"))


def _train_locked(cfg: RunConfig, run_dir: Path, world, stop_after_epochs: int | None,
                  force: bool, extra: list[Callback]) -> dict:
    result_path = run_dir / paths.RESULT
    existing = atomic.read_json(result_path)
    if existing and existing.get("status") == "completed" and not force:
        return existing
    write = world.is_main
    started_at = now_iso()
    trainer = None
    try:
        if write:
            atomic.write_yaml(run_dir / paths.CONFIG, to_dict(cfg))
        # Again here for jobs whose launcher could not see the data (sweep --skip-data-check).
        preflight.check(cfg)
        callbacks = (tracking_callbacks(cfg, run_dir) if write else []) + extra
        trainer = Trainer(cfg, run_dir, callbacks=callbacks)
        try:
            status, error = trainer.run(stop_after_epochs), None
        except Diverged as err:
            status, error = "diverged", str(err)
            trainer.log(f"diverged: {err}")
        if status == "interrupted":
            return {"status": "interrupted", "run_id": run_id(cfg)}
        result = measured_result(trainer, status, error, started_at)
    except Exception as err:
        # On every rank: each leaves its error where rank 0 looks for the rank that failed.
        error = failure_text(err)
        if write:
            _record_failure(cfg, run_dir, trainer, error, started_at)
        raise
    if write:
        if status == "completed" and cfg.save_final:
            save_final(trainer)  # before result.json: a completed result always has its final.pt
        atomic.write_json(result_path, result)
        checkpoints.remove(trainer.checkpoint_path)
    return result


def _record_unstartable(cfg: RunConfig, err: ConfigError) -> None:
    """A run that cannot start here (no device) leaves its one line in result.json and log,
    written by the process that would be rank 0 (the process group does not exist yet)."""
    if int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) != 0:
        return
    run_dir = run_folder(cfg)
    existing = atomic.read_json(run_dir / paths.RESULT) or {}
    if existing.get("status") == "completed":
        return
    with contextlib.suppress(locks.Busy, OSError), run_lock(cfg, run_dir, distributed.World()):
        RunLog(run_dir / paths.LOG)(f"failed: {err}")
        atomic.write_json(run_dir / paths.RESULT, result_header(cfg, "failed", str(err), now_iso()))


def failure_text(err: Exception) -> str:
    """The error a failed run records; with several ranks it names the rank that failed first
    (sparsebench.distributed.failure_text), which needs every rank to call this."""
    if isinstance(err, (atomic.WriteError, ConfigError)):
        return str(err)
    return distributed.failure_text(err, _first_line(err))


def _record_failure(cfg: RunConfig, run_dir: Path, trainer: Trainer | None, error: str,
                    started_at: str) -> None:
    """Best effort: on a full or read-only disk these writes fail too, and the error that
    propagates must stay the first one. The trainer's measurements are kept where they can
    still be read; where reading them fails too (the error came from there), the header."""
    with contextlib.suppress(OSError):
        RunLog(run_dir / paths.LOG)(f"failed: {error}\n" + traceback.format_exc())
    result = result_header(cfg, "failed", error, started_at)
    if trainer is not None:
        with contextlib.suppress(Exception):
            result = run_result(trainer, "failed", error, started_at)
    with contextlib.suppress(OSError):
        atomic.write_json(run_dir / paths.RESULT, result)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"
