"""Every file and folder a run or a sweep writes, named in one place (after open_lth's paths.py),
and where the methods, sweeps, configs and protocols it reads are found (the user's, then the
built-in ones: see "Built-in and user files" below).

Results live under ``$SPARSEBENCH_RESULTS`` (default ``./results``) so that a cluster user can
point them at scratch storage::

    results/SWEEP/runs/RUN_ID/{config.yaml, result.json, metrics.jsonl, log, checkpoint.pt,
                               checkpoint.prev.pt, train.lock (while training),
                               slurm_job.json (when submitted to SLURM), steps.jsonl,
                               topology.jsonl, final.pt, events.out.tfevents.*}
    results/SWEEP/{summary.csv, tables/, figures/}

Nothing escapes the results root: a sweep name or run id is one plain folder name (no path
separator, no ``..``, not absolute), and every folder built here is checked to lie under the
root once symbolic links are resolved (:class:`OutsideResults` otherwise).
"""
from __future__ import annotations

import os
import re
import sys
from importlib import resources
from pathlib import Path

CONFIG = "config.yaml"
RESULT = "result.json"
METRICS = "metrics.jsonl"
LOG = "log"
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_PREVIOUS = "checkpoint.prev.pt"  # the generation before, kept until the next is whole
RUN_LOCK = "train.lock"                     # held by the one process training the run
STEPS = "steps.jsonl"                       # per-step metrics every tracking.step_interval steps
TOPOLOGY = "topology.jsonl"                 # per mask update and layer: pruned, grown, ITOP rate
FINAL = "final.pt"                          # the trained weights and masks (sparsebench.load_model)
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
    """The checkout this package runs from (in an installed wheel: the site-packages folder)."""
    return Path(__file__).resolve().parents[2]  # sparsebench/storage/paths.py


# ---------------------------------------------------------------------------------------------
# Built-in and user files: methods/*.py, sweeps/*.yaml, configs/*.yaml, protocols/*.yaml.
#
# A checkout keeps them in top-level folders; a wheel ships copies inside the package, under
# sparsebench/_builtin/KIND/ (setup.py's build step puts them there), found through
# importlib.resources. The user's own folders come first: each folder on
# $SPARSEBENCH_<KIND>_PATH (os.pathsep-separated), then ./KIND in the current directory.

KINDS = ("methods", "sweeps", "configs", "protocols")
_announced: set[tuple[str, str]] = set()


def builtin_dir(kind: str) -> Path:
    """The built-in folder of ``kind``: the installed package's copy, else the checkout's."""
    packaged = resources.files("sparsebench") / "_builtin" / kind
    if packaged.is_dir():
        return Path(str(packaged))
    return repo_root() / kind


def user_dirs(kind: str) -> list[Path]:
    """The user's folders of ``kind``, searched before the built-in one."""
    extra = os.environ.get(f"SPARSEBENCH_{kind.upper()}_PATH", "")
    return [Path(p) for p in extra.split(os.pathsep) if p] + [Path.cwd() / kind]


def search_dirs(kind: str) -> list[Path]:
    """Every existing folder of ``kind``, the user's first, each once (by resolved path)."""
    out: list[Path] = []
    for folder in [*user_dirs(kind), builtin_dir(kind)]:
        if folder.is_dir() and all(folder.resolve() != seen.resolve() for seen in out):
            out.append(folder)
    return out


def resource_names(kind: str, suffix: str = ".yaml") -> list[str]:
    """The names (file stems) of ``kind`` found in any search folder."""
    return sorted({p.stem for folder in search_dirs(kind) for p in folder.glob(f"*{suffix}")
                   if not p.name.startswith(("_", "."))})


def find_resource(kind: str, filename: str) -> Path | None:
    """The first ``folder/filename`` among :func:`search_dirs`, or None. When another folder
    holds a different file of that name, one line on stderr says which one won (once per
    process)."""
    found = [folder / filename for folder in search_dirs(kind) if (folder / filename).is_file()]
    if not found:
        return None
    winner, *others = found
    differ = [p for p in others if p.read_bytes() != winner.read_bytes()]
    if differ and (kind, filename) not in _announced:
        _announced.add((kind, filename))
        print(f"note: {kind[:-1]} {Path(filename).stem!r}: using {winner}; not "
              f"{', '.join(map(str, differ))}", file=sys.stderr)
    return winner


def config_file(ref: str | Path) -> Path:
    """A run config given as a path, or by name (``fmnist_mlp``, ``configs/fmnist_mlp.yaml``),
    found among the configs folders. A name found nowhere comes back as given (the loader then
    says that the file is missing)."""
    path = Path(ref)
    if path.is_file() or path.is_absolute():
        return path
    parts = path.parts[1:] if path.parts[:1] == ("configs",) else path.parts
    if len(parts) == 1:
        name = parts[0] if path.suffix in (".yaml", ".yml") else f"{parts[0]}.yaml"
        return find_resource("configs", name) or path
    return path


# The GSE paper's artifacts (sparsebench.paper): tables, figures and index.md in one folder.
def paper_dir(root: Path | None = None) -> Path:
    return (root or results_root()) / "paper"


def paper_mini_dir(root: Path | None = None) -> Path:
    """The miniature paper (``make paper-mini``): its own sweeps, runs, data and report."""
    return (root or results_root()) / "paper_mini"


def paper_overlays_dir() -> Path:
    """What the miniature changes in every paper sweep (sweeps/mini/common.yaml, tiny.yaml)."""
    return builtin_dir("sweeps") / "mini"
