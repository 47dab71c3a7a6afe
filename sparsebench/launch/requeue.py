"""Requeue at the time limit, not at its warning: a SLURM job trains until just before its end.

SLURM sends the time-limit signal (USR2) ``signal_delay_s`` before the limit, and up to 60 s
earlier still (its time checks run every 30 s). submitit requeues the job as soon as it arrives,
so every allocation lost that warning time; and a job whose start-up (Python, torch, the data)
took longer than the time between its start and the warning made no progress at all: it was
requeued before its first epoch, again and again (seen on a loaded 2-core node with the
1-minute limit of the requeue test). :class:`RequeueAtDeadline` takes over submitit's handler
in a task that trains one run or several side by side (``slurm.runs_per_task``), not in a
data-parallel run's ranks:

* a preemption (USR2 long before the time limit) requeues at once, as before;
* the time-limit signal arms a deadline ``margin_s`` before the job's end; the run goes on
  training and requeues at the last epoch boundary that leaves the next epoch time to finish
  (:meth:`on_epoch_end`; its checkpoint has just been written), or at the deadline mid-epoch
  (SIGALRM), losing only that epoch's part, as a requeue at the signal did.

The requeue itself is submitit's handler, unchanged (checkpoint, ``scontrol requeue``, exit).
"""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time
from typing import Callable

from ..training.callbacks import Callback

# A time-limit warning arrives at most this long before the end beyond signal_delay_s (SLURM's
# 60 s of earliness); later ones are preemptions.
EARLY_S = 60.0 + 30.0


def job_end_time() -> float | None:
    """This job's end (time limit) as a Unix time, from squeue; None where unknown."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-o", "%e", "-j", job], capture_output=True,
                             text=True, timeout=30)
        return dt.datetime.fromisoformat(out.stdout.strip()).timestamp()
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


class RequeueAtDeadline(Callback):
    """In place of submitit's USR2 handler; also the trainer's callback that requeues at an
    epoch boundary."""

    def __init__(self, requeue: Callable, signal_delay_s: float, end_time: float | None):
        self.requeue_now = requeue          # submitit's checkpoint-and-requeue handler
        self.signal_delay_s = signal_delay_s
        self.end_time = end_time
        self.margin_s = max(5.0, min(30.0, signal_delay_s / 2))
        self.deadline: float | None = None  # time.time() by which to have requeued
        self.signum = signal.SIGUSR2
        self.last_epoch_end: float | None = None
        self.epoch_s = 0.0

    @classmethod
    def install(cls, signal_delay_s: float) -> "RequeueAtDeadline | None":
        """Take over submitit's USR2 handler; None where there is none to take over."""
        submitits = signal.getsignal(signal.SIGUSR2)
        if not callable(submitits):
            return None
        self = cls(submitits, signal_delay_s, job_end_time())
        signal.signal(signal.SIGUSR2, self.on_signal)
        signal.signal(signal.SIGALRM, self.on_deadline)
        return self

    def on_signal(self, signum, frame) -> None:
        if self.deadline is not None:
            return  # already armed
        now = time.time()
        left = None if self.end_time is None else self.end_time - now
        if left is None or left > self.signal_delay_s + EARLY_S or left - self.margin_s <= 1:
            self.requeue(signum, frame)  # preemption, an unknown end, or no time left
            return
        self.signum, self.deadline = signum, self.end_time - self.margin_s
        signal.setitimer(signal.ITIMER_REAL, self.deadline - now)

    def on_deadline(self, signum, frame) -> None:
        if self.deadline is not None:
            self.requeue(self.signum, frame)

    def requeue(self, signum, frame) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        self.requeue_now(signum, frame)  # submitit: checkpoint, scontrol requeue, exit

    # ---- the trainer callback -----------------------------------------------------------------
    def on_run_start(self, trainer) -> None:
        self.last_epoch_end = time.time()

    def on_epoch_end(self, trainer, row) -> None:
        now = time.time()
        if self.last_epoch_end is not None:
            self.epoch_s = max(self.epoch_s, now - self.last_epoch_end)
        self.last_epoch_end = now
        p = trainer.progress
        last = p.epoch >= trainer.cfg.epochs and p.round + 1 >= trainer.rounds
        if self.deadline is not None and not last and now + 1.5 * self.epoch_s > self.deadline:
            self.requeue(self.signum, None)  # the epoch's checkpoint is written

    def on_run_end(self, trainer, status) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
