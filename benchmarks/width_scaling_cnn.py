"""CNN width scaling: training-step time and peak memory of ResNet-20 at growing width
multipliers, always-sparse GSE against masked RigL, at a fixed number of active connections
per output unit.

ResNet-20 (He et al. 2016, CIFAR variant) with every channel count times w (16w/32w/64w) on
CIFAR-shaped synthetic inputs (3 × 32 × 32 by default; random tensors are enough for timing).
What is held fixed: every prunable layer's output unit (conv output channel, classifier output)
keeps ``--fan-in`` (16) active incoming connections, or all of them where it has fewer (the stem
conv's 27), so the active connections grow linearly with w (≈ 11,000·w at the default) while the
dense weights grow with w². Each (method, engine, width) runs in a fresh process, as in the MLP
benchmark (``benchmarks/width_scaling.py``, whose child runner, slope fit and figure this
reuses): the median of timed steps plus one topology update amortized over ``--amortize`` steps,
and the process's peak resident memory above its resident memory before the model is built.

Memory is predicted before a configuration starts (dense weights and their optimizer state for
the masked engine, active connections for the sparse one, plus activations counted by a forward
pass on the ``meta`` device); one predicted over ``--mem-cap-gib`` is not started
(``predicted_oom``), one that runs past ``--time-cap-s`` is stopped (``timeout``). The batch is
32 by default: at 128 the activations (∝ w on both engines) dominate memory at every width
(predicted: masked fits 24 GiB up to w = 16, sparse up to w = 32); at 32 the weights decide
(masked up to w = 32, sparse up to w = 128). ``--batch`` and ``--image-size`` change it.

Writes ``results/benchmarks/width_scaling_resnet.csv`` and a log-log figure with fitted slopes.

    python benchmarks/width_scaling_cnn.py                     # widths 1 … 128 (make bench-width)
    python benchmarks/width_scaling_cnn.py --quick             # batch 8, 16×16, widths 1 2 4
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from width_scaling import (TIMED_SHARE, _status_kib, child_command, sweep_widths,  # noqa: E402
                           width_arguments, write_outputs)

from sparsebench import methods, resolve  # noqa: E402
from sparsebench.storage import paths  # noqa: E402
from sparsebench.methods import InitContext, StepContext  # noqa: E402
from sparsebench.models import build_model  # noqa: E402
from sparsebench.training.schedules import build_optimizer  # noqa: E402
from sparsebench.sparsity.engine import prunable_modules  # noqa: E402
from sparsebench.sparsity.engine import build_engine  # noqa: E402
from sparsebench.training import training_step  # noqa: E402

MODEL = "resnet20"
DEFAULT_WIDTHS = [1, 2, 4, 8, 16, 32, 64, 128]
DEFAULT_METHODS = ["rigl:masked", "gse:sparse"]   # RigL first (see width_scaling.py)
COLUMNS = ["method", "engine", "width", "active_params", "step_time_s", "peak_mem_bytes",
           "status", "dense_params", "predicted_bytes", "update_time_s", "steps_timed", "batch",
           "image_size", "threads", "wall_s"]
# Bytes per dense weight on the masked engine (weight, gradient, momentum, masks, an update's
# dense scores and top-k), per active connection on the sparse one (as the MLP benchmark), per
# activation element kept for the backward pass (value and gradient, in float32, with slack for
# the optimizer's and the update's temporaries), and fixed (interpreter, torch).
MASKED_BYTES_PER_WEIGHT = 48
SPARSE_BYTES_PER_ACTIVE = 160
BYTES_PER_ACTIVATION = 12
FIXED_BYTES = 1 << 30


def parse_args(argv=None):
    p = width_arguments(__doc__, widths=DEFAULT_WIDTHS, methods=DEFAULT_METHODS, fan_in=16,
                        fan_in_help="active inputs per output unit", batch=32, steps=3,
                        time_cap_s=150.0, budget_s=420.0, config="cifar10_resnet56.yaml",
                        out="width_scaling_resnet.csv",
                        quick_help="batch 8, 16×16 images, widths 1 2 4, 2 steps: a smoke run")
    # batch 32: activations (∝ w on both engines) small enough that the weights decide which
    # widths fit 24 GiB
    p.add_argument("--image-size", type=int, default=32)
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.image_size, args.steps = 8, 16, 2
        args.widths = [w for w in args.widths if w <= 4]
    return args


# ---- sizes, from the model built on the meta device (nothing allocated) --------------------

def _meta_model(width: int, image_size: int) -> nn.Module:
    with torch.device("meta"):
        return build_model(MODEL, num_classes=10, in_shape=(3, image_size, image_size),
                           width=width)


def sizes(width: int, fan_in: int, image_size: int) -> dict[str, int]:
    """Dense and active prunable weights, and activation elements of one example."""
    model = _meta_model(width, image_size)
    dense = active = 0
    for _, m in prunable_modules(model):
        out = m.weight.shape[0]
        dense += m.weight.numel()
        active += out * min(fan_in, m.weight[0].numel())
    outputs = []
    hooks = [m.register_forward_hook(lambda m, a, o: outputs.append(o.numel()))
             for m in model.modules() if not list(m.children())]
    model(torch.empty(1, 3, image_size, image_size, device="meta"))
    for h in hooks:
        h.remove()
    return {"dense": dense, "active": active, "activations": sum(outputs)}


def predicted_bytes(engine: str, s: dict[str, int], batch: int) -> int:
    weights = (MASKED_BYTES_PER_WEIGHT * s["dense"] if engine == "masked"
               else SPARSE_BYTES_PER_ACTIVE * s["active"])
    return FIXED_BYTES + weights + BYTES_PER_ACTIVATION * batch * s["activations"]


# ---- one configuration (child process) -------------------------------------------------------

def run_one(method_name: str, engine_kind: str, width: int, args) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = resolve.load(str(args.config), [f"method.name={method_name}"])
    gen = torch.Generator().manual_seed(0)
    shape = (args.batch, 3, args.image_size, args.image_size)
    Path("/proc/self/clear_refs").write_text("5")     # reset the peak-memory high-water mark
    rss_before = _status_kib("VmRSS") * 1024
    t_start = time.perf_counter()
    kwargs = dict(num_classes=10, in_shape=shape[1:], width=width)
    if engine_kind == "sparse":
        with torch.device("meta"):     # never a dense weight, not even at construction
            model = build_model(MODEL, **kwargs)
    else:
        model = build_model(MODEL, **kwargs)
    s = sizes(width, args.fan_in, args.image_size)
    engine = build_engine(model, s["active"] / s["dense"], "uniform", engine=engine_kind,
                          device="cpu")
    for layer in engine.layers:  # a fixed fan-in per output unit, not a density per layer
        layer.target_active = layer.out_features * min(args.fan_in, layer.fan_in)
    method_cls = methods.get(method_name)
    warmup, timed = 1, args.steps
    total = 10 ** 6
    method = method_cls(method_cls.Params(interval=warmup + timed + 1, end=1.0), engine,
                        total_steps=total, steps_per_epoch=total, seed=0)
    loss_fn = nn.CrossEntropyLoss()
    batch = (torch.randn(shape, generator=gen), torch.randint(0, 10, shape[:1], generator=gen))
    method.init_masks(InitContext(model, lambda: iter([batch]), loss_fn))
    engine.apply_masks()
    optimizer = build_optimizer(cfg.optim, model)
    engine.attach_optimizer(optimizer)

    def step(i: int) -> float:
        x = torch.randn(shape, generator=gen)
        y = torch.randint(0, 10, shape[:1], generator=gen)
        t0 = time.perf_counter()
        ctx = StepContext(step=i, epoch=0, total_steps=total, steps_per_epoch=total, model=model)
        training_step(model, loss_fn, optimizer, engine, method, ctx, x, y)
        return time.perf_counter() - t0

    times = []
    for i in range(warmup + timed):
        t = step(i)
        if i >= warmup:
            times.append(t)
        if i >= warmup + 1 and time.perf_counter() - t_start > args.time_cap_s * TIMED_SHARE:
            break  # slow configuration: fewer timed steps, still one update below
    median = statistics.median(times)
    update_step = warmup + timed
    assert method.schedule.is_update(update_step)
    update_time = max(0.0, step(update_step) - median)
    peak = _status_kib("VmHWM") * 1024 - rss_before
    return {"method": method_name, "engine": engine_kind, "width": width,
            "active_params": sum(layer.n_active() for layer in engine.layers),
            "dense_params": s["dense"], "step_time_s": median + update_time / args.amortize,
            "update_time_s": update_time, "steps_timed": len(times), "peak_mem_bytes": peak,
            "status": "ok"}


# ---- the sweep (parent) ----------------------------------------------------------------------

def sweep(args) -> list[dict]:
    def base_row(method, engine, width):
        s = sizes(width, args.fan_in, args.image_size)
        return {"method": method, "engine": engine, "width": width, "active_params": s["active"],
                "dense_params": s["dense"], "threads": args.threads, "batch": args.batch,
                "image_size": args.image_size}

    return sweep_widths(
        args, base_row,
        lambda method, engine, width, cap: child_command(__file__, method, engine, width, args,
                                                         "--image-size", str(args.image_size),
                                                         time_cap_s=cap),
        lambda engine, width: predicted_bytes(engine, sizes(width, args.fan_in, args.image_size),
                                              args.batch))


def widest_within(rows: list[dict], method: str, engine: str, gib: float) -> int | None:
    """The widest width whose predicted memory fits ``gib`` (for the 24-GiB comparison)."""
    fits = [r["width"] for r in rows if (r["method"], r["engine"]) == (method, engine)
            and r["predicted_bytes"] <= gib * 2 ** 30]
    return max(fits) if fits else None


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        method, engine, width = args.child
        print(json.dumps(run_one(method, engine, int(width), args)))
        return 0
    rows = write_outputs(
        args, sweep, args.out or paths.benchmarks_dir() / "width_scaling_resnet.csv", 1,
        columns=COLUMNS, xlabel="width multiplier w (ResNet-20, 16w/32w/64w channels)",
        title=f"ResNet-20 width scaling at {args.fan_in} active inputs per output unit, "
              f"batch {args.batch}, {args.image_size}×{args.image_size} inputs")
    for spec in args.methods:
        method, engine = spec.split(":")
        print(f"widest predicted to fit 24 GiB among the widths asked: {method}/{engine} "
              f"w={widest_within(rows, method, engine, 24)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
