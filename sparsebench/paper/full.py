"""The whole paper on a cluster: ``python -m sparsebench.paper.full`` (``make paper``).

Launches every paper sweep at once (one ``python -m sparsebench.sweep NAME`` per sweep, each
submitting its SLURM array job and waiting for it; their logs go to
``results/paper/logs/NAME.log``), runs the sparse-layer benchmark for figure 8 on the CPU (and
on CUDA where there is one), then writes ``results/paper/``. Running it again resubmits only
what has not completed (every sweep skips completed runs and reattaches to queued ones).
``--dry-run`` prints each sweep's plan instead.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from ..storage import paths
from ..cli import prog
from .artifacts import paper_sweeps
from .kernels import BENCHMARK_ARGS


def launch(names: list[str], executor: str, logs: Path, extra: list[str]) -> dict[str, int]:
    logs.mkdir(parents=True, exist_ok=True)
    procs = {}
    for name in names:
        log = open(logs / f"{name}.log", "w")
        procs[name] = subprocess.Popen([sys.executable, "-m", "sparsebench.sweep", name,
                                        "--executor", executor, *extra],
                                       stdout=log, stderr=subprocess.STDOUT)
        print(f"launched {name} (log: {logs / f'{name}.log'})")
    return {name: proc.wait() for name, proc in procs.items()}


def kernels(out: Path) -> None:
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        csv = out / f"sparse_layer_{device}.csv"
        if csv.is_file():
            print(f"figure 8: {csv} exists (delete it to measure again)")
            continue
        subprocess.run([sys.executable, "-m", "sparsebench.paper.kernel_bench", *BENCHMARK_ARGS,
                        "--device", device, "--out", str(csv)], check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog("paper"),
                                     description=__doc__.split("\n\n")[0],
                                     epilog="also: sparsebench paper cost|mini|kernels|width "
                                            "(each with -h)")
    parser.add_argument("--executor", default="auto", choices=("auto", "slurm", "local", "inline"))
    parser.add_argument("--dry-run", action="store_true", help="print every sweep's plan")
    parser.add_argument("--no-kernels", action="store_true", help="skip figure 8's benchmark")
    parser.add_argument("sweep_args", nargs="*", metavar="ARG",
                        help="passed to every sweep (e.g. --skip-data-check, key=value overrides)")
    args = parser.parse_args(argv)
    names = paper_sweeps()
    if args.dry_run:  # exits with the first sweep's error status (2: a bad sweep), after all
        codes = [subprocess.run([sys.executable, "-m", "sparsebench.sweep", name, "--dry-run",
                                 "--executor", args.executor, *args.sweep_args], check=False).returncode
                 for name in names]
        bad = [name for name, code in zip(names, codes) if code]
        if bad:
            print(f"paper --dry-run: {len(bad)} of {len(names)} sweeps have errors: {', '.join(bad)}",
                  file=sys.stderr)
        return next((code for code in codes if code), 0)
    out = paths.paper_dir()
    codes = launch(names, args.executor, out / "logs", args.sweep_args)
    for name, code in codes.items():
        if code:
            print(f"sweep {name} exited {code}: see {out / 'logs' / f'{name}.log'}")
    if not args.no_kernels:
        kernels(out / "kernels")
    import matplotlib

    matplotlib.use("Agg")
    from .report import write_default

    print(f"wrote {write_default()}")
    return 1 if any(codes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
