"""The paper in miniature on a CPU: ``python -m sparsebench.paper.mini`` (``make paper-mini``).

Every paper sweep is derived cell by cell from the full one (so the two cannot drift): each
cell's resolved config goes through the changes of ``sweeps/mini/common.yaml`` (a subset of
Fashion-MNIST written in CIFAR's file format, 32 × 32 × 3, in place of CIFAR and ImageNet:
:mod:`sparsebench.paper.fashion_cifar`; smaller models, 1 % of the epochs, one seed, mask
updates every 8 steps) and the result is written as an explicit sweep file,
``results/paper_mini/sweeps/NAME.yaml``, runnable on its own with ``python -m sparsebench.sweep``.
Then it trains them all in local processes, runs the sparse-layer benchmark small, and writes
the report into ``results/paper_mini/`` with ``index.md`` saying at the top that it is a
miniature and, per sweep, how it differs::

    results/paper_mini/{index.md, table*.{md,tex,csv}, fig*.{png,pdf}}
    results/paper_mini/{sweeps/, results/NAME/runs/, data/, kernels/}

``--tiny`` adds ``sweeps/mini/tiny.yaml`` on top (the test suite's version: seconds per artifact).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..storage import atomic, paths
from ..launch import spec as sweep_spec
from ..config.schema import ConfigError, flat_config, to_dict
from ..config.files import load_yaml, set_dotted
from . import fashion_cifar
from ..cli import prog
from .artifacts import paper_sweeps
from .names import MODELS, Names

UNHASHED = ("sweep", "progress")


@dataclass
class MiniSpec:
    """sweeps/mini/common.yaml (and tiny.yaml) parsed."""

    data: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    epochs_scale: float = 0.01
    min_epochs: int = 2
    seeds: list = field(default_factory=lambda: [0])
    overrides: dict = field(default_factory=dict)
    method_params: dict = field(default_factory=dict)
    keep: dict = field(default_factory=dict)
    keep_in: dict = field(default_factory=dict)
    kernels: list = field(default_factory=list)

    @classmethod
    def load(cls, tiny: bool = False) -> "MiniSpec":
        data = load_yaml(paths.paper_overlays_dir() / "common.yaml")
        if tiny:
            data.update(load_yaml(paths.paper_overlays_dir() / "tiny.yaml"))
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(unknown[0], "unknown key of sweeps/mini/common.yaml; allowed: "
                              + ", ".join(cls.__dataclass_fields__))
        return cls(**data)

    def sizes(self, dataset: str) -> tuple[int, int]:
        """(training, test) images of a stand-in data set (sweeps/mini/common.yaml)."""
        sizes = self.data.get(dataset) or {}
        return int(sizes.get("train", 2048)), int(sizes.get("test", 500))

    def stand_in(self, dataset: str) -> str:
        return (self.data.get(dataset) or {}).get("as", dataset)

    def paper_keys(self, keys: dict) -> dict:
        """A miniature cell's keys -> those of the full cell it stands for (model, width and
        epochs undone), to find the paper's number for orientation."""
        out = dict(keys)
        inverse = {v.get("name", k): (k, v.get("width", 1.0)) for k, v in self.models.items()}
        model, scale = inverse.get(keys.get("model"), (keys.get("model"), 1.0))
        out["model"] = model
        if "width" in keys:
            out["width"] = float(f"{keys['width'] / scale:.6g}")
        if "epochs" in keys:
            out["epochs"] = round(keys["epochs"] / self.epochs_scale)
        return out

    def names(self) -> Names:
        return Names({k: v["label"] for k, v in self.data.items()
                      if "label" in v and "as" not in v})


# ---------------------------------------------------------------------------------------------
# deriving a miniature sweep from a full one

@functools.lru_cache(maxsize=None)
def _weights(model: str, dataset: str, width: float) -> int:
    from .width import prunable_weights

    return prunable_weights(model, dataset, width)


def _keep(flat: dict, keep: dict) -> bool:
    return all(key not in flat or flat[key] in allowed for key, allowed in keep.items())


def mini_config(full: dict, spec: MiniSpec) -> tuple[dict, dict]:
    """The miniature of one resolved full config (a plain dict), and {field: (full, mini)}."""
    cfg = copy.deepcopy(full)
    for key in UNHASHED:
        cfg.pop(key, None)
    changes = {}
    model, width, density = cfg["model"]["name"], float(cfg["model"]["width"]), cfg["density"]
    to = spec.models.get(model, {})
    cfg["model"]["name"] = to.get("name", model)
    cfg["model"]["width"] = float(f"{width * to.get('width', 1.0):.6g}")
    dataset = spec.stand_in(cfg["data"]["name"])
    if density < 1 and width != 1:
        # Keep this cell's active connections as a multiple of the ×1 model's (figure 3).
        full_ref = _weights(model, cfg["data"]["name"], 1.0) / _weights(model, cfg["data"]["name"], width)
        mini_ref = (_weights(cfg["model"]["name"], dataset, to.get("width", 1.0))
                    / _weights(cfg["model"]["name"], dataset, cfg["model"]["width"]))
        cfg["density"] = float(f"{density / full_ref * mini_ref:.5g}")
    cfg["data"]["name"] = dataset
    cfg["epochs"] = max(spec.min_epochs, round(cfg["epochs"] * spec.epochs_scale))
    cfg["optim"]["warmup_epochs"] = float(cfg["optim"]["warmup_epochs"]) * spec.epochs_scale
    for key, value in spec.overrides.items():
        set_dotted(cfg, key, value)
    cfg["method"].update(spec.method_params.get(cfg["method"]["name"], {}))
    changes["data"] = (full["data"]["name"], dataset)
    changes["model"] = (f"{MODELS.get(model, model)} ×{width:g}",
                        f"{MODELS.get(cfg['model']['name'], cfg['model']['name'])} "
                        f"×{cfg['model']['width']:g}")
    changes["epochs"] = (full["epochs"], cfg["epochs"])
    if cfg["density"] != density:
        changes["density"] = (density, cfg["density"])
    for name in spec.method_params.get(full["method"]["name"], {}):  # every one it changes
        if name in full["method"] and full["method"][name] != cfg["method"][name]:
            changes[f"{full['method']['name']} {name}"] = (_hashable(full["method"][name]),
                                                            _hashable(cfg["method"][name]))
    return cfg, changes


def _hashable(value):
    """A parameter's value as a change record holds it (a list as its text)."""
    return str(value) if isinstance(value, list) else value


@dataclass
class Derived:
    name: str
    spec: dict
    full_runs: int
    changes: dict  # field -> {(full, mini), ...}


def derive(name: str, spec: MiniSpec) -> Derived:
    full = sweep_spec.expand(name)
    include, seen, changes = [], set(), defaultdict(set)
    for cell in full.cells:
        flat = flat_config(cell.config)
        if cell.config.seed not in spec.seeds or not _keep(flat, spec.keep_in.get(name, spec.keep)):
            continue
        cfg, changed = mini_config(to_dict(cell.config), spec)
        key = yaml.safe_dump(cfg, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        include.append(cfg)
        for k, v in changed.items():
            changes[k].add(v)
    changes["seeds"] = {(", ".join(map(str, sorted({c.config.seed for c in full.cells}))),
                         ", ".join(map(str, spec.seeds)))}
    out = {"name": name,
           "description": f"miniature of {name} (derived by sparsebench.paper.mini; not for "
                          f"comparison with the paper): {full.spec.description}",
           "include": include,
           "slurm": {"time_min": 10, "cpus_per_task": 1, "mem_gb": 3, "array_parallelism": 2}}
    return Derived(name, out, len(full.cells), dict(changes))


# ---------------------------------------------------------------------------------------------
# running it

@dataclass
class Layout:
    top: Path

    @property
    def sweeps(self) -> Path:
        return self.top / "sweeps"

    @property
    def results(self) -> Path:
        return self.top / "results"

    @property
    def data(self) -> Path:
        return self.top / "data"

    @property
    def kernels(self) -> Path:
        return self.top / "kernels"

    def sweep_file(self, name: str) -> Path:
        return self.sweeps / f"{name}.yaml"


def write_data(layout: Layout, spec: MiniSpec) -> None:
    """Fashion-MNIST (found as the runs find it) in the CIFAR layouts, the first N of each class
    per split; raises FileNotFoundError saying how to get Fashion-MNIST."""
    from ..data import find_root

    source = find_root("fashion_mnist")
    writers = {"cifar10": fashion_cifar.write_cifar10_format,
               "cifar100": fashion_cifar.write_cifar100_format}
    for dataset, write in writers.items():
        train, test = spec.sizes(dataset)
        write(layout.data / dataset, source, train=train, test=test)


def derive_all(layout: Layout, spec: MiniSpec, names: list[str]) -> list[Derived]:
    derived = []
    for name in names:
        d = derive(name, spec)
        atomic.write_yaml(layout.sweep_file(name), d.spec)
        derived.append(d)
    return derived


def train_all(layout: Layout, names: list[str], workers: int) -> dict[str, int]:
    """Every run of the derived sweeps in one pool of local processes; completed ones skipped,
    failed and diverged ones run again (a miniature is cheap to retry after a fix). Prints a
    line per run that ends (done/total, failures so far, ETA; as ``sparsebench sweep`` does)."""
    from ..launch import executors, local_pool
    from ..launch.progress import RunLines, read_result, run_labels

    cells, labels = [], {}
    for name in names:
        sweep = sweep_spec.expand(str(layout.sweep_file(name)))
        cells += sweep.cells
        labels.update({rid: f"{name}: {label}" for rid, label in run_labels(sweep.cells).items()})

    def done(cell) -> bool:
        outcome = executors.read_outcome(cell)
        return outcome is not None and outcome.status == "completed"

    todo = [c for c in cells if not done(c)]
    by_id = {c.run_id: c for c in todo}
    counts: dict[str, int] = defaultdict(int)
    counts["completed"] = counts["already done"] = len(cells) - len(todo)
    lines = RunLines(len(cells), labels, done=len(cells) - len(todo))
    print(f"paper-mini: {len(todo)} runs to train ({len(cells) - len(todo)} of {len(cells)} done "
          f"before) in {min(workers, max(1, len(todo)))} local processes", flush=True)
    for outcome in local_pool.run_local(todo, workers):
        counts[outcome.status] += 1
        print(lines.line(outcome, read_result(by_id[outcome.run_id])), flush=True)
    return dict(counts)


def run_kernels(layout: Layout, spec: MiniSpec) -> None:
    out = layout.kernels / "sparse_layer_cpu.csv"
    if out.is_file():
        return
    print("paper-mini: figure 8's kernel benchmark (python -m sparsebench.paper.kernel_bench)",
          flush=True)
    subprocess.run([sys.executable, "-m", "sparsebench.paper.kernel_bench",
                    *map(str, spec.kernels), "--out", str(out)],
                   check=False, stdout=subprocess.DEVNULL)


def data_sentence(spec: MiniSpec) -> str:
    """What the miniature trained on, in words, from sweeps/mini/common.yaml."""
    (train10, test10), (train100, test100) = spec.sizes("cifar10"), spec.sizes("cifar100")
    return (f"CIFAR-10 is stood in for by {train10} training and "
            f"{test10} test images of Fashion-MNIST (the first of each class; "
            "28 × 28 grey padded with black to 32 × 32, three equal channels, in CIFAR's file "
            f"format). CIFAR-100 is stood in for by {train100} / "
            f"{test100} of the same images with the same ten classes (no 100-class "
            "data set is at hand: a 100-way classifier that uses ten of its outputs), and "
            "ImageNet (Table 2) by that CIFAR-100 stand-in. Written by "
            "sparsebench/paper/fashion_cifar.py into the miniature's data/ folder.")


def preamble(derived: list[Derived], spec: MiniSpec, timing: dict, tiny: bool) -> str:
    lines = [
        "> **This is a miniature of the paper, not its results.** It runs the same sweeps, cell "
        "by cell, on a CPU in minutes, with smaller models, "
        f"{100 * spec.epochs_scale:g} % of the epochs (at least {spec.min_epochs}), seed(s) "
        f"{', '.join(map(str, spec.seeds))} and mask updates every few steps "
        "(sweeps/mini/common.yaml). Its numbers show what the pipeline measures at this scale, "
        "not what the paper's will show; the paper's numbers are listed for orientation only.",
        "",
        f"> **Data: Fashion-MNIST, not CIFAR.** {data_sentence(spec)}",
        ""]
    if tiny:
        lines += ["> This is the test suite's still smaller version (sweeps/mini/tiny.yaml).", ""]
    if timing.get("train_minutes") is not None:
        runs = timing.get("runs", {})
        trained = sum(n for s, n in runs.items() if s not in ("completed", "already done"))
        trained += runs.get("completed", 0) - runs.get("already done", 0)
        lines += [f"The last `make paper-mini` trained {trained} runs in "
                  f"{timing['train_minutes']:.1f} minutes of wall-clock here"
                  + (f" ({runs['already done']} were done before)" if runs.get("already done")
                     else "") + ".", ""]
    lines += ["How each sweep differs from the full one (full → miniature):", "",
              "| sweep | runs | data | model | epochs | seeds | other |", "|---|---|---|---|---|---|---|"]
    names = spec.names()

    def pairs(d: Derived, key: str, full=str, mini=str) -> str:
        return "; ".join(sorted(f"{full(a)} → {mini(b)}" for a, b in d.changes.get(key, ())))

    for d in derived:
        other = [f"{k}: {pairs(d, k)}" for k in sorted(d.changes)
                 if k not in ("data", "model", "epochs", "seeds", "density")]
        if "density" in d.changes:
            other.append(f"densities rescaled for constant active connections "
                         f"({len(d.changes['density'])} cells)")
        lines.append(f"| {d.name} | {d.full_runs} → {len(d.spec['include'])} | "
                     f"{pairs(d, 'data', Names().dataset, names.dataset)} | {pairs(d, 'model')} | "
                     f"{pairs(d, 'epochs')} | {pairs(d, 'seeds')} | {'; '.join(other) or '—'} |")
    return "\n".join(lines)


def report(root: Path | None = None, *, tiny: bool = False, derived: list[Derived] | None = None
           ) -> Path:
    """results/paper_mini/ from the miniature's runs; returns the index's path."""
    from .report import Context, write
    from .runs import Library

    layout = Layout(paths.paper_mini_dir(root))
    spec = MiniSpec.load(tiny)
    if derived is None:
        derived = derive_all(layout, spec, paper_sweeps())
    timing = atomic.read_json(layout.top / "timing.json") or {}
    ctx = Context(names=spec.names(), comparable=False, kernels_dir=layout.kernels,
                  paper_keys=spec.paper_keys)
    lib = Library(layout.results, layout.sweep_file)
    write(layout.top, lib, ctx, title="The GSE paper's artifacts — MINIATURE (Fashion-MNIST, "
          "not CIFAR; not the paper's scale)", preamble=preamble(derived, spec, timing, tiny))
    return layout.top / "index.md"


@contextlib.contextmanager
def environment(**values: str):
    """Set environment variables for the duration (the worker processes inherit them), then
    restore what was there, so that a caller in the same process sees no change after."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run(root: Path | None = None, *, tiny: bool = False, workers: int | None = None) -> Path:
    layout = Layout(paths.paper_mini_dir(root))
    spec = MiniSpec.load(tiny)
    write_data(layout, spec)
    names = paper_sweeps()
    derived = derive_all(layout, spec, names)
    t0 = time.perf_counter()
    from ..launch import local_pool

    # Runs read and write only the miniature's folders (and see only its data/ folder).
    with environment(SPARSEBENCH_RESULTS=str(layout.results.resolve()),
                     SPARSEBENCH_DATA=str(layout.data.resolve())):
        counts = train_all(layout, names, workers or local_pool.default_workers())
    minutes = (time.perf_counter() - t0) / 60
    atomic.write_json(layout.top / "timing.json", {"train_minutes": minutes, "runs": counts})
    print("paper-mini runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + f" in {minutes:.1f} min")
    run_kernels(layout, spec)
    return report(root, tiny=tiny, derived=derived)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog("paper mini"),
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the test suite's smaller version")
    parser.add_argument("--workers", type=int, default=None, help="local processes at once")
    parser.add_argument("--results", type=Path, default=None, metavar="DIR",
                        help="results folder (default: $SPARSEBENCH_RESULTS or ./results)")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    from ..cli import config_errors_exit

    with config_errors_exit("sweeps/mini"):
        index = run(args.results, tiny=args.tiny, workers=args.workers)
    print(f"wrote {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
