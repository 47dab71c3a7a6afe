"""Where a sweep's runs execute: one SLURM array job, a pool of local processes, or inline.

Every executor runs the same job object, :class:`RunJob`: a submitit ``Checkpointable`` whose
call trains one run (``sparsebench.training.train``, which resumes from the run's last epoch
checkpoint). On SLURM, submitit turns the USR2 that arrives ``signal_delay_s`` before the time
limit (or on preemption) into a call of ``checkpoint()``, which requeues the same call; the
requeued job resumes the run where its last epoch checkpoint left it.

What a run produced is always read back from its ``result.json``; the executors only say when
a run has ended.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import submitit

from . import atomic, paths
from .config import RunConfig

if TYPE_CHECKING:  # not imported at run time: a SLURM job unpickles RunJob from this module
    # before submitit installs its signal handlers, and should get there without torch
    from .sweep_spec import Cell, SlurmSpec

TERMINAL = ("completed", "failed", "diverged")

# SLURM job states in which a job still holds or waits for resources; any other state, or no
# longer being listed by squeue, means the job has ended (COMPLETING and REQUEUED are the
# short states between a requeue and PENDING).
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING",
                 "SUSPENDED", "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT", "STOPPED",
                 "PREEMPTED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}


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


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


# ---------------------------------------------------------------------------------------------
# the job

class RunJob(submitit.helpers.Checkpointable):
    """Train one run; on a SLURM time limit or preemption, requeue the same call.

    ``results_root`` (absolute) pins where results go whatever the job's working directory and
    environment; ``threads`` sets torch's intra-op threads (one per core the run was given).
    """

    def __init__(self, results_root: str | None = None, threads: int | None = None):
        self.results_root = results_root
        self.threads = threads

    def __call__(self, cfg: RunConfig) -> dict:
        import torch

        from .distributed import teardown
        from .training import train

        if self.results_root is not None:
            os.environ["SPARSEBENCH_RESULTS"] = self.results_root
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        result = train(cfg)  # a run that raises has written status "failed" before it re-raises
        teardown()  # a data-parallel run's process group (sparsebench.distributed)
        return {"run_id": result.get("run_id"), "status": result.get("status"),
                "error": result.get("error"), "threads": torch.get_num_threads()}

    def checkpoint(self, cfg: RunConfig) -> submitit.helpers.DelayedSubmission:
        from .training import RunLog, run_folder

        if self.results_root is not None:
            os.environ["SPARSEBENCH_RESULTS"] = self.results_root
        RunLog(run_folder(cfg) / paths.LOG)(
            "SLURM time limit or preemption: requeued; resumes from the last epoch checkpoint")
        return super().checkpoint(cfg)


# ---------------------------------------------------------------------------------------------
# inline: in this process, one after another (tests, debugging)

def run_inline(cells: list[Cell]) -> Iterator[Outcome]:
    job = RunJob()
    for cell in cells:
        try:
            job(cell.config)
        except Exception as err:  # recorded in result.json by train(); reported by the sweep
            yield read_outcome(cell) or Outcome(cell.run_id, "failed", _first_line(err))
            continue
        yield read_outcome(cell) or Outcome(cell.run_id, "failed", "no result.json was written")


# ---------------------------------------------------------------------------------------------
# local: worker processes, one torch thread each

def default_workers() -> int:
    """Every core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_IN_RUN = False  # in a worker process: whether it is training a run right now


def _on_sigterm(*_) -> None:
    if _IN_RUN:
        raise SystemExit(143)  # unwind the run, so that atomic writes remove their temporary file
    os._exit(143)  # idle: nothing to clean up


def _exit_with_parent() -> None:
    """Linux: have the kernel send SIGTERM when the launcher dies (even by SIGKILL), so that
    no worker keeps training for a launcher that is gone."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _worker_main(conn, job: "RunJob") -> None:
    """A local worker: receives (run_id, config) on its pipe, trains it, sends the Outcome
    back; None (or the launcher's end of the pipe closing) ends it."""
    global _IN_RUN
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    # Ctrl-C reaches the whole process group; it is the launcher's to handle (it stops us).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    _exit_with_parent()
    import torch

    torch.set_num_threads(1)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        rid, cfg = task
        _IN_RUN = True
        try:
            out = job(cfg)
            outcome = Outcome(rid, out["status"], out.get("error"), out.get("threads"))
        except Exception as err:
            outcome = Outcome(rid, "failed", _first_line(err))
        finally:
            _IN_RUN = False
        conn.send(outcome)


class _LocalWorker:
    """One worker process and the launcher's end of its pipe; ``run_id`` is what it trains."""

    def __init__(self, ctx, job: "RunJob"):
        self.conn, child = ctx.Pipe()
        # Not daemonic: a run may start processes of its own (ImageNet's DataLoader workers).
        # The launcher stops its workers itself, and the kernel does if the launcher dies.
        self.proc = ctx.Process(target=_worker_main, args=(child, job), daemon=False,
                                name="sparsebench-worker")
        self.proc.start()
        child.close()
        self.run_id: str | None = None

    def give(self, cell: Cell) -> None:
        self.run_id = cell.run_id
        try:
            self.conn.send((cell.run_id, cell.config))
        except OSError:
            pass  # it has died: its sentinel says so and the run fails as the worker's death

    def stop(self, timeout: float = 10.0) -> None:
        """Idle: ask it to end; busy: SIGTERM (the run unwinds, keeping its last epoch
        checkpoint); SIGKILL whatever is left after ``timeout`` seconds."""
        if self.proc.is_alive():
            try:
                if self.run_id is None:
                    self.conn.send(None)
                else:
                    self.proc.terminate()
            except OSError:
                self.proc.terminate()
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def run_local(cells: list[Cell], workers: int, on_tick: Callable[[], None] = lambda: None,
              tick_s: float = 1.0) -> Iterator[Outcome]:
    """Runs in ``workers`` long-lived processes (spawned, so no torch state is forked), each
    training run after run with one torch thread; they keep the data set they decoded between
    runs, which matters when a run takes seconds. Each worker has a pipe of its own and the
    launcher hands out one run at a time, so a worker that dies (killed, out of memory) never
    blocks the others: its pipe closes, its run fails with the exit code and a new worker takes
    the next run. ``on_tick`` is called about every ``tick_s`` seconds while waiting. Ctrl-C
    (or a consumer that stops early) terminates the workers; their runs keep their last epoch
    checkpoint and resume on the next launch."""
    from multiprocessing.connection import wait

    if not cells:
        return
    job = RunJob(str(paths.results_root().resolve()), threads=1)
    ctx = multiprocessing.get_context("spawn")
    todo = list(cells)
    pool: list[_LocalWorker] = []
    try:
        pool = [_LocalWorker(ctx, job) for _ in range(max(1, min(workers, len(cells))))]
        for worker in pool:
            worker.give(todo.pop(0))
        last_tick = time.monotonic()
        while any(w.run_id is not None for w in pool):
            busy = {w.conn: w for w in pool if w.run_id is not None}
            ready = wait(list(busy) + [w.proc.sentinel for w in busy.values()],
                         timeout=max(0.0, tick_s - (time.monotonic() - last_tick)))
            if time.monotonic() - last_tick >= tick_s:
                on_tick()
                last_tick = time.monotonic()
            for conn, worker in busy.items():
                if conn not in ready and worker.proc.sentinel not in ready:
                    continue
                outcome = None
                try:
                    if conn.poll():
                        outcome = conn.recv()
                except (EOFError, OSError):
                    pass
                if outcome is None and worker.proc.is_alive() and conn not in ready:
                    continue  # (a sentinel cannot be ready while the process lives)
                if outcome is None:  # the worker died in the middle of the run
                    worker.proc.join(10)
                    code = worker.proc.exitcode
                    outcome = Outcome(worker.run_id, "failed",
                                      f"worker process died (exit code {code}: killed or out "
                                      "of memory?); it left no result and resumes from its "
                                      "last epoch checkpoint when the sweep is launched again")
                    worker.run_id = None
                    worker.stop()
                    pool.remove(worker)
                    if todo:
                        worker = _LocalWorker(ctx, job)
                        pool.append(worker)
                else:
                    worker.run_id = None
                if todo:
                    worker.give(todo.pop(0))
                yield outcome
        for worker in pool:
            worker.stop()
        pool = []
    finally:
        # Ctrl-C, an error, or a consumer that stopped early: stop the runs in progress.
        for worker in pool:
            worker.stop()


# ---------------------------------------------------------------------------------------------
# slurm: one array job through submitit, reattachable

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
    job = RunJob(str(paths.results_root().resolve()), threads=spec.cpus_per_task)
    previous = {c.run_id: (atomic.read_json(result_path(c)) or {}).get("finished_at")
                for c in cells}
    with deferred_interrupt():
        try:
            jobs = executor.map_array(job, [c.config for c in cells])
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
