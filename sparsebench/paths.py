"""Every file and folder a run or a sweep writes, named in one place (after open_lth's paths.py).

Results live under ``$SPARSEBENCH_RESULTS`` (default ``./results``) so that a cluster user can
point them at scratch storage::

    results/SWEEP/runs/RUN_ID/{config.yaml, result.json, metrics.jsonl, log, checkpoint.pt,
                               checkpoint.prev.pt, train.lock (while training),
                               slurm_job.json (when submitted to SLURM)}
    results/SWEEP/{summary.csv, tables/, figures/}

Nothing escapes the results root: a sweep name or run id is one plain folder name (no path
separator, no ``..``, not absolute), and every folder built here is checked to lie under the
root once symbolic links are resolved (:class:`OutsideResults` otherwise).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

CONFIG = "config.yaml"
RESULT = "result.json"
METRICS = "metrics.jsonl"
LOG = "log"
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_PREVIOUS = "checkpoint.prev.pt"  # the generation before, kept until the next is whole
RUN_LOCK = "train.lock"                     # held by the one process training the run
SLURM_JOB = "slurm_job.json"                # a SLURM-run's job id and the paths of its logs

# One folder name: letters, digits and ``._-``, not starting with a dot (so not ``..``).
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
NAME_RULE = "a folder name of letters, digits, '.', '_' and '-', not starting with '.'"


class OutsideResults(ValueError):
    """A path that would lie outside the results root."""


def is_safe_name(name: object) -> bool:
    """Whether ``name`` is one plain folder name (see NAME_RULE)."""
    return isinstance(name, str) and len(name) <= 200 and _NAME.fullmatch(name) is not None


def results_root() -> Path:
    return Path(os.environ.get("SPARSEBENCH_RESULTS", "results"))


def confined(path: Path, root: Path | None = None) -> Path:
    """``path`` itself, after checking that it lies under the results root (``root``)."""
    base = Path(root or results_root()).resolve()
    resolved = Path(path).resolve()
    if resolved != base and base not in resolved.parents:
        raise OutsideResults(f"{path} lies outside the results folder {base}")
    return Path(path)


def _child(parent: Path, name: str, what: str, root: Path | None) -> Path:
    if not is_safe_name(name):
        raise OutsideResults(f"{what} {name!r}: must be {NAME_RULE}")
    return confined(parent / name, root)


def sweep_dir(sweep: str, root: Path | None = None) -> Path:
    return _child(root or results_root(), sweep, "sweep name", root)


def runs_dir(sweep: str, root: Path | None = None) -> Path:
    return sweep_dir(sweep, root) / "runs"


def run_dir(sweep: str, run_id: str, root: Path | None = None) -> Path:
    return _child(runs_dir(sweep, root), run_id, "run id", root)


def summary_csv(sweep: str, root: Path | None = None) -> Path:
    return sweep_dir(sweep, root) / "summary.csv"


def tables_dir(sweep: str, root: Path | None = None) -> Path:
    return sweep_dir(sweep, root) / "tables"


def figures_dir(sweep: str, root: Path | None = None) -> Path:
    return sweep_dir(sweep, root) / "figures"


def submitit_dir(sweep: str, root: Path | None = None) -> Path:
    """Where submitit keeps its pickles and SLURM logs for a sweep."""
    return sweep_dir(sweep, root) / "jobs"


def submitted_jobs(sweep: str, root: Path | None = None) -> Path:
    """run_id -> SLURM job id of each submitted run, so a relaunch reattaches instead of resubmitting."""
    return submitit_dir(sweep, root) / "submitted.json"


def launcher_lock(sweep: str, root: Path | None = None) -> Path:
    """Held by the one launcher working on a sweep, so two launchers never run a run twice."""
    return submitit_dir(sweep, root) / "launcher.lock"


def benchmarks_dir(root: Path | None = None) -> Path:
    return (root or results_root()) / "benchmarks"


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def sweeps_dir() -> Path:
    return repo_root() / "sweeps"


def configs_dir() -> Path:
    return repo_root() / "configs"


def methods_dir() -> Path:
    return repo_root() / "methods"


# The GSE paper's artifacts (sparsebench.paper): tables, figures and index.md in one folder.
def paper_dir(root: Path | None = None) -> Path:
    return (root or results_root()) / "paper"


def paper_mini_dir(root: Path | None = None) -> Path:
    """The miniature paper (``make paper-mini``): its own sweeps, runs, data and report."""
    return (root or results_root()) / "paper_mini"


def paper_overlays_dir() -> Path:
    """What the miniature changes in every paper sweep (sweeps/mini/common.yaml, tiny.yaml)."""
    return sweeps_dir() / "mini"


def protocols_dir() -> Path:
    """Named protocols (``protocol: NAME`` in a config or sweep): protocols/NAME.yaml."""
    return repo_root() / "protocols"
