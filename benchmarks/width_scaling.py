"""Width scaling: training-step time and peak memory of MLPs of growing width at a fixed number
of incoming connections per neuron, always-sparse GSE against masked RigL.

The GSE paper's claim (Heddes et al., "always sparse"): with the number of active connections
per neuron fixed, the active parameters grow linearly with the width w, and so should the cost
of always-sparse training, while masked training pays for the dense w² weights. The MLP is
784 → w → w → 10 on Fashion-MNIST (``sparsebench.data``, the real data); every neuron of every
layer has ``--fan-in`` (32) active inputs, so 64·w + 320 active connections.

Each (method, engine, width) runs in a fresh process, which reports

* ``step_time_s``: the median of timed training steps (forward, backward, optimizer step and
  the method's hooks, as in ``sparsebench.training``), plus one topology update amortized over
  ``--amortize`` (100) steps: (time of an update step − median step) / 100;
* ``peak_mem_bytes``: the process's peak resident memory (``VmHWM``, reset just before the
  model is built) above its resident memory at that point, i.e. what the model, the engine,
  the optimizer and the training steps added. (tracemalloc does not see torch's allocations.)

A configuration whose predicted memory (from the dense size for the masked engine, from the
active count for the sparse one) exceeds ``--mem-cap-gib`` is not started (status
``predicted_oom``), nor one whose predicted time (:func:`predicted_wall`) exceeds
``--time-cap-s`` (``predicted_timeout``) or what is left of the sweep's ``--budget-s``
(``over_budget``: ``make bench-width`` must end within 30 minutes); one that runs past its cap
is stopped (``timeout``). Any of these ends that method's sweep. The methods run in the order
given (masked RigL first: its memory cap stops it early, and GSE takes the rest of the budget;
``--methods static:sparse static:masked`` add static sparsity on either engine).

Writes ``results/benchmarks/width_scaling.csv`` (columns ``method, engine, width,
active_params, step_time_s, peak_mem_bytes, status``, …) and a log-log figure with the fitted
slopes next to it.

    python benchmarks/width_scaling.py                # the full sweep (make bench-width)
    python benchmarks/width_scaling.py --widths 1024 2048 --methods gse:sparse
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sparsebench.storage import atomic, paths  # noqa: E402
from sparsebench import methods, resolve  # noqa: E402
from sparsebench.reporting import spread  # noqa: E402
from sparsebench.data import build_data  # noqa: E402
from sparsebench.methods import InitContext, StepContext  # noqa: E402
from sparsebench.models import build_model  # noqa: E402
from sparsebench.training.schedules import build_optimizer  # noqa: E402
from sparsebench.sparsity.engine import build_engine  # noqa: E402
from sparsebench.training import training_step  # noqa: E402

DEFAULT_WIDTHS = [1024 * 2 ** k for k in range(11)]          # 1k … 1M
# RigL first: it stops at its memory cap, and GSE takes the rest of the time budget.
DEFAULT_METHODS = ["rigl:masked", "gse:sparse"]
COLUMNS = ["method", "engine", "width", "active_params", "step_time_s", "peak_mem_bytes",
           "status", "dense_params", "predicted_bytes", "update_time_s", "steps_timed", "batch",
           "threads", "wall_s"]
# Memory prediction (bytes) used to refuse a configuration before it allocates anything:
# per dense weight on the masked engine (weight, gradient, momentum, bool and float masks, and
# the score / top-k temporaries of an update), per active connection on the sparse engine
# (values, gradient, momentum, flat indices, rows and columns, and the update's sorts and
# candidate lists), and per activation element (inputs, outputs, gradients, captures). The
# sparse engine's were 160 and 48 until the measured peaks (4.4 GiB at w = 524,288 against
# 12.8 predicted) showed them 3× too high, which refused w = 1M; they stay above the measured.
MASKED_BYTES_PER_WEIGHT = 48
SPARSE_BYTES_PER_ACTIVE = 64
BYTES_PER_ACTIVATION = 24
FIXED_BYTES = 1 << 30
# A child stops taking timed steps (after two) once set-up and steps have used this share of
# its time cap: at w = 1M one GSE step takes 18 s and the update step 140 s, so nine steps and
# the update (395 s) left no room in make bench-width's 30 minutes.
TIMED_SHARE = 0.25
# Every configuration's process runs with transparent huge pages for torch's large tensors
# (PyTorch's own allocator switch): a step of a wide sparse layer gathers rows of activations
# tens of MiB large at random, and with 4 KiB pages most of those reads also miss the TLB
# (about 25 % of the step at w = 256k). It applies to every method and engine alike.
CHILD_ENV = {"PYTHONWARNINGS": "ignore", "THP_MEM_ALLOC_ENABLE": "1"}


def width_arguments(doc: str, *, widths, methods, fan_in: int, fan_in_help: str, batch: int,
                    steps: int, time_cap_s: float, budget_s: float, config: str, out: str,
                    quick_help: str) -> argparse.ArgumentParser:
    """The options both width-scaling benchmarks take (the CNN one adds its image size)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=int, nargs="+", default=widths)
    p.add_argument("--methods", nargs="+", default=methods,
                   help="METHOD:ENGINE pairs (engine masked or sparse)")
    p.add_argument("--fan-in", type=int, default=fan_in, help=fan_in_help)
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--steps", type=int, default=steps, help="timed plain steps (fewer if slow)")
    p.add_argument("--amortize", type=int, default=100, help="steps per topology update")
    p.add_argument("--mem-cap-gib", type=float, default=20.0)
    p.add_argument("--time-cap-s", type=float, default=time_cap_s, help="per configuration")
    p.add_argument("--budget-s", type=float, default=budget_s,
                   help="for the whole sweep: a configuration whose predicted time (its "
                        "method's last width's, times that width's growth) exceeds what is "
                        "left, or the per-configuration cap, is not started")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1: stable numbers on a shared machine)")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / config,
                   help="optimizer settings come from this run config")
    p.add_argument("--out", type=Path, default=None,
                   help=f"CSV path (default: results/benchmarks/{out})")
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--child", nargs=3, metavar=("METHOD", "ENGINE", "WIDTH"),
                   help=argparse.SUPPRESS)
    return p


def child_command(script: str, method: str, engine: str, width: int, args, *extra: str,
                  time_cap_s: float) -> list[str]:
    """The command line of one configuration's child process (``extra``: the script's own;
    ``time_cap_s``: the time it may take, what :func:`sweep_widths` gives it)."""
    return [sys.executable, script, "--child", method, engine, str(width),
            "--fan-in", str(args.fan_in), "--batch", str(args.batch), "--steps", str(args.steps),
            "--amortize", str(args.amortize), "--time-cap-s", str(time_cap_s),
            "--threads", str(args.threads), "--config", str(args.config), *extra]


def parse_args(argv=None):
    p = width_arguments(__doc__, widths=DEFAULT_WIDTHS, methods=DEFAULT_METHODS, fan_in=32,
                        fan_in_help="active inputs per neuron", batch=128, steps=9,
                        time_cap_s=420.0, budget_s=1140.0, config="fmnist_mlp.yaml",
                        out="width_scaling.csv",
                        quick_help="widths 1k … 8k, 2 timed steps: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.widths, args.steps = [w for w in args.widths if w <= 8192], 2
    return args


# ---- sizes ---------------------------------------------------------------------------------

def layer_shapes(width: int) -> list[tuple[int, int]]:
    """(out, in) of the MLP's three linear layers."""
    return [(width, 784), (width, width), (10, width)]


def active_params(width: int, fan_in: int) -> int:
    return sum(out * min(fan_in, inp) for out, inp in layer_shapes(width))


def dense_params(width: int) -> int:
    return sum(out * inp for out, inp in layer_shapes(width))


def predicted_bytes(engine: str, width: int, fan_in: int, batch: int) -> int:
    activations = BYTES_PER_ACTIVATION * batch * (784 + 2 * width + 10)
    if engine == "masked":
        return FIXED_BYTES + MASKED_BYTES_PER_WEIGHT * dense_params(width) + activations
    return FIXED_BYTES + SPARSE_BYTES_PER_ACTIVE * active_params(width, fan_in) + activations


# ---- one configuration (child process) -------------------------------------------------------

def _status_kib(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def run_one(method_name: str, engine_kind: str, width: int, args) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = resolve.load(str(args.config), [f"method.name={method_name}"])
    data = build_data("fashion_mnist", batch_size=args.batch, test_batch_size=1000, device="cpu",
                      seed=0, augment=False)
    batches = iter(data.train)
    # Peak memory from here on: reset the kernel's high-water mark (Linux, /proc/PID/clear_refs).
    Path("/proc/self/clear_refs").write_text("5")
    rss_before = _status_kib("VmRSS") * 1024
    t_start = time.perf_counter()
    kwargs = dict(num_classes=10, in_shape=(1, 28, 28), hidden=(width, width))
    if engine_kind == "sparse":
        with torch.device("meta"):     # never a dense weight, not even at construction
            model = build_model("mlp", **kwargs)
    else:
        model = build_model("mlp", **kwargs)
    density = active_params(width, args.fan_in) / dense_params(width)
    engine = build_engine(model, density, "uniform", engine=engine_kind, device="cpu")
    for layer in engine.layers:  # a fixed fan-in per neuron, not a density per layer
        layer.target_active = layer.out_features * min(args.fan_in, layer.fan_in)
    method_cls = methods.get(method_name)
    warmup, timed = 1, args.steps
    params = {"interval": warmup + timed + 1, "end": 1.0} if method_name != "static" else {}
    total = 10 ** 6
    method = method_cls(method_cls.Params(**params), engine, total_steps=total,
                        steps_per_epoch=total, seed=0)
    loss_fn = nn.CrossEntropyLoss()
    method.init_masks(InitContext(model, lambda: iter(data.train), loss_fn))
    engine.apply_masks()
    optimizer = build_optimizer(cfg.optim, model)
    engine.attach_optimizer(optimizer)

    def step(i: int) -> float:
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(data.train)
            x, y = next(batches)
        t0 = time.perf_counter()
        ctx = StepContext(step=i, epoch=0, total_steps=total, steps_per_epoch=total, model=model)
        training_step(model, loss_fn, optimizer, engine, method, ctx, x, y)
        return time.perf_counter() - t0

    times = []
    budget = args.time_cap_s * TIMED_SHARE
    for i in range(warmup + timed):
        t = step(i)
        if i >= warmup:
            times.append(t)
        if i >= warmup + 1 and time.perf_counter() - t_start > budget:
            break  # slow configuration: fewer timed steps, still one update below
    median = statistics.median(times)
    update_time = 0.0
    if method_name != "static":
        update_step = warmup + timed
        assert method.schedule.is_update(update_step)
        before = [layer.active_indices().clone() for layer in engine.layers]
        update_time = max(0.0, step(update_step) - median)
        assert any(not torch.equal(b, layer.active_indices())
                   for b, layer in zip(before, engine.layers)), "the update changed nothing"
    peak = _status_kib("VmHWM") * 1024 - rss_before
    return {"method": method_name, "engine": engine_kind, "width": width,
            "active_params": sum(layer.n_active() for layer in engine.layers),
            "dense_params": dense_params(width),
            "step_time_s": median + update_time / args.amortize,
            "update_time_s": update_time, "steps_timed": len(times), "peak_mem_bytes": peak,
            "status": "ok", "threads": args.threads, "batch": args.batch}


# ---- the sweep (parent) ----------------------------------------------------------------------

def run_configuration(cmd: list[str], base: dict, time_cap_s: float) -> dict:
    """Run one configuration's child process; its JSON row, or ``base`` with why it failed
    (``timeout``, ``oom``, ``error``). Shared with the CNN benchmark."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=time_cap_s,
                              env={**os.environ, **CHILD_ENV})
    except subprocess.TimeoutExpired:
        return {**base, "status": "timeout", "wall_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        killed = proc.returncode in (-9, 137) or "MemoryError" in proc.stderr
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        print(f"    {base['method']}/{base['engine']} w={base['width']}: {tail[0]}", flush=True)
        return {**base, "status": "oom" if killed else "error", "wall_s": wall}
    return {**base, **json.loads(proc.stdout.strip().splitlines()[-1]), "wall_s": wall}


def sweep_widths(args, base_row, child_cmd, predicted) -> list[dict]:
    """Every ``method:engine`` of ``args.methods`` over ``args.widths``, narrowest first, one
    child process per configuration; once one is predicted not to fit ``args.mem_cap_gib`` or
    fails (timeout, out of memory), the wider ones are recorded as not run. Shared with the
    CNN benchmark: ``base_row(method, engine, width)`` is the row's known part,
    ``child_cmd(method, engine, width, time_cap_s)`` the child's command line and
    ``predicted(engine, width)`` its predicted peak bytes."""
    cap = args.mem_cap_gib * 2 ** 30
    rows = []
    t_start = time.perf_counter()
    for spec in args.methods:
        method, engine = spec.split(":")
        stopped = None
        walls: list[float] = []
        for width in sorted(args.widths):
            bytes_ = predicted(engine, width)
            base = {**base_row(method, engine, width), "predicted_bytes": bytes_,
                    "step_time_s": None, "peak_mem_bytes": None}
            left = args.budget_s - (time.perf_counter() - t_start)
            wall = predicted_wall(walls)
            if stopped is None and bytes_ > cap:
                stopped = "predicted_oom"
            elif stopped is None and wall > args.time_cap_s:
                stopped = "predicted_timeout"
            elif stopped is None and wall > left:
                stopped = "over_budget"
            if stopped is not None:
                rows.append({**base, "status": stopped})
                continue
            limit = min(args.time_cap_s, left)
            row = run_configuration(child_cmd(method, engine, width, limit), base, limit)
            rows.append(row)
            walls.append(row["wall_s"])
            t, m = row.get("step_time_s"), row.get("peak_mem_bytes")
            print(f"{method:7s} {engine:6s} w={width:7d} active={row['active_params']:10d} "
                  + (f"step {t:8.4f} s  peak {m / 2 ** 20:9.1f} MiB  ({row['wall_s']:.0f} s)"
                     if t is not None else row["status"]), flush=True)
            if row["status"] != "ok":
                stopped = f"not run: {row['status']} at a smaller width"
    return rows


def predicted_wall(walls: list[float]) -> float:
    """The next (twice as wide) configuration's wall time from its method's last ones: the
    last, times the last growth factor (at least 1; 2 after a single one)."""
    if not walls:
        return 0.0
    growth = max(1.0, walls[-1] / walls[-2]) if len(walls) > 1 else 2.0
    return walls[-1] * growth


def sweep(args) -> list[dict]:
    return sweep_widths(
        args,
        lambda method, engine, width: {
            "method": method, "engine": engine, "width": width,
            "active_params": active_params(width, args.fan_in), "dense_params": dense_params(width),
            "threads": args.threads, "batch": args.batch},
        lambda method, engine, width, cap: child_command(__file__, method, engine, width, args,
                                                         time_cap_s=cap),
        lambda engine, width: predicted_bytes(engine, width, args.fan_in, args.batch))


def fit_slope(widths, values) -> spread.Fit | None:
    """Least-squares slope of log(value) against log(width), with its 95 % interval."""
    return spread.loglog_fit(widths, values)


def slopes(rows: list[dict], min_width: int = 0) -> dict[tuple[str, str], dict[str, float | None]]:
    out = {}
    for key in {(r["method"], r["engine"]) for r in rows}:
        ok = [r for r in rows if (r["method"], r["engine"]) == key and r["status"] == "ok"
              and r["width"] >= min_width]
        out[key] = {"time": fit_slope([r["width"] for r in ok], [r["step_time_s"] for r in ok]),
                    "memory": fit_slope([r["width"] for r in ok], [r["peak_mem_bytes"] for r in ok])}
    return out


def write_figure(rows: list[dict], path: Path, fit_from: int, fan_in: int, *,
                 xlabel: str = "hidden width w (MLP 784-w-w-10)", title: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    if not any(r["status"] == "ok" for r in rows):
        return  # nothing measured, nothing to draw (the CSV says why)
    fits = slopes(rows, fit_from)
    keys = sorted({(r["method"], r["engine"]) for r in rows})
    colors = dict(zip(keys, sns.color_palette("colorblind", len(keys))))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, column, what, unit in ((axes[0], "step_time_s", "time", "s"),
                                   (axes[1], "peak_mem_bytes", "memory", "bytes")):
        for key in keys:
            ok = sorted((r for r in rows if (r["method"], r["engine"]) == key
                         and r["status"] == "ok"), key=lambda r: r["width"])
            if not ok:
                continue
            slope = fits[key][what]
            label = f"{key[0]} ({key[1]})" + (f": slope {slope.slope:.2f}" if slope is not None else "")
            ax.plot([r["width"] for r in ok], [r[column] for r in ok], marker="o",
                    color=colors[key], label=label)
            ended = [r for r in rows if (r["method"], r["engine"]) == key and r["status"] != "ok"]
            if ended:  # why the series stops, staggered so that stops at one width stay legible
                ax.annotate(f"{ended[0]['status'].split(':')[0]} at {ended[0]['width']}",
                            (ok[-1]["width"], ok[-1][column]), textcoords="offset points",
                            xytext=(6, -4 - 10 * keys.index(key)), fontsize=7,
                            color=colors[key])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        # Guides: what linear and quadratic growth look like from the smallest measured point,
        # clipped to the data's range.
        ylim = ax.get_ylim()
        first = min((r for r in rows if r["status"] == "ok"), key=lambda r: (r["width"], r[column]))
        w_max = max(r["width"] for r in rows)
        for power, style in ((1, ":"), (2, "--")):
            ax.plot([first["width"], w_max],
                    [first[column], first[column] * (w_max / first["width"]) ** power],
                    ls=style, lw=0.8, color="grey", label=f"slope {power} (guide)")
        ax.axvspan(fit_from, w_max, color="grey", alpha=0.06, lw=0)
        ax.set_ylim(ylim)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{'training step' if what == 'time' else 'peak memory'} ({unit})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    title = title or f"Width scaling at {fan_in} active inputs per neuron, batch {rows[0]['batch']}"
    fig.suptitle(f"{title} (log-log; slopes fitted for w ≥ {fit_from}, shaded; "
                 f"{rows[0]['threads']} thread(s))", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        method, engine, width = args.child
        print(json.dumps(run_one(method, engine, int(width), args)))
        return 0
    # Fixed costs (process, data, per-step overheads) dominate the smallest widths; the slopes
    # describe the asymptotic growth, so they are fitted from the fourth-smallest width up.
    write_outputs(args, sweep, args.out or paths.benchmarks_dir() / "width_scaling.csv", 3)
    return 0


def write_outputs(args, sweep_fn, out: Path, fit_skip: int, columns: list[str] = COLUMNS,
                  **figure) -> list[dict]:
    """Run ``sweep_fn(args)``; write its rows as CSV and the log-log figure beside it, and
    print the slopes fitted from the ``fit_skip``-th smallest width up and the widest widths."""
    t0 = time.perf_counter()
    rows = sweep_fn(args)
    import pandas as pd

    atomic.write_text(out, pd.DataFrame(rows).reindex(columns=columns).to_csv(index=False))
    fit_from = sorted(args.widths)[min(fit_skip, len(args.widths) - 1)]
    write_figure(rows, out.with_suffix(".png"), fit_from, args.fan_in, **figure)
    print(f"wrote {out} and {out.with_suffix('.png')} in {time.perf_counter() - t0:.0f} s")
    print_summary(rows, fit_from)
    return rows


def print_summary(rows: list[dict], fit_from: int) -> None:
    """The fitted slopes and the widest width each (method, engine) trained."""
    for (method, engine), s in sorted(slopes(rows, fit_from).items()):
        fmt = lambda v: "n/a" if v is None else str(v)  # noqa: E731  (slope ± its 95 % interval)
        print(f"slope (w >= {fit_from}) {method}/{engine}: time {fmt(s['time'])}, "
              f"memory {fmt(s['memory'])}")
    widest = {}
    for r in rows:
        if r["status"] == "ok":
            key = (r["method"], r["engine"])
            widest[key] = max(widest.get(key, 0), r["width"])
    for key, w in sorted(widest.items()):
        print(f"widest trained: {key[0]}/{key[1]} w={w}")


if __name__ == "__main__":
    sys.exit(main())
