"""Data-parallel throughput: training examples per second of one run on 1, 2, ... processes.

Each point is one run launched the documented way, ``torchrun --standalone --nproc_per_node=N
-m sparsebench.train CONFIG [key=value ...]`` (gloo on the CPU, NCCL with one GPU per rank),
with the same global batch at every N, in a throw-away results folder. Throughput is the run's
own accounting: ``steps x data.batch_size / wall_clock_s`` (training and evaluation of every
epoch, without start-up), so it includes DDP's gradient all-reduce and the sharded evaluation.

Writes ``$SPARSEBENCH_RESULTS/benchmarks/data_parallel.csv`` (one row per process count and repeat: procs,
examples_per_s, speedup over 1 process, step_time_ms, devices) and prints the table::

    python benchmarks/data_parallel.py                                   # make bench-ddp
    python benchmarks/data_parallel.py --procs 1,2,4,8 --config configs/cifar10_resnet56.yaml \\
        epochs=1 device=cuda                                             # one node, 8 GPUs

On a 2-core CPU it shows little (two processes share the two cores the one process had
threads on); on a GPU machine give one process count per GPU count to scale over.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from sparsebench.storage import atomic, paths

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OVERRIDES = ["method.name=static", "data.train_subset=16384", "data.batch_size=256",
                     "epochs=2", "device=cpu"]


def run_on(procs: int, config: Path, overrides: list[str], threads: int | None) -> dict:
    """One run on ``procs`` processes; the fields of its result.json this benchmark reports."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SPARSEBENCH_RESULTS": tmp, "PYTHONPATH": str(REPO)}
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={procs}", "-m", "sparsebench.train", str(config),
                   *overrides, "progress=false", "--force"]
        proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
        if proc.returncode != 0:
            raise SystemExit(f"the run on {procs} processes failed:\n{proc.stderr[-3000:]}")
        run_dir = Path(proc.stdout.strip().splitlines()[-1])
        result = json.loads((run_dir / "result.json").read_text())
    batch = result["config"]["data"]["batch_size"]
    return {"procs": procs, "world_size": result["world_size"], "global_batch": batch,
            "steps": result["steps"], "wall_clock_s": result["wall_clock_s"],
            "examples_per_s": result["steps"] * batch / result["wall_clock_s"],
            "step_time_ms": result["step_time_ms"], "devices": " | ".join(result["devices"]),
            "final_test_acc": result["final_test_acc"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", metavar="key=value",
                    help=f"run overrides (default: {' '.join(DEFAULT_OVERRIDES)})")
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "fmnist_mlp.yaml")
    ap.add_argument("--procs", default="1,2", help="comma-separated process counts (default 1,2)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per process count")
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP threads per process (default 1: each rank one core)")
    ap.add_argument("--out", type=Path, default=paths.benchmarks_dir() / "data_parallel.csv")
    args = ap.parse_args(argv)
    overrides = args.overrides or DEFAULT_OVERRIDES
    counts = [int(n) for n in args.procs.split(",") if n.strip()]
    rows = [run_on(n, args.config, overrides, args.threads)
            for _ in range(args.repeats) for n in counts]
    table = pd.DataFrame(rows)
    base = table[table.procs == min(counts)].examples_per_s.median()
    table["speedup"] = table.examples_per_s / base
    table.insert(0, "config", f"{args.config.name} {' '.join(overrides)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    atomic.write_text(args.out, buf.getvalue())
    print(table.drop(columns=["config"]).to_string(index=False))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
