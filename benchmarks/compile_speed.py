"""What ``compile: true`` buys on this machine: compiled/eager time per training step, and the
compile time, for the MLP, ResNet-20 and SimpleViT-tiny (masked, density 0.1, static masks).

Per model, two copies of the same network (same initial weights and masks) train on the same
fixed batch, one through the eager module and one through the compiled step module the trainer
uses (:mod:`sparsebench.training.compile`, inductor by default); each step is the trainer's
(:func:`sparsebench.training.step.training_step`: forward, backward, gradient masking, SGD with
Nesterov momentum). The compiled copy first compiles (its graphs and seconds are read from
the compile statistics a run records in result.json). Then ``--repeats`` blocks follow, each
``--steps`` steps of one copy then of the other (the order alternates by block), so that a
loaded machine slows both alike; a block's ratio is compiled/eager of its summed step times,
and the ratios are printed as the median with a bootstrap 95 % interval and the min-max
(:mod:`sparsebench.reporting.spread`). Inputs are random tensors of the data set's shape (the
data loader is not what compiling changes).

Break-even: compile time / (eager - compiled step time) steps; ``compile: auto`` compiles only
on CUDA (see sparsebench.training.compile for the rule).

Writes ``results/benchmarks/compile_speed.csv`` (one row per model and block). Run idle::

    PYTHONPATH=. python benchmarks/compile_speed.py                    # make bench-compile
    PYTHONPATH=. python benchmarks/compile_speed.py --models mlp --repeats 5 --steps 10
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sparsebench.models import build_model  # noqa: E402
from sparsebench.reporting import spread  # noqa: E402
from sparsebench.sparsity import SparsityEngine  # noqa: E402
from sparsebench.storage import atomic  # noqa: E402
from sparsebench.training import compile as compiling  # noqa: E402
from sparsebench.training.step import training_step  # noqa: E402

# model -> (input shape, classes, batch size on this CPU)
MODELS = {"mlp": ((1, 28, 28), 10, 128), "resnet20": ((3, 32, 32), 100, 64),
          "simple_vit_tiny": ((3, 32, 32), 100, 64)}


class NoMethod:
    """A static method's hooks: nothing between the step's parts."""

    def before_forward(self, ctx): pass
    def after_backward(self, ctx): pass
    def after_step(self, ctx): pass


class Copy:
    """One network, its masks and optimizer; ``step()`` is one training step."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, compiled: bool,
                 backend: str):
        self.model = model
        self.engine = SparsityEngine.for_model(model, 0.1, "erk")
        self.engine.random_masks(torch.Generator().manual_seed(0))
        self.engine.apply_masks()
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        self.engine.attach_optimizer(self.optimizer)
        decision = compiling.CompileDecision(compiled, "benchmark")
        self.step_model = compiling.wrap(model, decision, backend)
        self.x, self.y, self.loss_fn = x, y, nn.CrossEntropyLoss()
        self.ctx, self.method = SimpleNamespace(), NoMethod()

    def step(self) -> None:
        training_step(self.step_model, self.loss_fn, self.optimizer, self.engine, self.method,
                      self.ctx, self.x, self.y)


def measure(name: str, repeats: int, steps: int, backend: str) -> list[dict]:
    in_shape, classes, batch = MODELS[name]
    torch.manual_seed(0)
    model = build_model(name, num_classes=classes, in_shape=in_shape)
    x, y = torch.randn(batch, *in_shape), torch.randint(0, classes, (batch,))
    eager = Copy(model, x, y, False, backend)
    compiled = Copy(copy.deepcopy(model), x, y, True, backend)
    t0 = time.perf_counter()
    for _ in range(3):   # the first compiles forward and (lazily) backward; then warm
        compiled.step()
        eager.step()
    warm_s = time.perf_counter() - t0
    stats = compiling.stats_of(compiled.step_model)
    rows = []
    for block in range(repeats):
        times = {}
        for label in (("eager", "compiled") if block % 2 == 0 else ("compiled", "eager")):
            run = eager if label == "eager" else compiled
            t0 = time.perf_counter()
            for _ in range(steps):
                run.step()
            times[label] = (time.perf_counter() - t0) / steps
        rows.append({"model": name, "block": block, "batch": batch, "backend": backend,
                     "eager_ms": 1000 * times["eager"], "compiled_ms": 1000 * times["compiled"],
                     "ratio": times["compiled"] / times["eager"],
                     "compile_s": stats.seconds, "graphs": stats.graphs, "warm_up_s": warm_s,
                     "threads": torch.get_num_threads()})
    stats.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    ap.add_argument("--repeats", type=int, default=7, help="blocks per model (default %(default)s)")
    ap.add_argument("--steps", type=int, default=10, help="steps per block and copy")
    ap.add_argument("--backend", choices=("inductor", "aot_eager"), default="inductor")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "compile_speed.csv")
    args = ap.parse_args(argv)
    print(f"threads: {torch.get_num_threads()}, torch {torch.__version__}, backend {args.backend}, "
          f"{args.repeats} blocks of {args.steps} steps per copy", flush=True)
    rows = []
    for name in args.models:
        model_rows = measure(name, args.repeats, args.steps, args.backend)
        rows += model_rows
        ratio = spread.bootstrap([r["ratio"] for r in model_rows])
        eager = spread.bootstrap([r["eager_ms"] for r in model_rows])
        comp = spread.bootstrap([r["compiled_ms"] for r in model_rows])
        saved_s = (eager.median - comp.median) / 1000
        first = model_rows[0]
        payback = (f"{first['compile_s'] / saved_s:,.0f} steps" if saved_s > 0
                   else "never (no saving)")
        print(f"{name}: compiled/eager step {ratio}; eager {eager.median:.2f} ms, compiled "
              f"{comp.median:.2f} ms; compile {first['compile_s']:.1f} s, {first['graphs']} "
              f"graph(s); pays back after {payback}", flush=True)
    atomic.write_text(args.out, pd.DataFrame(rows).to_csv(index=False))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
