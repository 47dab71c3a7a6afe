"""What the harness costs: sparsebench's trainer against a bare torch loop, masked sparse
training against dense, and dynamic sparse training (DST) against static, per step.

Three ratios, each measured in one process run. Every repeat runs each configuration once,
in an order shuffled per repeat (so that no configuration always runs first, warm or cold),
after an untimed warm-up; each ratio is taken within a repeat, so that the machine's
drift hits both of its sides alike. A ratio is printed as the median over ``--repeats`` with
a bootstrap 95 % interval and its min-max (:mod:`sparsebench.spread`), and a target is
called met or missed only when that interval lies wholly on one side of it (else undecided):

1. **harness / bare loop** (target ≤ 1.10): the same dense model, data, optimizer and LR
   schedule, trained for ``--epochs`` epochs with a test evaluation after each, once through
   ``sparsebench.trainer.train`` and once through a hand-written loop over the same on-device
   tensors. Compared on the training+evaluation time of the epochs (``wall_clock_s`` of the
   run), and, separately, on the whole call including set-up (data decoding, FLOP counting,
   result files), which a short run cannot amortize.
2. **masked sparse / dense** per step (target ≤ 1.10): the median training-step time of
   ``static`` at ``--density`` against ``dense`` through the harness.
3. **DST / static** amortized step (target ≤ 1.05): total training-loop time (topology
   updates included) divided by the number of steps, for ``set``, ``rigl``, ``gse``
   and ``magnitude`` at their paper defaults (GSE every 100 steps instead of 1000, so that it
   updates within the measured epochs), against ``static``.

Writes ``results/benchmarks/harness_overhead.csv`` (one row per measured run) and prints the
ratios. 37 runs with the defaults (the 21 of three repeats took two minutes on an idle 2-core
CPU, so about three and a half)::

    python benchmarks/harness_overhead.py                 # make bench
    python benchmarks/harness_overhead.py --model lenet5 --epochs 1
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from sparsebench import atomic, paths, resolve, spread
from sparsebench.config import run_id
from sparsebench.data import build_data
from sparsebench.models import build_model
from sparsebench.trainer import train

REPO = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO / "configs" / "fmnist_mlp.yaml"
DST_METHODS = ("set", "rigl", "gse", "magnitude")
TARGETS = {"harness/bare": 1.10, "static/dense": 1.10, "dst/static": 1.05}


def harness_run(overrides: list[str]) -> dict:
    """One run through the trainer in a throw-away results folder; its result.json fields."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SPARSEBENCH_RESULTS"] = tmp
        cfg = resolve.load(str(BASE_CONFIG), overrides + ["progress=false"])
        t0 = time.perf_counter()
        result = train(cfg, force=True)
        total = time.perf_counter() - t0
        metrics = paths.run_dir(cfg.sweep, run_id(cfg)) / paths.METRICS
        epoch_times = [json.loads(line)["epoch_time_s"] for line in metrics.read_text().splitlines()]
    if result["status"] != "completed":
        raise RuntimeError(f"{overrides}: {result['status']}: {result.get('error')}")
    return {"total_s": total, "epochs_s": result["wall_clock_s"],
            "median_step_ms": result["step_time_ms"],
            # the training loop's time, topology updates included, per step (no evaluation)
            "amortized_step_ms": 1000 * sum(epoch_times) / result["steps"],
            "update_s": result["update_time_s"], "steps": result["steps"],
            "test_acc": result["final_test_acc"]}


def bare_loop(cfg, epochs: int) -> dict:
    """The loop a researcher would write by hand: same model, data tensors, optimizer and
    schedule; no hooks, masks, FLOP accounting, checkpoints or result files."""
    t_call = time.perf_counter()
    torch.manual_seed(cfg.seed)
    data = build_data(cfg.data.name, batch_size=cfg.data.batch_size,
                      test_batch_size=cfg.data.test_batch_size, device=torch.device("cpu"),
                      seed=cfg.seed, augment=cfg.data.augment, root=cfg.data.root)
    x_train, y_train = data.train.x, data.train.y
    x_test, y_test = data.test.x, data.test.y
    model = build_model(cfg.model.name, num_classes=data.info.num_classes,
                        in_shape=data.info.in_shape, width=cfg.model.width)
    o = cfg.optim
    opt = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                          weight_decay=o.weight_decay)
    bs = cfg.data.batch_size
    steps_per_epoch = len(x_train) // bs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    step_times = []
    t_start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train))
        for i in range(steps_per_epoch):
            t0 = time.perf_counter()
            idx = order[i * bs:(i + 1) * bs]
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step_times.append(time.perf_counter() - t0)
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(x_test), cfg.data.test_batch_size):
                out = model(x_test[i:i + cfg.data.test_batch_size])
                correct += int((out.argmax(1) == y_test[i:i + cfg.data.test_batch_size]).sum())
    epochs_s = time.perf_counter() - t_start
    return {"total_s": time.perf_counter() - t_call, "epochs_s": epochs_s, "median_step_ms": 1000 * statistics.median(step_times),
            "amortized_step_ms": None, "test_acc": 100 * correct / len(x_test)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mlp", help="model name (default: mlp)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed passes over every configuration (default %(default)s)")
    ap.add_argument("--density", type=float, default=0.1)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "harness_overhead.csv")
    args = ap.parse_args(argv)

    common = [f"model.name={args.model}", f"epochs={args.epochs}", "optim.warmup_epochs=0"]
    cfg = resolve.load(str(BASE_CONFIG), common + ["method.name=dense"])
    rows = []

    def record(kind: str, label: str, repeat: int, measured: dict) -> None:
        rows.append({"kind": kind, "label": label, "repeat": repeat, **measured})
        step = measured.get("amortized_step_ms") or measured["median_step_ms"]
        print(f"  {label:<22} repeat {repeat}: epochs {measured['epochs_s']:.2f} s, "
              f"step {step:.3f} ms, acc {measured['test_acc']:.2f}%", flush=True)

    print(f"threads: {torch.get_num_threads()}, torch {torch.__version__}, model {args.model}, "
          f"{args.epochs} epochs, {args.repeats} repeats", flush=True)
    runs = [("bare", "dense (bare loop)", None),
            ("harness", "dense", ["method.name=dense"]),
            ("harness", f"static d={args.density:g}", ["method.name=static", f"density={args.density}"])]
    # GSE's default interval (1000 steps) would not update at all in an epoch of 468 steps;
    # like RigL it updates every 100 steps here (as in the Fashion-MNIST sweep).
    runs += [("harness", f"{m} d={args.density:g}", [f"method.name={m}", f"density={args.density}"]
              + (["method.interval=100"] if m == "gse" else []))
             for m in DST_METHODS]

    def measure(kind, overrides):
        return bare_loop(cfg, args.epochs) if kind == "bare" else harness_run(common + overrides)

    # Decoding the data set (cached per process) and the first allocations fall on these.
    print("warm-up: bare loop and harness once each (not timed)", flush=True)
    for kind, _, overrides in runs[:2]:
        measure(kind, overrides)
    order = random.Random(0)
    for repeat in range(args.repeats):
        for kind, label, overrides in order.sample(runs, len(runs)):
            record(kind, label, repeat, measure(kind, overrides))

    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    atomic.write_text(args.out, buf.getvalue())

    by = table.set_index(["label", "repeat"])
    static = f"static d={args.density:g}"

    def per_repeat(num: str, den: str, column: str) -> list[float]:
        """The ratio within each repeat (both sides measured minutes apart at most)."""
        return [by.loc[(num, r), column] / by.loc[(den, r), column] for r in range(args.repeats)]

    ratios = [("harness/bare", "epochs (train + eval)", per_repeat("dense", "dense (bare loop)", "epochs_s")),
              ("harness/bare", "median step", per_repeat("dense", "dense (bare loop)", "median_step_ms")),
              ("harness/bare", "whole call incl. set-up", per_repeat("dense", "dense (bare loop)", "total_s")),
              ("static/dense", "median step", per_repeat(static, "dense", "median_step_ms"))]
    ratios += [("dst/static", f"{m} amortized step",
                per_repeat(f"{m} d={args.density:g}", static, "amortized_step_ms"))
               for m in DST_METHODS]
    print(f"\nratios: median over {args.repeats} repeats [bootstrap 95% interval of the median; "
          f"min-max]; wrote {args.out}")
    for target, what, values in ratios:
        s = spread.bootstrap(values)
        print(f"  {target:<13} {what:<26} {s.median:6.3f} [{s.low:.3f}-{s.high:.3f}; "
              f"{s.minimum:.3f}-{s.maximum:.3f}]  target <= {TARGETS[target]:.2f}: "
              f"{spread.verdict(s.low, s.high, TARGETS[target])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
