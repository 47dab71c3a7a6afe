"""One writer at a time: a lock file that names its holder (pid, host, since when).

Used for a sweep's launcher (``results/NAME/jobs/launcher.lock``) and for each run
(``results/NAME/runs/RUN_ID/train.lock``), so that two launchers never start the same runs
and two ``sparsebench.train`` processes never train the same run into the same folder.

The lock is an ``fcntl.flock`` on the file, which the kernel (and NFSv4's lock manager)
releases when its holder dies, however it dies: a lock left by a dead process is therefore
stale by construction and the next process takes it over, saying whose it was. The file's
text (``pid N on HOST since TIME``) is only there to name the holder in messages.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


class Busy(RuntimeError):
    """Another live process holds the lock. ``holder`` is its ``pid N on HOST since TIME``."""

    def __init__(self, message: str, holder: str):
        super().__init__(message)
        self.holder = holder


def holder_text() -> str:
    since = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return f"pid {os.getpid()} on {platform.node()} since {since}"


@contextmanager
def hold(path: Path, busy_message: Callable[[str], str], *, wait_s: float = 0.0,
         on_takeover: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock file ``path`` for the block.

    When another live process holds it, retry for up to ``wait_s`` seconds, then raise
    :class:`Busy` with ``busy_message(holder)``. When the file names a holder that is gone
    (the lock was free), ``on_takeover(previous holder)`` is called before the block runs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    holder = f.read().strip() or "another process"
                    raise Busy(busy_message(holder), holder) from None
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        f.seek(0)
        previous = f.read().strip()
        if previous and on_takeover is not None:
            on_takeover(previous)
        f.seek(0)
        f.truncate()
        f.write(holder_text() + "\n")
        f.flush()
        try:
            yield
        finally:
            # An empty file says "free" to the next holder (no takeover message).
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)
