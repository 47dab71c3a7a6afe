"""Epoch lines while a sweep runs: one line per run and finished epoch, with an ETA.

The sweep's bar moves only when a run ends, which for a 12-hour CIFAR run says nothing for
hours, and a bar does not reach a log file at all (``nohup``, a SLURM job, ``make paper``).
:class:`EpochLines` reads each run's ``metrics.jsonl`` (written by the run wherever it trains:
here, a local worker, a SLURM node on the shared file system) and gives one line per epoch not
yet reported::

    [rigl d=0.05 seed=1] epoch 3/200 test_acc 61.20%  1.9 min/epoch, ETA 6.2 h

:class:`EpochReporter` polls it from a background thread every ``interval_s`` seconds (so at
most one burst of lines per interval) and writes the lines through the sweep's bar, which
keeps them above it on a terminal and as plain lines elsewhere.
"""
from __future__ import annotations

import threading
from typing import Callable

from ..storage import paths
from ..storage.run_files import read_metrics


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


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
                    left = per_epoch * max(0, cell.config.epochs - epoch)
                    line += (f"  {_duration(per_epoch)}/epoch, ETA {_duration(left)}"
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
