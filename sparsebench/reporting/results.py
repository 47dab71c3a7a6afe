"""A sweep's runs as data: one pandas row per run folder, and the sweep's ``summary.csv``.

``load_results(sweep)`` reads ``results/SWEEP/runs/*/result.json``. Nested values are
flattened with dotted names: the resolved config as ``config.optim.lr``, ``config.model.width``
..., the method's parameters as ``method.<param>`` (e.g. ``method.sampler``). The per-layer maps
``layer_densities`` and ``layer_sizes`` stay dicts (their keys are the model's layer names).

A sweep in progress is readable at any moment: a folder that has its ``config.yaml`` but no
``result.json`` yet is a row with status ``running`` while a live process holds the run's lock
(``train.lock``, :mod:`sparsebench.storage.locks`), and ``stopped`` when none does: the process was
interrupted or killed (out of memory, a SLURM time limit or preemption) and the same launch
resumes the run from its last epoch checkpoint. Either row carries the epochs finished so far,
from ``metrics.jsonl``. Only ``completed`` runs carry accuracies that tables and figures
average.

Damaged files are named, never silent, and never stop the rest: a ``result.json`` or
``config.yaml`` that cannot be read (not UTF-8, not JSON/YAML, a field of the wrong type such
as a string accuracy) gives one :class:`ResultsWarning` naming the file and what is wrong, and
its run is a row with status ``unreadable`` (with the config's columns where the config is
readable), counted but never averaged in. Malformed lines of a ``metrics.jsonl`` are skipped
with one warning per file.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import yaml

from ..storage import atomic, locks, paths
from .cells import missing
from ..storage.run_files import (COMPLETED, RUNNING, STATUSES, STOPPED, UNREADABLE,
                                 ResultsWarning, read_metrics, read_result, read_text, warn_file)

__all__ = ["load_results", "load_metrics", "load_run", "layer_table", "completed", "superseded",
           "write_summary", "available_sweeps", "ResultsWarning", "STATUSES"]

# Per-layer maps keyed by layer name: kept as dicts, not flattened into columns.
PER_LAYER_KEYS = ("layer_densities", "layer_sizes")

# The columns a reader looks at first, in this order; every other column follows.
LEADING_COLUMNS = (
    "run_id", "sweep", "status", "dataset", "model", "width", "method", "method_label",
    "density", "actual_density", "seed", "epochs", "epochs_completed", "final_test_acc",
    "best_test_acc", "final_train_loss", "train_flops_rel_dense", "inference_flops_rel_dense",
    "train_flops", "inference_flops", "dense_forward_flops", "wall_clock_s", "step_time_ms",
    "update_time_s", "steps", "error",
)


def method_label(method: Any, sampler: Any = None) -> str:
    """A readable name for a method variant: ``gse (grabo)`` for GSE with its sampler."""
    name = "" if missing(method) else str(method)
    return f"{name} ({sampler})" if not missing(sampler) else name


def flatten(data: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become tuples so that columns stay hashable."""
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, list):
            out[name] = tuple(value)
        else:
            out[name] = value
    return out


def row_from_result(result: dict) -> dict:
    """One DataFrame row from a parsed result.json (or a running run's header)."""
    row = {}
    for key, value in result.items():
        if key in PER_LAYER_KEYS:
            row[key] = value if isinstance(value, dict) else None
        elif key == "config" and isinstance(value, dict):
            row.update(flatten(value, "config."))
        elif key == "method_params" and isinstance(value, dict):
            row.update(flatten(value, "method."))
        elif isinstance(value, dict):
            row.update(flatten(value, key + "."))
        elif isinstance(value, list):
            row[key] = tuple(value)
        else:
            row[key] = value
    row["method_label"] = method_label(row.get("method"), row.get("method.sampler"))
    return row


def _running_header(config: dict) -> dict:
    """The result.json keys known before training ends, from a run's config.yaml."""
    # The trainer defines these keys once (result_header); reuse it so both stay the same.
    from ..config.schema import from_dict

    with warnings.catch_warnings():  # tqdm.auto warns in Jupyter without ipywidgets: not ours
        warnings.simplefilter("ignore")
        from ..training import result_header

    header = result_header(from_dict(config), RUNNING, None, None)
    header.update(finished_at=None, git_sha=None, hostname=None)
    return header


def _read_config_header(path: Path) -> tuple[dict | None, str | None]:
    """The result.json keys a run's config.yaml gives (status running), or what is wrong."""
    text, problem = read_text(path)
    if problem is not None:
        return None, problem
    try:
        return _running_header(yaml.safe_load(text)), None
    except Exception as err:  # not YAML, or a config this version cannot read
        return None, f"cannot read ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"


def load_run(run_dir: Path) -> dict | None:
    """The row of one run folder, or None when the folder holds no run yet (no config.yaml
    and no result.json)."""
    result_path, config_path = run_dir / paths.RESULT, run_dir / paths.CONFIG
    has_result, has_config = result_path.exists(), config_path.exists()
    if not has_result and not has_config:
        return None
    if has_result:
        result, problem = read_result(result_path)
        if result is not None:
            row = row_from_result(result)
            row.setdefault("run_id", run_dir.name)
            row["run_dir"] = str(run_dir)
            return row
        # result.json is written atomically, so an unreadable one was damaged afterwards.
        warn_file(result_path, f"{problem}; the run counts as unreadable")
        error = f"{paths.RESULT}: {problem}"
    header, config_problem = _read_config_header(config_path) if has_config else (None, None)
    if config_problem is not None:
        warn_file(config_path, f"{config_problem}; the run counts as unreadable")
        error = f"{paths.CONFIG}: {config_problem}"
    if header is None:
        row = {"status": UNREADABLE, "error": error}
    else:
        row = row_from_result(header)
        if has_result:
            row.update(status=UNREADABLE, error=error)
        else:
            row["epochs_completed"] = len(read_metrics(run_dir / paths.METRICS))
            if locks.holder(run_dir / paths.RUN_LOCK) is None:
                row["status"] = STOPPED
    if row["status"] == UNREADABLE:
        row.setdefault("method_label", method_label(row.get("method")))
    row.setdefault("run_id", run_dir.name)
    row["run_dir"] = str(run_dir)
    return row


def sweep_exists(sweep: str, root: Path | None = None) -> bool:
    return paths.is_safe_name(sweep) and paths.runs_dir(sweep, root).is_dir()


def available_sweeps(root: Path | None = None) -> list[str]:
    """Every folder under the results root that holds a ``runs/`` folder."""
    base = Path(root) if root is not None else paths.results_root()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir()
                  if paths.is_safe_name(p.name) and paths.runs_dir(p.name, base).is_dir())


def load_results(sweep: str | Iterable[str], root: Path | str | None = None) -> pd.DataFrame:
    """All runs of ``sweep`` as a DataFrame, one row per run folder (see the module docstring).
    Several sweeps (a list of names) are one frame whose ``sweep`` column tells them apart.

    Raises FileNotFoundError when a sweep has no results folder.
    """
    root = Path(root) if root is not None else None
    names = [sweep] if isinstance(sweep, str) else list(sweep)
    rows = []
    for name in names:
        runs = paths.runs_dir(name, root)
        if not runs.is_dir():
            raise FileNotFoundError(f"no results for sweep {name!r}: {runs} does not exist")
        for d in sorted(runs.iterdir()):
            if d.is_dir() and (row := load_run(d)) is not None:
                rows.append({**row, "sweep": name})  # the folder's name, also for copied runs
    return _frame(rows)


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for column in LEADING_COLUMNS + ("run_dir",):
        if column not in df.columns:
            df[column] = None
    df["status"] = df["status"].fillna(RUNNING)
    for column in ("density", "actual_density", "width", "final_test_acc", "best_test_acc",
                   "final_train_loss", "train_flops", "train_flops_rel_dense", "inference_flops",
                   "inference_flops_rel_dense", "dense_forward_flops", "wall_clock_s",
                   "step_time_ms", "update_time_s"):
        df[column] = pd.to_numeric(df[column], errors="coerce").astype(float)
    df = _with_current_defaults(df)
    df["superseded"] = superseded(df)
    rest = [c for c in df.columns if c not in LEADING_COLUMNS]
    method_cols = sorted(c for c in rest if c.startswith("method."))
    config_cols = sorted(c for c in rest if c.startswith("config."))
    other = [c for c in rest if c not in method_cols and c not in config_cols]
    df = df[list(LEADING_COLUMNS) + method_cols + other + config_cols]
    if len(df):
        df = df.sort_values(["dataset", "model", "method_label", "density", "seed", "run_id"],
                            na_position="last", kind="stable").reset_index(drop=True)
    return df


# A run written before a config field existed lacks it, and did what its default does: the run
# id leaves such a field out of the hash at its default (config.schema.HASHED_UNLESS_DEFAULT),
# and a method parameter added later defaults to the method's earlier behaviour.
def _with_current_defaults(df: pd.DataFrame) -> pd.DataFrame:
    import dataclasses

    from ..config.schema import HASHED_UNLESS_DEFAULT, ConfigError
    from .. import methods

    for field, default in HASHED_UNLESS_DEFAULT.items():
        column = f"config.{field}"
        if column in df.columns:
            df[column] = df[column].where(df[column].notna(), default)
    if "config.method.name" not in df.columns:
        return df
    for name in df["config.method.name"].dropna().unique():
        try:
            params = dataclasses.asdict(methods.get(name).Params())
        except ConfigError:   # a method this checkout lacks: its runs keep what they recorded
            continue
        rows = df["config.method.name"] == name
        for field, default in params.items():
            column = f"config.method.{field}"
            if column in df.columns and not isinstance(default, (list, dict)):
                unset = rows & df[column].isna()
                df.loc[unset, column] = default
    return df


def superseded(df: pd.DataFrame) -> pd.Series:
    """True for a completed run whose config (tracking and bookkeeping fields aside) and seed
    equal a completed run of the same sweep that finished later: the same experiment twice (a
    sweep rerun under a newer sparsebench whose run ids changed). Tables, figures and tests
    count the newest only, so a seed is never counted twice."""
    from ..config.schema import UNHASHED_FIELDS

    out = pd.Series(False, index=df.index)
    if df.empty or "finished_at" not in df.columns:
        return out
    skip = tuple(f"config.{f}" for f in UNHASHED_FIELDS)
    columns = [c for c in df.columns if c.startswith("config.") and not c.startswith(skip)]
    columns += ["sweep"] if "sweep" in df.columns else []   # within one sweep's folder only
    done = df[df["status"] == COMPLETED]
    if done.empty or not columns:
        return out
    order = done.sort_values("finished_at", na_position="first", kind="stable")
    repeated = order[columns].astype(str).duplicated(keep="last")
    out.loc[order.index[repeated.to_numpy()]] = True
    return out


def summary_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` ready for CSV: every list, tuple or dict value (per-layer maps, a list setting
    such as ``device_names``, Lottery's rounds) as JSON text, never a Python repr."""
    out = df.copy()
    for column in out.columns[out.dtypes == object]:
        values = out[column]
        if any(isinstance(v, (dict, list, tuple)) for v in values):
            out[column] = [_json_cell(v) for v in values]
    return out


def _json_cell(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def write_summary(sweep: str, root: Path | str | None = None,
                  df: pd.DataFrame | None = None) -> Path:
    """Write ``results/SWEEP/summary.csv`` (atomically) from :func:`load_results`."""
    root = Path(root) if root is not None else None
    if df is None:
        df = load_results(sweep, root)
    path = paths.summary_csv(sweep, root)
    atomic.write_text(path, summary_frame(df).to_csv(index=False))
    return path


# ---------------------------------------------------------------------------------------------
# long-format views for figures

def completed(df: pd.DataFrame) -> pd.DataFrame:
    """The completed runs a table or figure counts: a run superseded by a later run of the same
    config and seed (:func:`superseded`) is left out."""
    keep = df["status"] == COMPLETED
    if "superseded" in df.columns:
        keep &= ~df["superseded"].fillna(False).astype(bool)
    return df[keep]


def load_metrics(df: pd.DataFrame, statuses: Iterable[str] = (COMPLETED,)) -> pd.DataFrame:
    """One row per (run, epoch) from the metrics.jsonl of the runs of ``df`` (a DataFrame of
    :func:`load_results`) whose status is in ``statuses``: the keys the trainer logs after
    each epoch (``epoch``, ``test_acc``, ``train_loss``, ``train_acc`` ...) with the run's
    identity columns (``run_id``, ``dataset``, ``model``, ``width``, ``method``,
    ``method_label``, ``density``, ``seed``). Also ``sparsebench.load_metrics(sweep)``."""
    keep = ["run_id", "dataset", "model", "width", "method", "method_label", "density", "seed"]
    frames = []
    for _, run in df[df["status"].isin(list(statuses))].iterrows():
        rows = read_metrics(Path(run["run_dir"]) / paths.METRICS)
        if rows:
            frame = pd.DataFrame(rows)
            for column in keep:
                frame[column] = run[column]
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=keep + ["epoch", "test_acc"])
    return pd.concat(frames, ignore_index=True)


def layer_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (completed run, prunable layer): size, density, active connections and
    compression = size / active (the GSE paper's layer-wise sparsity measure; inf if none)."""
    rows = []
    for _, run in completed(df).iterrows():
        densities, sizes = run.get("layer_densities"), run.get("layer_sizes")
        if not isinstance(densities, dict) or not isinstance(sizes, dict):
            continue
        for index, (layer, density) in enumerate(densities.items()):
            size = sizes.get(layer)
            if size is None or density is None:
                continue
            active = round(density * size)
            rows.append({"run_id": run["run_id"], "dataset": run["dataset"], "model": run["model"],
                         "method_label": run["method_label"], "density": run["density"],
                         "seed": run["seed"], "layer": layer, "layer_index": index,
                         "size": size, "layer_density": density, "active": active,
                         "compression": size / active if active else float("inf")})
    return pd.DataFrame(rows, columns=["run_id", "dataset", "model", "method_label", "density",
                                       "seed", "layer", "layer_index", "size", "layer_density",
                                       "active", "compression"])
