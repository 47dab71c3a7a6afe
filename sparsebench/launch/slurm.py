"""A sweep's runs on SLURM: one array job through submitit, recorded so a relaunch reattaches.

The jobs run :class:`~sparsebench.launch.executors.RunJob` (one run per task) or, with
``slurm.runs_per_task`` K > 1, :class:`~sparsebench.launch.executors.PackedRunJob` (K runs side by
side in one task; each run's record names its task's job id), whose ``checkpoint()`` requeues a
task stopped by its time limit or preemption; :class:`SlurmWatch` reports each run as its
``result.json`` appears, and ``squeue``/``sacct`` say which jobs still hold or wait for
resources.
"""
from __future__ import annotations

import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import submitit

from ..storage import atomic, paths
from .executors import TERMINAL, Outcome, PackedRunJob, RunJob, result_path

if TYPE_CHECKING:
    from .slurm_spec import SlurmSpec
    from .spec import Cell

# SLURM job states in which a job still holds or waits for resources; any other state, or no
# longer being listed by squeue, means the job has ended (COMPLETING and REQUEUED are the
# short states between a requeue and PENDING).
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING",
                 "SUSPENDED", "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT", "STOPPED",
                 "PREEMPTED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}


def slurm_available() -> bool:
    import shutil

    return shutil.which("sbatch") is not None


@contextmanager
def deferred_interrupt():
    """Hold Ctrl-C until the block ends: between sbatch and recording the job ids, an
    interrupt would leave jobs that a relaunch cannot find (and would submit twice)."""
    received = []
    previous = signal.signal(signal.SIGINT, lambda *args: received.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


def read_records(sweep: str) -> dict:
    return atomic.read_json(paths.submitted_jobs(sweep)) or {}


def slurm_executor(sweep: str, spec: SlurmSpec) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=paths.submitit_dir(sweep).resolve(), cluster="slurm",
                                     slurm_max_num_timeout=spec.max_timeouts)
    executor.update_parameters(name=f"sb-{sweep}", **spec.submitit_parameters())
    return executor


class SubmissionError(RuntimeError):
    """sbatch refused the job (or could not be run)."""


def submit_slurm(sweep: str, spec: SlurmSpec, cells: list[Cell]) -> dict[str, str]:
    """Submit ``cells`` as one array job; returns run_id -> job id (also recorded on disk)."""
    executor = slurm_executor(sweep, spec)
    root = str(paths.results_root().resolve())
    previous = {c.run_id: (atomic.read_json(result_path(c)) or {}).get("finished_at")
                for c in cells}
    k = spec.runs_per_task
    with deferred_interrupt():
        try:
            if k == 1:
                jobs = executor.map_array(RunJob(root, threads=spec.cpus_per_task,
                                                 signal_delay_s=spec.signal_delay_s),
                                          [c.config for c in cells])
            else:  # each task trains k runs side by side; every run of a task shares its job
                packs = [cells[i:i + k] for i in range(0, len(cells), k)]
                tasks = executor.map_array(
                    PackedRunJob(root, threads=max(1, spec.cpus_per_task // k),
                                 signal_delay_s=spec.signal_delay_s),
                    [[c.config for c in pack] for pack in packs])
                jobs = [task for task, pack in zip(tasks, packs) for _ in pack]
        except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError,
                OSError) as err:
            lines = str(err).strip().splitlines()
            raise SubmissionError(f"sbatch failed: {lines[0] if lines else type(err).__name__}") from None
        records = read_records(sweep)
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        for cell, j in zip(cells, jobs):
            records[cell.run_id] = {"job_id": j.job_id, "submitted_at": now,
                                    "previous_finished_at": previous[cell.run_id]}
        atomic.write_json(paths.submitted_jobs(sweep), records)
    for cell, j in zip(cells, jobs):  # each run folder names its job's logs
        atomic.write_json(result_path(cell).parent / paths.SLURM_JOB, {
            "job_id": j.job_id, "submitted_at": now,
            "stdout": str(j.paths.stdout), "stderr": str(j.paths.stderr)})
    return {c.run_id: j.job_id for c, j in zip(cells, jobs)}


def squeue_states(job_ids: Iterable[str]) -> dict[str, str] | None:
    """State of each listed job (array tasks one per line); None when squeue fails."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    if not arrays:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(arrays)],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        # squeue fails on ids it no longer knows; then no listed job is active.
        return {} if "Invalid job id" in out.stderr else None
    states = {}
    for line in out.stdout.splitlines():
        if "|" in line:
            jid, state = line.strip().split("|", 1)
            states[jid] = state.strip()
    return states


def is_active(state: str | None) -> bool:
    return state is not None and state.split()[0].rstrip("+") in ACTIVE_STATES


def sacct_state(job_id: str) -> str | None:
    """Final state of an ended job from accounting, when the cluster keeps it."""
    try:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [l.strip() for l in out.stdout.splitlines() if l.strip()]
    return lines[-1] if out.returncode == 0 and lines else None


def job_log(sweep: str, job_id: str) -> Path:
    return submitit.SlurmJob(paths.submitit_dir(sweep).resolve(), job_id).paths.stderr


def _finished_by_its_job(cell: Cell, record: dict) -> bool:
    """Whether the cell's result.json was written by its recorded job (which SLURM may still
    list for a few seconds while it completes): then that job is done with the run."""
    result = atomic.read_json(result_path(cell)) or {}
    return (result.get("status") in TERMINAL
            and result.get("finished_at") != record.get("previous_finished_at"))


def active_records(sweep: str, cells: list[Cell]) -> dict[str, str]:
    """run_id -> job id for the given cells whose recorded SLURM job is still queued or running
    and has not yet written the cell's result."""
    records = read_records(sweep)
    wanted = {c.run_id: records[c.run_id]["job_id"] for c in cells
              if c.run_id in records and not _finished_by_its_job(c, records[c.run_id])}
    if not wanted or not slurm_available():
        return {}
    states = squeue_states(wanted.values())
    if states is None:
        raise RuntimeError("squeue failed: cannot tell whether this sweep's SLURM jobs are still "
                           "running (is the cluster up? `make slurm-up` starts the local one)")
    return {rid: jid for rid, jid in wanted.items() if is_active(states.get(jid))}


class SlurmWatch:
    """Follows submitted runs until each has a new result or its job has ended."""

    GRACE_S = 10.0  # an ended job's result.json may take a moment to appear on shared storage

    def __init__(self, sweep: str, cells: dict[str, Cell], jobs: dict[str, str]):
        self.sweep, self.cells, self.jobs = sweep, cells, jobs
        records = read_records(sweep)
        self.previous = {rid: records.get(rid, {}).get("previous_finished_at") for rid in jobs}
        self.ended_at: dict[str, float] = {}
        self.counts = {"running": 0, "pending": 0}
        self.squeue_failures = 0

    def _new_outcome(self, rid: str) -> Outcome | None:
        result = atomic.read_json(result_path(self.cells[rid]))
        if not result or result.get("status") not in TERMINAL:
            return None
        if result.get("finished_at") == self.previous.get(rid) and result["status"] != "completed":
            return None  # the earlier attempt's result (a retry has not finished yet)
        return Outcome(rid, result["status"], result.get("error"))

    def poll(self) -> list[Outcome]:
        """One look at squeue and the results; returns the runs that ended since the last."""
        states = squeue_states(self.jobs.values())
        if states is None:
            self.squeue_failures += 1
        finished = []
        running = pending = 0
        for rid, jid in list(self.jobs.items()):
            outcome = self._new_outcome(rid)
            state = None if states is None else states.get(jid)
            if outcome is None and (states is None or is_active(state)):
                running += state is not None and state.startswith("RUNNING")
                pending += state is None or not state.startswith("RUNNING")
                continue
            if outcome is None:
                first = self.ended_at.setdefault(rid, time.monotonic())
                if time.monotonic() - first < self.GRACE_S:
                    continue
                final = sacct_state(jid) or state or "unknown state"
                outcome = Outcome(rid, "failed", f"SLURM job {jid} ended ({final}) without a "
                                                 f"result; see {job_log(self.sweep, jid)}")
            finished.append(outcome)
            del self.jobs[rid]
        self.counts = {"running": running, "pending": pending}
        return finished
