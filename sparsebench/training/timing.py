"""Step and hook times that mean the same on a GPU as on the CPU, without a sync per step.

On the CPU a mark is the host clock. On CUDA, kernels run after the host has queued them, so
the host clock read after a step says when the step was *queued*, and a hook's time would
absorb whatever the queue still held; synchronizing around every mark would cost every step
a host-device round trip. A mark there is a CUDA event recorded on the stream instead: the
time between two events is when the device reached them. Marks are turned into seconds once
per epoch, after :meth:`Stopwatch.synchronize` (airbench's habit: time with CUDA events).
"""
from __future__ import annotations

import time
from functools import partial
from typing import Any, Callable

import torch


class Stopwatch:
    def __init__(self, device: torch.device, event: Callable[[], Any] | None = None):
        """``event``: a factory of objects with ``record()``, ``elapsed_time(end)`` in ms and
        ``synchronize()`` (CUDA's by default on a CUDA device; tests pass their own)."""
        if event is None and device.type == "cuda":
            event = partial(torch.cuda.Event, enable_timing=True)
        self.event = event
        self.pending: list[tuple[Any, Any]] = []     # intervals not yet read (see ``add``)

    def mark(self) -> Any:
        if self.event is None:
            return time.perf_counter()
        event = self.event()
        event.record()
        return event

    def seconds(self, start: Any, end: Any) -> float:
        """The time between two marks (device marks: after :meth:`synchronize`)."""
        if self.event is None:
            return end - start
        return start.elapsed_time(end) / 1000.0

    def synchronize(self) -> None:
        """Wait until the device has reached everything marked so far."""
        if self.event is not None:
            self.mark().synchronize()

    def add(self, start: Any, end: Any) -> None:
        """Keep an interval to be summed by :meth:`take`."""
        self.pending.append((start, end))

    def take_each(self) -> list[float]:
        """The kept intervals in seconds, in order; emptied (synchronizes first)."""
        self.synchronize()
        each = [self.seconds(start, end) for start, end in self.pending]
        self.pending.clear()
        return each

    def take(self) -> float:
        """The kept intervals' total in seconds (see :meth:`take_each`)."""
        return sum(self.take_each())
