"""Atomic writes: a reader (or a crash) never sees a half-written result or checkpoint.

Each writer writes a temporary file in the target's folder, flushes it to disk and renames it
over the target; ``os.replace`` is atomic on POSIX file systems. The temporary file is created
with mode 0666 less the umask, like any file ``open()`` creates (``tempfile.mkstemp`` would make
it 0600 whatever the umask, and a labmate on shared scratch could not read the results).

A write that fails for want of space or permission (a full disk, a quota, a read-only file
system) raises :class:`WriteError`, whose message says what happened and names the file
("No space left on device: cannot write results/.../checkpoint.pt"), and leaves no temporary
file behind.
"""
from __future__ import annotations

import errno
import io
import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable, IO

import yaml

# The OSErrors that mean "this storage cannot take the file" rather than a bug.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


class WriteError(OSError):
    """A result, log or checkpoint could not be written; ``str()`` names the cause and file."""

    def __init__(self, path: Path, err: OSError):
        reason = err.strerror or os.strerror(err.errno) if err.errno else str(err)
        super().__init__(err.errno, f"{reason}: cannot write {path}")
        self.path = Path(path)

    def __str__(self) -> str:
        return self.strerror


def storage_error(path: Path, err: BaseException) -> WriteError | None:
    """``err`` as a WriteError when it is a storage failure writing ``path``, else None."""
    if isinstance(err, WriteError):
        return err
    if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
        return WriteError(path, err)
    return None


def _hidden_name(folder: Path | str, name: str, suffix: str) -> str:
    """``folder/.name.XXXX.suffix``, a random name beside ``name`` (may exist: callers retry)."""
    return os.path.join(folder, f".{name}.{secrets.token_hex(6)}.{suffix}")


def open_temporary(folder: Path, name: str) -> tuple[int, str]:
    """A new, empty ``folder/.name.XXXX.tmp`` opened for writing; its mode follows the umask."""
    while True:
        tmp = _hidden_name(folder, name, "tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def keep_as(path: Path, previous: Path) -> None:
    """Make ``previous`` a second name of the file now at ``path``, which stays where it is.

    A hard link, so that ``path`` exists at every instant: a worker stopped between keeping
    the old generation and renaming the new one into place (Ctrl-C, SIGTERM from a scheduler)
    leaves the old ``path``, not a gap. Where the file system has no hard links, ``path`` is
    renamed instead; the reader then falls back to ``previous`` for that instant.
    """
    folder, name = os.path.split(previous)
    while True:
        link = _hidden_name(folder, name, "link")
        try:
            os.link(path, link)
            break
        except FileExistsError:  # that random name is taken: another
            continue
        except OSError:
            os.replace(path, previous)
            return
    try:
        os.replace(link, previous)
    except BaseException:
        os.unlink(link)
        raise


def _write_atomic(path: Path, write: Callable[[IO], None], mode: str,
                  previous: Path | None = None) -> None:
    """Write ``path`` through a temporary file; with ``previous``, the file it replaces is
    first kept as ``previous`` (so the older generation survives the new one's arrival)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = open_temporary(path.parent, path.name)
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if previous is not None and os.path.exists(path):
            keep_as(path, previous)
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        clear = storage_error(path, err)
        if clear is not None and clear is not err:
            raise clear from None
        raise


def write_text(path: Path, text: str) -> None:
    _write_atomic(path, lambda f: f.write(text), "w")


def append_text(path: Path, text: str) -> None:
    """Append to a log file (not atomic: a log is read as it grows); storage failures raise
    :class:`WriteError`."""
    try:
        with open(path, "a") as f:
            f.write(text)
    except OSError as err:
        raise storage_error(path, err) or err from None


def write_bytes(path: Path, data: bytes) -> None:
    _write_atomic(path, lambda f: f.write(data), "wb")


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_yaml(path: Path, data: Any) -> None:
    write_text(path, yaml.safe_dump(data, sort_keys=False))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def torch_save(path: Path, obj: Any, previous: Path | None = None) -> None:
    """``torch.save`` atomically. It serializes to memory first: torch wraps a failing file
    write in a RuntimeError of its own, which would hide "No space left on device"."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _write_atomic(path, lambda f: f.write(buffer.getbuffer()), "wb", previous)


def read_json(path: Path) -> Any | None:
    """The parsed file, or None when it is missing or unreadable (e.g. from an older crash)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
