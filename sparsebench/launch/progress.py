"""What a long launch prints: a line per finished run and a line per run and finished epoch.

:class:`RunLines` gives one line per run that ends, with the runs done out of the launch's
total, the failures so far and the ETA of the whole launch (from the pace of the runs ended
so far)::

    [7/40 runs, 1 failed, ETA 12.5 min] static sparsity 95% seed 1: completed, test_acc 83.10%


The sweep's bar moves only when a run ends, which for a 12-hour CIFAR run says nothing for
hours, and a bar does not reach a log file at all (``nohup``, a SLURM job, ``make paper``).
:class:`EpochLines` reads each run's ``metrics.jsonl`` (written by the run wherever it trains:
here, a local worker, a SLURM node on the shared file system) and gives one line per epoch not
yet reported::

    [rigl sparsity 95% seed 1] epoch 3/200 test_acc 61.20%  1.9 min/epoch, ETA 6.2 h

:class:`EpochReporter` polls it from a background thread every ``interval_s`` seconds (so at
most one burst of lines per interval) and writes the lines through the sweep's bar, which
keeps them above it on a terminal and as plain lines elsewhere.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Callable

from ..storage import atomic, paths
from ..storage.run_files import read_metrics

if TYPE_CHECKING:
    from .executors import Outcome
    from .spec import Cell


def duration(seconds: float) -> str:
    """A duration in words a reader can trust: "<1 s" rather than a rounded-down "0 s"."""
    if 0 < seconds < 1:
        return "<1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def run_labels(cells: "list[Cell]") -> dict[str, str]:
    """Per run: the sweep's row label (method and what tells its variants apart, see
    :func:`sparsebench.launch.spec.row_labels`) with the run's sparsity and seed, so that the
    lines of runs training side by side can be told apart."""
    from .spec import row_labels

    rows = row_labels(cells)
    return {c.run_id: f"{rows[c.run_id]} sparsity {100 * (1 - c.config.density):.4g}% "
                      f"seed {c.config.seed}" for c in cells}


class RunLines:
    """One line per run that ends: ``[done/total runs, failed, ETA] label: status``.

    ``done`` and ``failed`` start at what an earlier launch finished (completed or skipped
    runs); the ETA divides the time since this launch started by the runs it has ended and
    multiplies by the runs left, so it includes the overlap of runs that train side by side.
    """

    def __init__(self, total: int, labels: dict[str, str], done: int = 0, failed: int = 0,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.labels, self.done, self.failed = total, labels, done, failed
        self.clock, self.t0, self.ended_here = clock, clock(), 0

    def eta(self) -> str:
        left = self.total - self.done
        if left <= 0:
            return "all done"
        if not self.ended_here:
            return "ETA unknown"
        return f"ETA {duration((self.clock() - self.t0) / self.ended_here * left)}"

    def line(self, outcome: "Outcome", result: dict | None = None) -> str:
        """Count ``outcome`` and describe it; ``result`` is the run's result.json (for its
        accuracy), read from its folder when not given."""
        self.done += 1
        self.ended_here += 1
        self.failed += outcome.status != "completed"
        what = outcome.status
        if outcome.status == "completed":
            acc = (result or {}).get("final_test_acc")
            if isinstance(acc, (int, float)):
                what += f", test_acc {acc:.2f}%"
        elif outcome.error:
            what += f": {str(outcome.error).strip().splitlines()[0][:120]}"
        return (f"[{self.done}/{self.total} runs, {self.failed} failed, {self.eta()}] "
                f"{self.labels.get(outcome.run_id, outcome.run_id)}: {what}")


def read_result(cell: "Cell") -> dict:
    return atomic.read_json(paths.run_dir(cell.config.sweep, cell.run_id) / paths.RESULT) or {}


class EpochLines:
    def __init__(self, cells, labels: dict[str, str]):
        self.cells = list(cells)
        self.labels = labels               # run_id -> a short name of the cell
        self.reported: dict[str, int] = {}  # run_id -> epochs reported

    def poll(self) -> list[str]:
        lines = []
        for cell in self.cells:
            rows = read_metrics(paths.run_dir(cell.config.sweep, cell.run_id) / paths.METRICS)
            done = self.reported.get(cell.run_id, 0)
            if len(rows) < done:  # a run started afresh (--retry-failed): count again
                done = 0
            times = [r["epoch_time_s"] for r in rows if r.get("epoch_time_s")]
            per_epoch = sum(times) / len(times) if times else None
            for row in rows[done:]:
                round_, epoch = row.get("round", 0), row.get("round_epoch", row.get("epoch", 0))
                line = (f"[{self.labels.get(cell.run_id, cell.run_id)}] "
                        + (f"round {round_ + 1} " if round_ else "")
                        + f"epoch {epoch}/{cell.config.epochs} "
                        f"test_acc {row.get('test_acc', float('nan')):.2f}%")
                if per_epoch is not None:
                    epochs_left = max(0, cell.config.epochs - epoch)
                    line += (f"  {duration(per_epoch)}/epoch, "
                             + (f"ETA {duration(per_epoch * epochs_left)}" if epochs_left
                                else "last epoch")
                             + (" (this round)" if round_ else ""))
                lines.append(line)
            self.reported[cell.run_id] = len(rows)
        return lines


class EpochReporter:
    """Runs :meth:`EpochLines.poll` every ``interval_s`` seconds in a daemon thread."""

    def __init__(self, lines: EpochLines, write: Callable[[str], None], interval_s: float):
        self.lines, self.write, self.interval_s = lines, write, interval_s
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="epoch-lines")

    def __enter__(self) -> "EpochReporter":
        self.lines.reported = {c.run_id: len(read_metrics(
            paths.run_dir(c.config.sweep, c.run_id) / paths.METRICS)) for c in self.lines.cells}
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.flush()

    def flush(self) -> None:
        for line in self.lines.poll():
            self.write(line)

    def _loop(self) -> None:
        while not self.stopped.wait(self.interval_s):
            self.flush()
