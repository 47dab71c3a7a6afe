"""`make gpu-check`: every CUDA-only path of sparsebench, once, on a CUDA machine, in minutes.

On CIFAR-100-format data (Fashion-MNIST in the CIFAR layout where found, else random images):

* every registered method for one short epoch on ResNet-20, VGG-16-small and SimpleViT-tiny,
  channels-last, with bf16 autocast and without it (fp32 with TF32, the GSE protocol's);
* GSE and static on the always-sparse engine on each model;
* every method compiled (``compile: true``, inductor) on ResNet-20 and SimpleViT-tiny, with its
  step time beside the eager cell's, the compile time and the number of graphs compiled; and
  the data-parallel run compiled (DDP, then torch.compile);
* the sparse-layer and sparse-conv benchmarks on the device (``--quick``);
* a data-parallel run in an NCCL process group of one GPU (DDP, SyncBatchNorm, NCCL
  collectives), in its own process;

with ``torch.cuda.max_memory_allocated`` for each run. Writes ``results/gpu_check/report.md``
(status, epoch time, peak memory and the precision settings in effect, per run) and
``report.json``. Exits 2 with one line where torch sees no CUDA device, 1 if any run failed.
Imports nothing beyond torch, PyYAML, numpy, pandas and tqdm (the GPU machine has no
submitit), and needs no install: ``PYTHONPATH=. python3 scripts/gpu_check.py``.

``--device cpu`` runs the same cells on the CPU (the test suite runs one tiny cell this way);
filters (``--models``, ``--methods``, ``--amp``) and sizes make a smaller check.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from sparsebench.storage import atomic, paths  # noqa: E402
from sparsebench import methods, resolve  # noqa: E402
from sparsebench.paper import fashion_cifar  # noqa: E402
from sparsebench.training import run_folder, train  # noqa: E402

SWEEP = "gpu_check"
MODELS = ("resnet20", "vgg16_small", "simple_vit_tiny")
SPARSE_ENGINE_METHODS = ("gse", "static")
COMPILE_MODELS = ("resnet20", "simple_vit_tiny")   # the models whose methods also run compiled
# Short schedules so that updates happen inside one epoch of a few steps.
METHOD_PARAMS = {
    "rigl": ["method.interval=3"], "set": ["method.interval=3"], "gse": ["method.interval=3"],
    "magnitude": ["method.frequency=3", "method.start=0.0"],
    "topkast": ["method.explore_epochs=0.5", "method.interval=3"],
    "synflow": ["method.iterations=10"], "lottery": ["method.rounds=1"],
}
# amp cells: bf16 autocast; fp32 with TF32 and cuDNN autotuning (as the GSE authors' code).
AMP = {"bf16": ["amp=bf16", "tf32=false", "cudnn_benchmark=true"],
       "false": ["amp=false", "tf32=true", "cudnn_benchmark=true"]}
DDP_CHILD = "--ddp-child"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu: the same cells on the CPU (a smoke run of this script)")
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--methods", nargs="+", default=None, help="default: every registered one")
    p.add_argument("--amp", nargs="+", choices=tuple(AMP), default=list(AMP))
    p.add_argument("--width", type=float, default=1.0, help="model width multiplier")
    p.add_argument("--train", type=int, default=1280, help="generated training images")
    p.add_argument("--test", type=int, default=500, help="generated test images")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--no-benchmarks", action="store_true")
    p.add_argument("--no-compile", action="store_true", help="leave out the compiled cells")
    p.add_argument("--compile-backend", choices=("inductor", "aot_eager"), default="inductor",
                   help="aot_eager: the compiled cells' tracing only (a quick CPU smoke run)")
    p.add_argument("--no-ddp", action="store_true")
    p.add_argument(DDP_CHILD, nargs="+", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---- one run ---------------------------------------------------------------------------------

def overrides(args, model: str, method: str, amp: str, engine: str) -> list[str]:
    return [f"sweep={SWEEP}", "data.name=cifar100", f"data.batch_size={args.batch}",
            f"data.test_batch_size={args.test}", f"model.name={model}", f"model.width={args.width}",
            f"method.name={method}", *METHOD_PARAMS.get(method, []), "density=0.1", "epochs=1",
            f"device={args.device}", "channels_last=true", f"sparsity.engine={engine}",
            "progress=false", "tracking.tensorboard=false", *AMP[amp]]


def measured_run(args, name: str, cell: list[str]) -> dict:
    """Train one cell in this process; its row of the report (never raises)."""
    cuda = args.device == "cuda"
    row = {"run": name, "status": "failed", "epoch_time_s": None, "peak_mem_mib": None,
           "precision": None, "error": None, "step_time_ms": None, "compiled": None,
           "compile_time_s": None, "compiled_graphs": None}
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        cfg = resolve.load(None, cell)
        result = train(cfg, force=True)
        row["status"] = result["status"]
        row["error"] = result.get("error")
        row["precision"] = result.get("precision")
        for key in ("step_time_ms", "compiled", "compile_time_s", "compiled_graphs"):
            row[key] = result.get(key)
        rows = [json.loads(line) for line in
                (run_folder(cfg) / paths.METRICS).read_text().splitlines()]
        row["epoch_time_s"] = rows[-1]["epoch_time_s"] if rows else None
    except Exception as err:  # one broken cell must not hide the others
        row["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        traceback.print_exc()
    if cuda:
        row["peak_mem_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return row


def ddp_child(cell: list[str]) -> None:
    """One data-parallel run in a process group of one rank: NCCL on CUDA (gloo on the CPU)."""
    import torch.distributed as dist

    cuda = "device=cuda" in cell
    dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1)
    try:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        result = train(resolve.load(None, cell), force=True)
        peak = torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None
        print(json.dumps({"status": result["status"], "error": result.get("error"),
                          "precision": result.get("precision"), "peak_mem_mib": peak,
                          "backend": dist.get_backend(), "compiled": result.get("compiled"),
                          "compiled_graphs": result.get("compiled_graphs")}))
    finally:
        dist.destroy_process_group()


def compiled_run(args, model: str, method: str) -> dict:
    """One method compiled on ``model``: the row of its masked-engine cell at the first amp
    setting, with ``compile: true``; the report sets it beside that eager cell."""
    amp = args.amp[0]
    row = measured_run(args, f"{model} {method} amp={amp} compiled",
                       overrides(args, model, method, amp, "masked")
                       + ["compile=true", f"compile_backend={args.compile_backend}"])
    row.update(compiled_cell=True, eager_twin=f"{model} {method} amp={amp}")
    if row["status"] == "completed" and not row["compiled"]:
        row.update(status="failed", error="compile: true, yet the run ran eager")
    return row


def ddp_run(args, cell: list[str], suffix: str = "") -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port())}
    row = {"run": f"ddp {'nccl' if args.device == 'cuda' else 'gloo'} 1 rank{suffix}", "status": "failed",
           "epoch_time_s": None, "peak_mem_mib": None, "precision": None, "error": None}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, DDP_CHILD, *cell], capture_output=True,
                         text=True, env=env, timeout=600)
    lines = out.stdout.strip().splitlines()
    try:
        child = json.loads(lines[-1])
        row.update(status=child["status"], error=child["error"], precision=child["precision"],
                   peak_mem_mib=child["peak_mem_mib"], compiled=child.get("compiled"),
                   compiled_graphs=child.get("compiled_graphs"))
        if "compile=true" in cell and row["status"] == "completed" and not row["compiled"]:
            row.update(status="failed", error="compile: true, yet the run ran eager")
    except (IndexError, ValueError):
        row["error"] = (out.stderr.strip().splitlines() or ["no output"])[-1][:300]
    row["epoch_time_s"] = time.perf_counter() - t0   # the whole process: start-up included
    return row


def benchmark(args, script: str, extra: list[str]) -> dict:
    row = {"run": f"benchmarks/{script}", "status": "failed", "epoch_time_s": None,
           "peak_mem_mib": None, "precision": None, "error": None}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--quick",
                          "--device", args.device, *extra], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    row["epoch_time_s"] = time.perf_counter() - t0
    row["status"] = "completed" if out.returncode == 0 else "failed"
    if out.returncode:
        row["error"] = (out.stderr.strip().splitlines() or ["no output"])[-1][:300]
    return row


def write_data(folder: Path, train: int, test: int) -> None:
    """CIFAR-100-format images: Fashion-MNIST in the CIFAR layout where it is found, else random
    uint8 images with random labels (a GPU machine has no data sets; the check times and
    exercises code, it measures no accuracy)."""
    if fashion_cifar.SOURCE.is_dir():
        fashion_cifar.write_cifar100_format(folder, train=train, test=test)
        return
    import pickle

    import numpy as np

    rng = np.random.default_rng(0)
    for name, n in (("train", train), ("test", test)):
        blob = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                "fine_labels": rng.integers(0, 100, n).tolist()}
        atomic.write_bytes(folder / "cifar-100-python" / name, pickle.dumps(blob))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the report ------------------------------------------------------------------------------

def _cell(value, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def compiled_table(rows: list[dict]) -> list[str]:
    """Compiled cells beside their eager twins: median step times, ratio, compile cost."""
    by_name = {r["run"]: r for r in rows}
    lines = ["", "Compiled cells (median step time of the one epoch; the eager twin is the cell "
             "with the same model, method and amp):", "",
             "| run | status | eager step (ms) | compiled step (ms) | compiled/eager | "
             "compile time (s) | graphs | error |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r.get("compiled_cell"):
            continue
        eager = by_name.get(r["eager_twin"], {})
        e, c = eager.get("step_time_ms"), r.get("step_time_ms")
        ratio = c / e if e and c else None
        lines.append(f"| {r['run']} | {r['status']} | {_cell(e, '.2f')} | {_cell(c, '.2f')} | "
                     f"{_cell(ratio, '.3f')} | {_cell(r.get('compile_time_s'), '.1f')} | "
                     f"{_cell(r.get('compiled_graphs'), 'd')} | "
                     f"{(r['error'] or '').replace('|', '/')} |")
    return lines


def report(rows: list[dict], args, wall_s: float) -> str:
    device = (f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})" if args.device == "cuda"
              else "CPU")
    failed = [r for r in rows if r["status"] != "completed"]
    lines = [f"# GPU check: {device}", "",
             f"torch {torch.__version__}; {len(rows)} runs, {len(failed)} not completed; "
             f"{wall_s / 60:.1f} min in all. Data: CIFAR-100-format images "
             f"({args.train} train, {args.test} test; NOT CIFAR). Epoch time: the run's one epoch "
             "(for benchmarks and the data-parallel run: the whole process). Peak memory: "
             "torch.cuda.max_memory_allocated.", "",
             "| run | status | epoch time (s) | peak memory (MiB) | amp | TF32 matmul/cuDNN | "
             "cudnn.benchmark | channels-last | deterministic | error |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["precision"] or {}
        tf32 = f"{p['tf32_matmul']}/{p['tf32_cudnn']}" if p else ""
        lines.append(f"| {r['run']} | {r['status']} | {_cell(r['epoch_time_s'], '.2f')} | "
                     f"{_cell(r['peak_mem_mib'], '.0f')} | {p.get('amp') or ('fp32' if p else '')} | "
                     f"{tf32} | {p.get('cudnn_benchmark', '')} | {p.get('channels_last', '')} | "
                     f"{p.get('deterministic_algorithms', '')} | {(r['error'] or '').replace('|', '/')} |")
    if any(r.get("compiled_cell") for r in rows):
        lines += compiled_table(rows)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.ddp_child is not None:
        ddp_child(args.ddp_child)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: torch sees no CUDA device; run it on a CUDA machine "
              "(or --device cpu for a smoke run on the CPU)", file=sys.stderr)
        return 2
    names = args.methods or methods.available()
    unknown = sorted(set(names) - set(methods.available()))
    if unknown:
        print(f"gpu-check: --methods: no such method {unknown[0]!r}; allowed: "
              f"{', '.join(methods.available())}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    out_dir = paths.sweep_dir(SWEEP)
    rows = []
    with tempfile.TemporaryDirectory() as data:
        write_data(Path(data) / "cifar100", args.train, args.test)
        os.environ["SPARSEBENCH_DATA"] = data
        for model in args.models:
            for method in names:
                for amp in args.amp:
                    rows.append(measured_run(args, f"{model} {method} amp={amp}",
                                             overrides(args, model, method, amp, "masked")))
            if model in COMPILE_MODELS and not args.no_compile:
                for method in names:
                    rows.append(compiled_run(args, model, method))
            for method in (m for m in SPARSE_ENGINE_METHODS if m in names):
                rows.append(measured_run(args, f"{model} {method} sparse engine",
                                         overrides(args, model, method, args.amp[0], "sparse")))
            print(f"gpu-check: {model} done ({len(rows)} runs, "
                  f"{time.perf_counter() - t0:.0f} s)", flush=True)
        if not args.no_ddp:
            ddp_cell = overrides(args, args.models[0], "rigl" if "rigl" in names else names[0],
                                 args.amp[0], "masked")
            rows.append(ddp_run(args, ddp_cell))
            if not args.no_compile:   # DDP, then torch.compile (the order torch documents)
                rows.append(ddp_run(args, ddp_cell + ["compile=true",
                                                      f"compile_backend={args.compile_backend}"],
                                    suffix=" compiled"))
    if not args.no_benchmarks:
        rows.append(benchmark(args, "sparse_layer.py", []))
        rows.append(benchmark(args, "sparse_conv.py", []))
    wall_s = time.perf_counter() - t0
    atomic.write_text(out_dir / "report.md", report(rows, args, wall_s))
    atomic.write_json(out_dir / "report.json", {"device": args.device, "wall_s": wall_s, "runs": rows})
    print(out_dir / "report.md")
    return 0 if all(r["status"] == "completed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
