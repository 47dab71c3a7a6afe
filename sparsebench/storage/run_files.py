"""A run folder's files, read: result.json checked field by field, metrics.jsonl line by line.

The statuses a run can have and the types result.json fields must have live here, below the
trainer (which writes these files and reads metrics.jsonl back on resume) and the reports (which
read whole sweeps of them): both import this module, and it imports neither.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

COMPLETED, FAILED, DIVERGED, RUNNING = "completed", "failed", "diverged", "running"
STOPPED, UNREADABLE = "stopped", "unreadable"
STATUSES = (COMPLETED, FAILED, DIVERGED, STOPPED, RUNNING, UNREADABLE)


class ResultsWarning(UserWarning):
    """A run file that cannot be read (or read only in part); the message names the file."""


def warn_file(path: Path, problem: str) -> None:
    warnings.warn(f"{path}: {problem}", ResultsWarning, stacklevel=2)


_NUMBER = (int, float)
# The types result.json fields must have where present and not null: a row with anything else
# would be averaged as garbage (or crash a table), so its run counts as unreadable instead.
RESULT_TYPES: dict[str, tuple[type, ...]] = {
    **{key: (str,) for key in ("run_id", "sweep", "status", "method", "model", "dataset",
                               "error", "distribution", "engine")},
    **{key: _NUMBER for key in ("density", "actual_density", "width", "final_test_acc",
                                "best_test_acc", "final_train_loss", "train_flops",
                                "train_flops_rel_dense", "inference_flops",
                                "inference_flops_rel_dense", "dense_forward_flops",
                                "wall_clock_s", "step_time_ms", "update_time_s")},
    **{key: (int,) for key in ("seed", "epochs", "epochs_completed", "steps", "mask_updates")},
    "dynamic": (bool,),  # whether the method's schedule changes the topology during training
    **{key: (dict,) for key in ("config", "method_params", "layer_densities", "layer_sizes",
                                "step_time_quantiles_ms")},
}
FINISHED = (COMPLETED, FAILED, DIVERGED)


def result_problem(result: Any) -> str | None:
    """What is wrong with a parsed result.json, or None when every field has its type."""
    if not isinstance(result, dict):
        return f"expected a JSON object, got {type(result).__name__}"
    if result.get("status") not in FINISHED:
        return f"status {result.get('status')!r} is not one of {', '.join(FINISHED)}"
    for key, types in RESULT_TYPES.items():
        value = result.get(key)
        if value is None:
            continue
        # bool is an int to Python: only a field that wants a bool may hold one
        if isinstance(value, bool) != (bool in types) or not isinstance(value, types):
            want = "a number" if types is _NUMBER else f"a {types[0].__name__}"
            return f"field {key} is {value!r} ({type(value).__name__}), expected {want}"
    return None


def read_text(path: Path) -> tuple[str | None, str | None]:
    """(text, None), or (None, what is wrong) for a file that is missing, unreadable or not
    UTF-8 (bytes that are not UTF-8 never raise)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        return None, f"cannot read ({err.strerror or err})"
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as err:
        return None, f"not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})"


def read_metrics(path: Path) -> list[dict]:
    """The parsed lines of a metrics.jsonl (none for a missing file); lines that are not JSON
    objects (cut short, not UTF-8) are left out with one warning naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as err:
        warn_file(path, f"cannot read ({err.strerror or err}); its epochs are left out")
        return []
    rows, bad = [], []
    for number, line in enumerate(raw.splitlines(), 1):
        try:
            row = json.loads(line.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError is one too
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif line.strip():
            bad.append(number)
    if bad:
        warn_file(path, f"{len(bad)} line{'s' * (len(bad) > 1)} not a JSON object (first: line "
                    f"{bad[0]}); {'they are' if len(bad) > 1 else 'it is'} left out")
    return rows


def read_steps(path: Path) -> list[dict]:
    """The rows of a steps.jsonl, epochs counted from 1 (``epoch`` over all rounds,
    ``round_epoch`` within the round) as in metrics.jsonl. Files written before sparsebench
    counted them alike (their rows have no ``round_epoch``) held the epoch's index within its
    round, from 0: those rows get ``round_epoch`` = index + 1, and ``epoch`` the same in round
    0 (later rounds' totals are not in the file: ``None``)."""
    rows = read_metrics(path)
    for row in rows:
        if "round_epoch" not in row and isinstance(row.get("epoch"), int):
            row["round_epoch"] = row["epoch"] + 1
            row["epoch"] = row["round_epoch"] if not row.get("round") else None
    return rows


def read_result(path: Path) -> tuple[dict | None, str | None]:
    text, problem = read_text(path)
    if problem is not None:
        return None, problem
    try:
        result = json.loads(text)
    except ValueError as err:
        return None, f"not valid JSON ({err})"
    problem = result_problem(result)
    return (result, None) if problem is None else (None, problem)
