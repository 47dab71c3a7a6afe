"""What the harness costs: sparsebench's trainer against a bare torch loop, masked sparse
training against dense, and dynamic sparse training (DST) against static, per step.

The speed this shared 2-core machine gives one process moves by up to 1.6x from one second
to the next, so runs timed one after the other (even A-B-B-A, seconds apart) give ratios
that move by ±10 % between repeats. Here every configuration is a live trainer in the same
process, and they take **turns step by step**: a round of the loop runs one training step
of each (in an order rotated every round), so all of them see the same machine within a few
milliseconds, and a ratio of their summed step times compares like with like. The trainer's
own loop (``Trainer.epoch_steps``, the generator ``train_epoch`` runs) is what is timed, so
the harness's per-step work (fetching the batch, hooks, masks, FLOP and loss accounting) is
all in it; a method's topology updates (in a step, or at the end of the epoch) are too.

Each repeat builds every trainer afresh and trains ``--epochs`` epochs; a ratio is taken
within a repeat and printed as the median over ``--repeats`` with a bootstrap 95 % interval
and the min-max (:mod:`sparsebench.reporting.spread`); a target is called met or missed only when that
interval lies wholly on one side of it (else undecided):

1. **harness / bare loop** (target ≤ 1.05): the same dense model, data, optimizer and LR
   schedule, through ``sparsebench.training.Trainer`` and through a hand-written loop over
   the same tensors: per training step, and per epoch with the test evaluation after each
   (the harness also writes ``metrics.jsonl`` and a checkpoint then). Set-up (data decoding
   is cached; model, masks, FLOP counting) is printed in seconds, once per run.
2. **masked sparse / dense** per step (target ≤ 1.05): ``static`` at ``--density`` against
   ``dense``.
3. **DST / static** amortized step (target ≤ 1.02): all steps' time, topology updates
   included, for ``set``, ``rigl``, ``gse`` and ``magnitude`` at their paper defaults (GSE
   every 100 steps instead of 1000, so that it updates within the measured epochs), against
   ``static``.

Interleaving has one cost of its own: each trainer's weights are no longer in the cache when
its turn comes (they are about 1 MB for the MLP), which the bare loop pays as well.

Writes ``results/benchmarks/harness_overhead.csv`` (one row per trainer and repeat) and prints
the ratios; about two minutes with the defaults on an idle 2-core CPU::

    python benchmarks/harness_overhead.py                 # make bench
    python benchmarks/harness_overhead.py --model lenet5 --epochs 1
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from sparsebench.storage import atomic
from sparsebench import resolve
from sparsebench.reporting import spread
from sparsebench.config.schema import RunConfig, run_id
from sparsebench.data import build_data
from sparsebench.models import build_model
from sparsebench.training import Trainer

REPO = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO / "configs" / "fmnist_mlp.yaml"
DST_METHODS = ("set", "rigl", "gse", "magnitude")
TARGETS = {"harness/bare": 1.05, "static/dense": 1.05, "dst/static": 1.02}
BARE = "dense (bare loop)"


def short(label: str) -> str:
    return "bare" if label == BARE else label.split()[0]


class BareLoop:
    """The loop a researcher would write by hand: same model, data tensors, optimizer and
    schedule; no hooks, masks, FLOP accounting, checkpoints or result files. Shaped like the
    trainer (``epoch_steps`` yields after every step, ``finish_epoch`` evaluates) so that the
    two can take turns."""

    def __init__(self, cfg: RunConfig):
        torch.manual_seed(cfg.seed)
        data = build_data(cfg.data.name, batch_size=cfg.data.batch_size,
                          test_batch_size=cfg.data.test_batch_size, device=torch.device("cpu"),
                          seed=cfg.seed, augment=cfg.data.augment, root=cfg.data.root,
                          train_subset=cfg.data.train_subset)
        self.x_train, self.y_train = data.train.x, data.train.y
        self.x_test, self.y_test = data.test.x, data.test.y
        self.model = build_model(cfg.model.name, num_classes=data.info.num_classes,
                                 in_shape=data.info.in_shape, width=cfg.model.width)
        o = cfg.optim
        self.opt = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum,
                                   nesterov=o.nesterov, weight_decay=o.weight_decay)
        self.bs, self.test_bs = cfg.data.batch_size, cfg.data.test_batch_size
        self.steps_per_epoch = len(self.x_train) // self.bs
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.opt, cfg.epochs * self.steps_per_epoch)
        self.loss_fn = nn.CrossEntropyLoss()

    def epoch_steps(self, epoch: int):
        self.model.train()
        order = torch.randperm(len(self.x_train))
        for i in range(self.steps_per_epoch):
            idx = order[i * self.bs:(i + 1) * self.bs]
            loss = self.loss_fn(self.model(self.x_train[idx]), self.y_train[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
            yield
        return {}

    def finish_epoch(self, row: dict) -> float:
        self.model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(self.x_test), self.test_bs):
                out = self.model(self.x_test[i:i + self.test_bs])
                correct += int((out.argmax(1) == self.y_test[i:i + self.test_bs]).sum())
        return 100 * correct / len(self.x_test)


class HarnessRun:
    """sparsebench's trainer for one config, in a throw-away run folder."""

    def __init__(self, cfg: RunConfig, folder: Path):
        run_dir = folder / run_id(cfg)
        run_dir.mkdir(parents=True)
        self.trainer = Trainer(cfg, run_dir)
        self.trainer.init_masks()
        self.epoch_steps = self.trainer.epoch_steps

    def finish_epoch(self, row: dict) -> float:
        row = self.trainer.evaluate_epoch(row)
        self.trainer.record_epoch(row)
        return row["test_acc"]


def interleaved_repeat(configs: dict[str, RunConfig | None], base: RunConfig, epochs: int,
                       folder: Path) -> dict[str, dict]:
    """Build every run, then train them all for ``epochs`` epochs, one step each in turn."""
    runs, measured = {}, {}
    for label, cfg in configs.items():
        t0 = time.perf_counter()
        runs[label] = BareLoop(base) if cfg is None else HarnessRun(cfg, folder)
        measured[label] = {"setup_s": time.perf_counter() - t0, "step_s": 0.0, "steps": 0,
                           "epoch_end_s": 0.0}
    labels = list(runs)
    for epoch in range(epochs):
        live = {label: runs[label].epoch_steps(epoch) for label in labels}
        rows: dict[str, dict] = {}
        turn = 0
        while live:
            order = list(live)
            shift = turn % len(order)
            for label in order[shift:] + order[:shift]:
                t0 = time.perf_counter()
                try:
                    next(live[label])
                    measured[label]["steps"] += 1
                except StopIteration as end:  # the epoch's end-of-epoch hook ran in this call
                    rows[label] = end.value
                    del live[label]
                measured[label]["step_s"] += time.perf_counter() - t0
            turn += 1
        for label in labels[epoch % len(labels):] + labels[:epoch % len(labels)]:
            t0 = time.perf_counter()
            measured[label]["test_acc"] = runs[label].finish_epoch(rows[label])
            measured[label]["epoch_end_s"] += time.perf_counter() - t0
    return measured


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mlp", help="model name (default: mlp)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per repeat (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="fresh interleaved runs of every configuration (default %(default)s)")
    ap.add_argument("--density", type=float, default=0.1)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "harness_overhead.csv")
    args = ap.parse_args(argv)

    common = [f"model.name={args.model}", f"epochs={args.epochs}", "optim.warmup_epochs=0",
              "progress=false"]
    load = lambda overrides: resolve.load(str(BASE_CONFIG), common + overrides)  # noqa: E731
    base = load(["method.name=dense"])
    static = f"static d={args.density:g}"
    configs: dict[str, RunConfig | None] = {
        BARE: None, "dense": base,
        static: load(["method.name=static", f"density={args.density}"])}
    # GSE's default interval (1000 steps) would not update at all in two epochs of 468
    # steps; like RigL it updates every 100 steps here (as in the Fashion-MNIST sweep).
    for m in DST_METHODS:
        configs[f"{m} d={args.density:g}"] = load(
            [f"method.name={m}", f"density={args.density}"]
            + (["method.interval=100"] if m == "gse" else []))
    print(f"threads: {torch.get_num_threads()}, torch {torch.__version__}, model {args.model}, "
          f"{args.epochs} epochs per repeat, {args.repeats} repeats, {len(configs)} trainers "
          f"taking turns step by step", flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        print("warm-up: one interleaved epoch (not timed)", flush=True)
        interleaved_repeat(configs, base, 1, Path(tmp) / "warm-up")
        for repeat in range(args.repeats):
            measured = interleaved_repeat(configs, base, args.epochs, Path(tmp) / str(repeat))
            for label, m in measured.items():
                rows.append({"label": label, "repeat": repeat, **m,
                             "step_ms": 1000 * m["step_s"] / m["steps"]})
            print(f"  repeat {repeat}: step (ms) "
                  + ", ".join(f"{short(label)} {1000 * m['step_s'] / m['steps']:.3f}"
                              for label, m in measured.items()), flush=True)

    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    atomic.write_text(args.out, buf.getvalue())

    by = table.set_index(["label", "repeat"])

    def per_repeat(num: str, den: str, value) -> list[float]:
        return [value(by.loc[(num, r)]) / value(by.loc[(den, r)]) for r in range(args.repeats)]

    step = lambda row: row["step_s"] / row["steps"]                      # noqa: E731
    epoch = lambda row: row["step_s"] + row["epoch_end_s"]               # noqa: E731
    ratios = [("harness/bare", "step", per_repeat("dense", BARE, step)),
              ("harness/bare", "epoch (train + eval)", per_repeat("dense", BARE, epoch)),
              ("static/dense", "step", per_repeat(static, "dense", step))]
    ratios += [("dst/static", f"{m} amortized step", per_repeat(f"{m} d={args.density:g}", static, step))
               for m in DST_METHODS]
    print(f"\nratios: median over {args.repeats} repeats [bootstrap 95% interval of the median; "
          f"min-max]; wrote {args.out}")
    for target, what, values in ratios:
        s = spread.bootstrap(values)
        print(f"  {target:<13} {what:<26} {s.median:6.3f} [{s.low:.3f}-{s.high:.3f}; "
              f"{s.minimum:.3f}-{s.maximum:.3f}]  target <= {TARGETS[target]:.2f}: "
              f"{spread.verdict(s.low, s.high, TARGETS[target])}")
    setup = table.groupby("label")["setup_s"].median()
    print(f"  set-up per run (median): harness {setup['dense']:.2f} s (model, masks, FLOP "
          f"counting), bare loop {setup[BARE]:.2f} s; test accuracy after {args.epochs} epochs: "
          + ", ".join(f"{short(k)} {v:.2f}%" for k, v in
                      table.groupby("label")["test_acc"].median().items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
