"""Atomic writes: a reader (or a crash) never sees a half-written result or checkpoint.

Each writer writes a temporary file in the target's folder, flushes it to disk and renames it
over the target; ``os.replace`` is atomic on POSIX file systems.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO

import yaml


def _write_atomic(path: Path, write: Callable[[IO], None], mode: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    _write_atomic(path, lambda f: f.write(text), "w")


def write_bytes(path: Path, data: bytes) -> None:
    _write_atomic(path, lambda f: f.write(data), "wb")


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_yaml(path: Path, data: Any) -> None:
    write_text(path, yaml.safe_dump(data, sort_keys=False))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def torch_save(path: Path, obj: Any) -> None:
    import torch

    _write_atomic(path, lambda f: torch.save(obj, f), "wb")


def read_json(path: Path) -> Any | None:
    """The parsed file, or None when it is missing or unreadable (e.g. from an older crash)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
