"""A sweep's runs on this machine: a pool of worker processes, one torch thread each.

Each worker trains one run at a time through :class:`~sparsebench.launch.executors.RunJob` and sends
its :class:`~sparsebench.launch.executors.Outcome` back. Ctrl-C is the launcher's: it stops the
workers, which unwind the run in progress (its last epoch checkpoint stays), and a worker whose
launcher dies (even by SIGKILL) is stopped by the kernel.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import time
from typing import TYPE_CHECKING, Callable, Iterator

from ..storage import paths
from .executors import Outcome, RunJob, first_line

if TYPE_CHECKING:
    from .spec import Cell


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
            outcome = Outcome(rid, "failed", first_line(err))
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
