"""What tracking costs: a step with the tracking callbacks against the same step without them
(target ≤ 1.02).

The tracked trainer has what a run gets by default (``sparsebench.training.tracking_callbacks``:
TensorBoard event files, ``steps.jsonl`` every ``--interval`` steps, the topology statistics at
every mask update); the untracked one has none. Both train the same config (RigL, so that the
topology statistics are exercised, every 100 steps) in one process, taking turns step by step
as in ``harness_overhead.py`` (whose interleaving and reasoning this reuses), so that a noisy
machine slows both alike. The time of a step is the trainer's own loop (``epoch_steps``), with
the callbacks' per-step work and the topology statistics at an update in it; the epoch's end
(evaluation, metrics.jsonl, checkpoint, then the trackers' epoch scalars) is timed apart.

Prints the ratio tracked / untracked per step and per epoch (train + epoch end) as the median
over ``--repeats`` with a bootstrap 95 % interval (:mod:`sparsebench.reporting.spread`), and the share of
the tracked step spent inside the tracking callbacks (timed directly, so it does not depend on
how noisy the machine is; the interval flushes and topology statistics at updates included)::

    python benchmarks/tracking_overhead.py                 # about 2 min on an idle 2-core CPU
    python benchmarks/tracking_overhead.py --method static --interval 10
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from sparsebench import resolve
from sparsebench.reporting import spread
from sparsebench.config.schema import RunConfig
from sparsebench.training import Trainer
from sparsebench.training.tracking_callbacks import tracking_callbacks

REPO = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO / "configs" / "fmnist_mlp.yaml"
TARGET = 1.02


class Run:
    def __init__(self, cfg: RunConfig, run_dir: Path, tracked: bool):
        run_dir.mkdir(parents=True)
        self.trainer = Trainer(cfg, run_dir,
                               callbacks=tracking_callbacks(cfg, run_dir) if tracked else [])
        self.trainer.init_masks()
        for callback in self.trainer.callbacks:
            callback.on_run_start(self.trainer)
        self.callback_s = 0.0  # time inside the tracking callbacks' on_step_end
        for callback in self.trainer.callbacks[1:]:  # [0] is the progress bar both have
            callback.on_step_end = self._timed(callback.on_step_end)

    def _timed(self, hook):
        def timed(*args):
            t0 = time.perf_counter()
            hook(*args)
            self.callback_s += time.perf_counter() - t0
        return timed

    def finish_epoch(self, row: dict) -> None:
        row = self.trainer.evaluate_epoch(row)
        self.trainer.record_epoch(row)
        for callback in self.trainer.callbacks:
            callback.on_epoch_end(self.trainer, row)

    def close(self) -> None:
        for callback in self.trainer.callbacks:
            callback.on_run_end(self.trainer, "completed")


def repeat(cfg: RunConfig, folder: Path, epochs: int) -> dict[str, dict]:
    runs = {"untracked": Run(cfg, folder / "untracked", False),
            "tracked": Run(cfg, folder / "tracked", True)}
    measured = {k: {"step_s": 0.0, "steps": 0, "epoch_end_s": 0.0} for k in runs}
    for epoch in range(epochs):
        live = {k: r.trainer.epoch_steps(epoch) for k, r in runs.items()}
        rows, turn = {}, 0
        while live:
            order = list(live)
            for label in order[turn % len(order):] + order[:turn % len(order)]:
                t0 = time.perf_counter()
                try:
                    next(live[label])
                    measured[label]["steps"] += 1
                except StopIteration as end:
                    rows[label] = end.value
                    del live[label]
                measured[label]["step_s"] += time.perf_counter() - t0
            turn += 1
        for label in (list(runs) if epoch % 2 else list(runs)[::-1]):
            t0 = time.perf_counter()
            runs[label].finish_epoch(rows[label])
            measured[label]["epoch_end_s"] += time.perf_counter() - t0
    for label, run in runs.items():
        run.close()
        measured[label]["callback_s"] = run.callback_s
    return measured


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="rigl")
    ap.add_argument("--density", type=float, default=0.02)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--interval", type=int, default=50, help="tracking.step_interval")
    ap.add_argument("overrides", nargs="*", help="more key=value overrides of the config")
    args = ap.parse_args(argv)
    cfg = resolve.load(str(BASE_CONFIG), [
        f"method.name={args.method}", f"density={args.density}", f"epochs={args.epochs}",
        "progress=false", f"tracking.step_interval={args.interval}", "optim.warmup_epochs=0",
        *(["method.interval=100"] if args.method in ("rigl", "gse", "set") else []),
        *args.overrides])
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}, {args.method} "
          f"d={args.density:g}, {args.epochs} epoch(s) per repeat, {args.repeats} repeats, "
          f"step_interval {args.interval}", flush=True)
    step, epoch, inside = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        repeat(cfg, Path(tmp) / "warm-up", 1)
        for r in range(args.repeats):
            m = repeat(cfg, Path(tmp) / str(r), args.epochs)
            t, u = m["tracked"], m["untracked"]
            step.append((t["step_s"] / t["steps"]) / (u["step_s"] / u["steps"]))
            epoch.append((t["step_s"] + t["epoch_end_s"]) / (u["step_s"] + u["epoch_end_s"]))
            inside.append(t["callback_s"] / t["step_s"])
            print(f"  repeat {r}: step ms tracked {1000 * t['step_s'] / t['steps']:.3f}, "
                  f"untracked {1000 * u['step_s'] / u['steps']:.3f}", flush=True)
    s = spread.bootstrap(inside)
    print(f"time inside the tracking callbacks' on_step_end: {100 * s.median:.3f} % of the "
          f"tracked step time [{100 * s.low:.3f}-{100 * s.high:.3f}] (1 + this is the per-step "
          f"ratio free of the machine's noise)")
    for what, values in (("step", step), ("epoch (train + end)", epoch)):
        s = spread.bootstrap(values)
        print(f"tracked/untracked {what:<20} {s.median:.3f} [{s.low:.3f}-{s.high:.3f}; "
              f"{s.minimum:.3f}-{s.maximum:.3f}]  target <= {TARGET}: "
              f"{spread.verdict(s.low, s.high, TARGET)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
