"""What every executor shares: the job a run is, its outcome, and running cells inline.

A sweep's runs execute as one SLURM array job (:mod:`sparsebench.launch.slurm`), in a pool of local
processes (:mod:`sparsebench.launch.local_pool`), or inline here (tests, debugging).

Every executor runs the same job object, :class:`RunJob`: a submitit ``Checkpointable`` whose
call trains one run (``sparsebench.training.train``, which resumes from the run's last epoch
checkpoint). On SLURM, submitit turns the USR2 that arrives ``signal_delay_s`` before the time
limit (or on preemption) into a call of ``checkpoint()``, which requeues the same call; the
requeued job resumes the run where its last epoch checkpoint left it. :class:`PackedRunJob` does
the same for several runs that share one SLURM task (``slurm.runs_per_task``).

What a run produced is always read back from its ``result.json``; the executors only say when
a run has ended.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import submitit

from ..storage import atomic, paths
from ..config.schema import RunConfig

if TYPE_CHECKING:  # not imported at run time: a SLURM job unpickles RunJob from this module
    # before submitit installs its signal handlers, and should get there without torch
    from .spec import Cell

TERMINAL = ("completed", "failed", "diverged")



@dataclass
class Outcome:
    run_id: str
    status: str              # completed | failed | diverged
    error: str | None = None
    threads: int | None = None  # torch threads the run trained with, where known


def result_path(cell: Cell) -> Path:
    return paths.run_dir(cell.config.sweep, cell.run_id) / paths.RESULT


def read_outcome(cell: Cell) -> Outcome | None:
    """The cell's recorded outcome, or None when it has no finished result."""
    result = atomic.read_json(result_path(cell))
    if not result or result.get("status") not in TERMINAL:
        return None
    return Outcome(cell.run_id, result["status"], result.get("error"))


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


# ---------------------------------------------------------------------------------------------
# the job

class RunJob(submitit.helpers.Checkpointable):
    """Train one run; on a SLURM time limit or preemption, requeue the same call.

    ``results_root`` (absolute) pins where results go whatever the job's working directory and
    environment; ``threads`` sets torch's intra-op threads (one per core the run was given).
    """

    def __init__(self, results_root: str | None = None, threads: int | None = None,
                 signal_delay_s: float | None = None):
        self.results_root = results_root
        self.threads = threads
        self.signal_delay_s = signal_delay_s  # set on SLURM: requeue at the deadline

    def __call__(self, cfg: RunConfig) -> dict:
        import torch

        from ..distributed import launched_world_size, teardown
        from ..training import train

        if self.results_root is not None:
            os.environ["SPARSEBENCH_RESULTS"] = self.results_root
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        callbacks = []
        if getattr(self, "signal_delay_s", None) and launched_world_size() == 1:
            from .requeue import RequeueAtDeadline

            requeue = RequeueAtDeadline.install(self.signal_delay_s)
            callbacks = [requeue] if requeue else []
        # a run that raises has written status "failed" before it re-raises
        result = train(cfg, callbacks=callbacks)
        teardown()  # a data-parallel run's process group (sparsebench.distributed)
        return {"run_id": result.get("run_id"), "status": result.get("status"),
                "error": result.get("error"), "threads": torch.get_num_threads()}

    def checkpoint(self, cfg: RunConfig) -> submitit.helpers.DelayedSubmission:
        from ..training import RunLog, run_folder

        if self.results_root is not None:
            os.environ["SPARSEBENCH_RESULTS"] = self.results_root
        RunLog(run_folder(cfg) / paths.LOG)(
            "SLURM time limit or preemption: requeued; resumes from the last epoch checkpoint")
        ignore_sigterm_from_now_on()
        return super().checkpoint(cfg)


def ignore_sigterm_from_now_on() -> None:
    """Called just before submitit runs ``scontrol requeue`` from inside the job.

    The requeue itself ends the running job: slurmd sends SIGTERM to every process of the job
    step (then SIGKILL after the cluster's KillWait), and the ``scontrol`` child that asked for
    the requeue is one of them. On a loaded node that child is often still waiting for the
    controller's reply; killed, it makes submitit raise ``CalledProcessError ... died with
    SIGTERM`` from the signal handler, inside the training loop, and the run was recorded as
    failed although SLURM had requeued it. An ignored signal stays ignored across exec, so from
    here on this process and the children it starts ignore SIGTERM (submitit only logged it
    anyway) and ``scontrol`` gets KillWait seconds to read its reply; the job exits right after.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class PackedRunJob(submitit.helpers.Checkpointable):
    """Several runs in one SLURM array task (``slurm.runs_per_task``), sharing its GPU.

    Each run trains in a process of its own (its own folder, lock and epoch checkpoint, and
    ``threads`` torch threads); this process only waits for them. On a time limit or
    preemption submitit calls :meth:`checkpoint` here; the requeue's SIGTERM then stops the
    runs, and the requeued task starts them again, each resuming from its own last epoch
    checkpoint (a run that had completed returns its result at once).
    """

    def __init__(self, results_root: str, threads: int | None = None,
                 signal_delay_s: float | None = None):
        self.results_root = results_root
        self.threads = threads
        self.signal_delay_s = signal_delay_s

    def __call__(self, cfgs: list[RunConfig]) -> list[dict]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if self.signal_delay_s:  # the runs train on until the deadline (no epoch boundary here)
            from .requeue import RequeueAtDeadline

            RequeueAtDeadline.install(self.signal_delay_s)

        context = multiprocessing.get_context("spawn")  # no forked torch or CUDA state
        with ProcessPoolExecutor(len(cfgs), mp_context=context,
                                 initializer=_packed_worker_start) as pool:
            pending = [pool.submit(_train_packed, self.results_root, self.threads, cfg)
                       for cfg in cfgs]
            return [p.result() for p in pending]

    def checkpoint(self, cfgs: list[RunConfig]) -> submitit.helpers.DelayedSubmission:
        from ..training import RunLog, run_folder

        os.environ["SPARSEBENCH_RESULTS"] = self.results_root
        for cfg in cfgs:
            RunLog(run_folder(cfg) / paths.LOG)(
                "SLURM time limit or preemption: requeued with the runs sharing its task; "
                "resumes from the last epoch checkpoint")
        ignore_sigterm_from_now_on()
        return super().checkpoint(cfgs)


def _packed_worker_start() -> None:
    # SLURM signals every process of the step: the time-limit USR2 is for the task's main
    # process (submitit's handler requeues), not for the runs, which train on until the
    # requeue stops them.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _train_packed(results_root: str, threads: int | None, cfg: RunConfig) -> dict:
    try:
        return RunJob(results_root, threads)(cfg)
    except Exception as err:  # recorded in the run's result.json by train(); the others go on
        return {"run_id": None, "status": "failed", "error": first_line(err)}


# ---------------------------------------------------------------------------------------------
# inline: in this process, one after another (tests, debugging)

def run_inline(cells: list[Cell]) -> Iterator[Outcome]:
    job = RunJob()
    for cell in cells:
        try:
            job(cell.config)
        except Exception as err:  # recorded in result.json by train(); reported by the sweep
            yield read_outcome(cell) or Outcome(cell.run_id, "failed", first_line(err))
            continue
        yield read_outcome(cell) or Outcome(cell.run_id, "failed", "no result.json was written")
