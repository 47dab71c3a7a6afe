"""Step and hook times (sparsebench.training.timing): on CUDA they come from events on the
device's stream, read once per epoch after one synchronize. The CUDA branch runs here with a
stand-in event whose clock is the device's: it is "reached" only when the test says so."""
from __future__ import annotations

import pytest
import torch

from sparsebench.training.timing import Stopwatch


class Device:
    """A queue the host fills faster than the device drains it."""

    def __init__(self):
        self.now = 0.0          # the device's clock, s
        self.synced = 0
        self.recorded = []

    def event(self):
        device = self

        class Event:
            def record(self):
                self.at = None   # known only once the device reaches it
                self.queued_at = device.now

            def reach(self, at):
                self.at = at

            def elapsed_time(self, end):
                assert self.at is not None and end.at is not None, "read before synchronize"
                return 1000.0 * (end.at - self.at)

            def synchronize(self):
                device.synced += 1
                for event in device.recorded:
                    if event.at is None:
                        event.reach(device.now)

        e = Event()
        self.recorded.append(e)
        return e


def test_device_marks_measure_the_device_and_sync_once_per_read():
    device = Device()
    clock = Stopwatch(torch.device("cuda"), event=device.event)
    a, b = clock.mark(), clock.mark()       # the host queued both at once ...
    a.reach(1.0)
    b.reach(1.25)                           # ... the device took 0.25 s between them
    clock.add(a, b)
    c, d = clock.mark(), clock.mark()
    c.reach(2.0)
    device.now = 2.5
    clock.add(c, d)                         # d is reached at the synchronize
    assert device.synced == 0               # nothing waited on the device while marking
    assert clock.take_each() == pytest.approx([0.25, 0.5])
    assert device.synced == 1 and clock.pending == []


def test_host_marks_on_the_cpu():
    clock = Stopwatch(torch.device("cpu"))
    start = clock.mark()
    clock.add(start, start + 0.125)
    clock.add(start, start + 0.5)
    assert clock.take() == pytest.approx(0.625)
    assert clock.take() == 0.0
