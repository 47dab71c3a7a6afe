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
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..storage import atomic, paths
from ..launch import spec as sweep_spec
from . import fashion_cifar
from ..cli import prog
from .artifacts import paper_sweeps
from .mini_spec import Derived, MiniSpec, derive
from .names import Names

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
