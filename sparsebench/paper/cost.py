"""What the paper's sweeps cost: runs and estimated GPU-hours from FLOP counts.

``python -m sparsebench.paper.cost`` expands every paper sweep and, per run, counts the model's
dense forward FLOPs on one example (``torch.utils.flop_counter``). Runs train on the masked
engine, whose products are dense, so a step costs what a dense step costs whatever the
density: 3·f_D per example (Evci et al. 2020's accounting), times the training examples, the
epochs and, for Lottery, its rounds (the dense one plus ``rounds``). GPU-hours divide that by an
*assumed* sustained throughput (``--tflops``; fp32, as the GSE protocol trains): small CIFAR
models at batch 128 keep a GPU far from its peak, so the default is low. Without a GPU
measurement this is an order of magnitude, not a budget.
"""
from __future__ import annotations

import argparse
import functools
import sys

from ..launch import spec as sweep_spec
from ..cli import prog
from .artifacts import paper_sweeps

TRAIN_EXAMPLES = {"cifar10": 50_000, "cifar100": 50_000, "imagenet": 1_281_167,
                  "fashion_mnist": 60_000, "mnist": 60_000}
# Sustained fp32 TFLOP/s assumed per data set's models (see the module docstring).
DEFAULT_TFLOPS = {"cifar10": 4.0, "cifar100": 4.0, "imagenet": 40.0}


@functools.lru_cache(maxsize=None)
def dense_forward(model: str, dataset: str, width: float) -> float:
    import torch

    from .. import models
    from ..flops import forward_flops_by_module
    from .width import SHAPES

    classes, shape = SHAPES[dataset]
    net = models.build_model(model, num_classes=classes, in_shape=shape, width=width)
    return forward_flops_by_module(net, torch.zeros(1, *shape))[0]


def run_flops(cfg) -> float:
    rounds = 1 + int(cfg.method.params.get("rounds", 0)) if cfg.method.name == "lottery" else 1
    examples = TRAIN_EXAMPLES[cfg.data.name] * cfg.epochs * rounds
    return 3.0 * dense_forward(cfg.model.name, cfg.data.name, float(cfg.model.width)) * examples


def estimate(names: list[str] | None = None, tflops: dict | None = None,
             runs_per_gpu: int | None = None) -> list[dict]:
    """Per sweep: runs, PFLOP and GPU-hours at one run per GPU; ``gpu_hours_packed`` with
    ``runs_per_gpu`` runs sharing a GPU (default: the sweep's ``slurm.runs_per_task``), taken
    to share it without slowing each other: a lower bound, reached where one run leaves most of
    the GPU idle (see README, "Several runs per GPU")."""
    tflops = {**DEFAULT_TFLOPS, **(tflops or {})}
    rows = []
    for name in names or paper_sweeps():
        sweep = sweep_spec.expand(name)
        total = hours = 0.0
        for cell in sweep.cells:
            flops = run_flops(cell.config)
            total += flops
            hours += flops / (tflops[cell.config.data.name] * 1e12) / 3600
        packing = runs_per_gpu or sweep.spec.slurm.runs_per_task
        rows.append({"sweep": name, "runs": len(sweep.cells), "train_pflop": total / 1e15,
                     "gpu_hours": hours, "runs_per_gpu": packing,
                     "gpu_hours_packed": hours / packing,
                     "slurm_time_min": sweep.spec.slurm.time_min,
                     "array_parallelism": sweep.spec.slurm.array_parallelism})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog("paper cost"),
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="*", help="default: every paper sweep")
    parser.add_argument("--tflops", type=float, default=None,
                        help="one assumed sustained TFLOP/s for every run (default: "
                             + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_TFLOPS.items()) + ")")
    parser.add_argument("--runs-per-gpu", type=int, default=None, metavar="K",
                        help="GPU-hours with K runs sharing each GPU (default: each sweep's "
                             "slurm.runs_per_task); a lower bound, see README")
    args = parser.parse_args(argv)
    if args.runs_per_gpu is not None and args.runs_per_gpu < 1:
        parser.error("--runs-per-gpu must be at least 1")
    override = {k: args.tflops for k in DEFAULT_TFLOPS} if args.tflops else None
    rows = estimate(args.sweeps or None, override, args.runs_per_gpu)
    print(f"{'sweep':26} {'runs':>5} {'PFLOP':>9} {'GPU-hours':>10} {'per GPU':>7} "
          f"{'packed':>7}")
    for r in rows:
        print(f"{r['sweep']:26} {r['runs']:5d} {r['train_pflop']:9.1f} {r['gpu_hours']:10.0f} "
              f"{r['runs_per_gpu']:7d} {r['gpu_hours_packed']:7.0f}")
    print(f"{'total':26} {sum(r['runs'] for r in rows):5d} "
          f"{sum(r['train_pflop'] for r in rows):9.1f} {sum(r['gpu_hours'] for r in rows):10.0f} "
          f"{'':7} {sum(r['gpu_hours_packed'] for r in rows):7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
