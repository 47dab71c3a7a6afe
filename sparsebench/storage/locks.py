"""One writer at a time: a lock file that names its holder (pid, host, since when).

Used for a sweep's launcher (``results/NAME/jobs/launcher.lock``) and for each run
(``results/NAME/runs/RUN_ID/train.lock``), so that two launchers never start the same runs
and two ``sparsebench.train`` processes never train the same run into the same folder.

The lock is an ``fcntl.flock`` on the file, which the kernel (and NFSv4's lock manager)
releases when its holder dies, however it dies: a lock left by a dead process is therefore
stale by construction and the next process takes it over, saying whose it was. The file's
text (``pid N on HOST since TIME``) is only there to name the holder in messages.

A holder that ends normally removes the file (a finished run folder holds no lock file), while
it still holds the lock. A process that opened the file just before and then got the lock holds
it on a file that is no longer there; it sees that (the path is gone or names another file)
and starts again on the path, so two processes never both believe they hold the lock.
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
    """Hold the lock file ``path`` for the block; the file is removed when the block ends.

    When another live process holds it, retry for up to ``wait_s`` seconds, then raise
    :class:`Busy` with ``busy_message(holder)``. When the file names a holder that is gone
    (the lock was free), ``on_takeover(previous holder)`` is called before the block runs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            if time.monotonic() >= deadline:
                raise Busy(busy_message(holder), holder) from None
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            continue
        if _same_file(f, path):
            break
        f.close()  # its holder removed it between our open and our lock: take the new one
    with f:
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
            # Removed while still held: a waiting process that gets this lock next sees that
            # the path is gone (or is another file) and starts again on the path.
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            fcntl.flock(f, fcntl.LOCK_UN)


def _same_file(f, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(f.fileno())
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def holder(path: Path) -> str | None:
    """Who holds the lock file ``path`` now (``pid N on HOST since TIME``), or None when no
    live process does (no file, or one a dead process left)."""
    try:
        f = open(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with f:
        text = f.read().strip()
        if not text:  # a holder writes its name at once: an empty file is being let go
            return None
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return text
        except OSError:  # a file system without flock (some Lustre mounts): take it at its word
            return text
        fcntl.flock(f, fcntl.LOCK_UN)
        return None
