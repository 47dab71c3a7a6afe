"""Peak memory of one scoring update on score batches (issue 23): GSE (GraBo, its two-pass
sampler), RigL and GraSP on ResNet-50 at reduced resolution with 1, 4 and 16 score batches,
and on ResNet-56 with CIFAR-100 shapes at 1 and 8 batches of 128.

Each point runs in a child process of its own (one update on random data, CPU, masked engine,
density 0.1), which reports its maximum resident size (``resource.getrusage``: it sees every
allocation, torch's included) before the update and after it; ``peak_mb`` is the latter,
``update_mb`` the difference. The streamed update's target: 16 batches at most 1.3× the peak
of 1 batch (``ratio`` column: peak over the peak of the same model and method at 1 batch).

Writes ``$SPARSEBENCH_RESULTS/benchmarks/score_memory.csv`` and prints the table::

    python benchmarks/score_memory.py            # make bench (minutes on an idle 2-core CPU)
    python benchmarks/score_memory.py --quick    # half-width ResNet-50, smaller images and batches
"""
from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS = {"gse": {"sampler": "grabo"}, "rigl": {}, "grasp": {}}
# (model, width, classes, resolution, batch, score batches)
FULL = ([("resnet50", 1.0, 1000, 64, 32, n) for n in (1, 4, 16)]
        + [("resnet56", 1.0, 100, 32, 128, n) for n in (1, 8)])
# Half-width ResNet-50 (a quarter of the weights: the masked engine's topology change, which
# dominates the time of an update on a CPU, is 4x cheaper), smaller images and batches.
QUICK = ([("resnet50", 0.5, 1000, 32, 16, n) for n in (1, 4, 16)]
         + [("resnet56", 1.0, 100, 32, 32, n) for n in (1, 8)])
CHILD_TIMEOUT_S = 3600


def max_rss_mb() -> float:
    """This process's peak resident size (MB). Linux's VmHWM where there is one: ru_maxrss
    carries a parent's peak across fork and exec into the child."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024.0
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def one_update(method: str, model_name: str, width: float, classes: int, resolution: int,
               batch: int, n_batches: int) -> dict:
    """In this process: build the model and one update's score batches, run the update, and
    report the maximum resident size before and after it (MB)."""
    import torch
    from torch import nn

    from sparsebench import methods
    from sparsebench.data import TensorLoader
    from sparsebench.flops import FlopModel
    from sparsebench.methods import InitContext, StepContext
    from sparsebench.models import build_model
    from sparsebench.scoring import ScoreBatches
    from sparsebench.sparsity import SparsityEngine

    torch.manual_seed(0)
    shape = (3, resolution, resolution)
    model = build_model(model_name, num_classes=classes, in_shape=shape, width=width)
    engine = SparsityEngine.for_model(model, 0.1, "uniform")
    cls = methods.get(method)
    params = cls.Params(score_samples_per_class=1, **METHODS[method])
    m = cls(params, engine, total_steps=100, steps_per_epoch=10, seed=0)
    x = torch.randn(n_batches * batch, *shape)
    y = torch.randint(0, classes, (n_batches * batch,))
    loader = TensorLoader(x, y, batch, shuffle=True, drop_last=True, seed=0)
    scoring = ScoreBatches(loader, model=model, samples_per_class=1, num_classes=classes, seed=0,
                           flop_model=FlopModel(model, engine, shape),
                           loss_fn=nn.functional.cross_entropy)
    # ⌈1·classes/batch⌉ batches by the protocol's formula; the benchmark sets the count.
    scoring.n_batches = n_batches
    if method == "grasp":
        ctx = InitContext(model, lambda: iter(loader), nn.functional.cross_entropy, scoring=scoring)
        before = max_rss_mb()
        m.init_masks(ctx)
    else:
        masks = {}   # a random topology at the layers' targets (one engine call, not one per layer)
        for layer in engine.layers:
            mask = torch.zeros(layer.numel, dtype=torch.bool)
            mask[torch.randperm(layer.numel)[:layer.target_active]] = True
            masks[layer.name] = mask
        engine.set_masks(masks)
        ctx = StepContext(step=0, epoch=0, total_steps=100, steps_per_epoch=10, model=model,
                          scoring=scoring)
        before = max_rss_mb()
        m.update(ctx, 0.3)
    return {"before_mb": before, "peak_mb": max_rss_mb()}


def run_child(*case) -> dict:
    """``one_update(*case)`` in a fresh process (its own peak)."""
    code = ("import json, sys\n"
            "sys.path.insert(0, sys.argv[1])\n"
            "from score_memory import one_update\n"
            f"print(json.dumps(one_update(*{list(case)!r})))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, cwd=REPO)
    if proc.returncode:
        raise RuntimeError(f"score_memory child {case} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    import pandas as pd

    from sparsebench.storage import atomic, paths

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller images and batches")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    ap.add_argument("--out", type=Path, default=paths.benchmarks_dir() / "score_memory.csv")
    args = ap.parse_args(argv)
    rows = []
    for model, width, classes, resolution, batch, n in (QUICK if args.quick else FULL):
        for method in args.methods.split(","):
            r = run_child(method, model, width, classes, resolution, batch, n)
            rows.append({"model": model, "width": width, "resolution": resolution, "batch": batch,
                         "score_batches": n, "method": method, "peak_mb": round(r["peak_mb"]),
                         "update_mb": round(r["peak_mb"] - r["before_mb"])})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    first = table.groupby(["model", "method"])["peak_mb"].transform("first")
    table["ratio"] = (table["peak_mb"] / first).round(2)
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    atomic.write_text(args.out, buf.getvalue())
    print(table.to_string(index=False))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
