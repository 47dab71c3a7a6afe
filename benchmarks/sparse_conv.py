"""The always-sparse convolution against dense ``conv2d``, forward + backward, on ResNet-56's
conv shapes (CIFAR, 32×32 inputs) at batch 128.

For each distinct conv of ResNet-56 (stem, the three stages' 3×3 convs and the two stride-2
transitions) and each sparsity (90 / 98 / 99 %), one forward and one backward (input gradient
and weight gradient: dense for ``conv2d``, the active values' only for
:class:`~sparsebench.sparsity.sparse_conv.SparseConv2d`) are timed, both variants interleaved
round by round in one process (``benchmarks/interleaved.py``), one thread by default. Reported:
the median time of each and the median, min and max of the per-round ratio dense / sparse.
Writes ``results/benchmarks/sparse_conv.{csv,md}``.

    python benchmarks/sparse_conv.py                     # batch 128, all shapes
    python benchmarks/sparse_conv.py --quick             # batch 32, 3 rounds (a smoke run)
    python benchmarks/sparse_conv.py --device cuda
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from interleaved import ratio_summary, time_interleaved  # noqa: E402

from sparsebench.storage import atomic, paths  # noqa: E402
from sparsebench.sparsity.sparse_conv import SparseConv2d  # noqa: E402
from sparsebench.sparsity.sparse_layer import sample_distinct  # noqa: E402

# (name, C_in, C_out, input side, stride) of ResNet-56's distinct 3×3 convs on 32×32 inputs.
RESNET56_CONVS = [("stem", 3, 16, 32, 1), ("stage1", 16, 16, 32, 1), ("stage2_down", 16, 32, 32, 2),
                  ("stage2", 32, 32, 16, 1), ("stage3_down", 32, 64, 16, 2), ("stage3", 64, 64, 8, 1)]
COLUMNS = ["conv", "c_in", "c_out", "side", "stride", "batch", "sparsity", "nnz", "dense_s",
           "sparse_s", "speedup_median", "speedup_min", "speedup_max", "rounds", "threads",
           "device"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.98, 0.99])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=7, help="at most this many interleaved rounds")
    p.add_argument("--budget-s", type=float, default=6.0, help="time per shape and sparsity")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="batch 32, 3 rounds: a smoke run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None,
                   help="CSV path (default: results/benchmarks/sparse_conv.csv)")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.rounds, args.budget_s = 32, 3, 1.0
    return args


def conv_runs(c_in: int, c_out: int, side: int, stride: int, sparsity: float, batch: int,
              device, generator) -> tuple[dict, int]:
    """The dense and the sparse conv's forward + backward, as callables, and the nnz."""
    numel = c_out * c_in * 9
    nnz = max(1, round((1 - sparsity) * numel))
    idx = sample_distinct(numel, nnz, generator).to(device)
    values = (torch.randn(nnz, generator=generator) / (c_in * 9) ** 0.5).to(device)
    weight = torch.zeros(numel, device=device)
    weight[idx] = values
    weight = weight.view(c_out, c_in, 3, 3).requires_grad_(True)
    sparse = SparseConv2d(c_in, c_out, 3, stride, 1, 1, idx, values, None).to(device)
    x = torch.randn(batch, c_in, side, side, generator=generator).to(device)
    dy = torch.randn(batch, c_out, (side - 1) // stride + 1, (side - 1) // stride + 1,
                     generator=generator).to(device)
    x_dense, x_sparse = x.clone().requires_grad_(True), x.clone().requires_grad_(True)

    def dense():
        weight.grad = x_dense.grad = None
        F.conv2d(x_dense, weight, None, stride, 1).backward(dy)

    def sparse_run():
        sparse.values.grad = x_sparse.grad = None
        sparse(x_sparse).backward(dy)
    return {"dense": dense, "sparse": sparse_run}, nnz


def run_benchmark(args) -> list[dict]:
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    for name, c_in, c_out, side, stride in RESNET56_CONVS:
        for sparsity in args.sparsities:
            runs, nnz = conv_runs(c_in, c_out, side, stride, sparsity, args.batch, args.device,
                                  generator)
            times = time_interleaved(runs, rounds=args.rounds, budget_s=args.budget_s,
                                     device=args.device)
            ratio = ratio_summary(times["dense"], times["sparse"])
            dense_s, sparse_s = (sorted(times[k])[len(times[k]) // 2] for k in ("dense", "sparse"))
            rows.append({"conv": name, "c_in": c_in, "c_out": c_out, "side": side,
                         "stride": stride, "batch": args.batch, "sparsity": sparsity, "nnz": nnz,
                         "dense_s": dense_s, "sparse_s": sparse_s,
                         "speedup_median": ratio["median"], "speedup_min": ratio["min"],
                         "speedup_max": ratio["max"], "rounds": ratio["rounds"],
                         "threads": args.threads, "device": args.device})
            print(f"{name:12s} {c_in:3d}->{c_out:3d} @{side:2d} s{stride} sparsity {sparsity:.2f}: "
                  f"dense {dense_s * 1e3:8.1f} ms  sparse {sparse_s * 1e3:8.1f} ms  "
                  f"dense/sparse {ratio['median']:.2f} (min {ratio['min']:.2f}, max "
                  f"{ratio['max']:.2f}, {ratio['rounds']} rounds)", flush=True)
    return rows


def markdown_table(rows: list[dict]) -> str:
    """Convs as rows, sparsities as columns: dense/sparse median (min–max)."""
    sparsities = sorted({r["sparsity"] for r in rows})
    head = ("| conv (C_in→C_out @ side, stride) | dense ms | "
            + " | ".join(f"{100 * s:g} % sparse ms, dense/sparse" for s in sparsities) + " |")
    lines = [head, "|" + "---|" * (2 + len(sparsities))]
    for name in dict.fromkeys(r["conv"] for r in rows):
        sub = {r["sparsity"]: r for r in rows if r["conv"] == name}
        first = next(iter(sub.values()))
        cells = [f"{sub[s]['sparse_s'] * 1e3:.1f}, {sub[s]['speedup_median']:.2f}× "
                 f"({sub[s]['speedup_min']:.2f}–{sub[s]['speedup_max']:.2f})" for s in sparsities]
        lines.append(f"| {name} ({first['c_in']}→{first['c_out']} @ {first['side']}, "
                     f"{first['stride']}) | {first['dense_s'] * 1e3:.1f} | " + " | ".join(cells)
                     + " |")
    r0 = rows[0]
    return (f"Forward + backward, batch {r0['batch']}, {r0['device']}, {r0['threads']} thread(s); "
            "dense/sparse: median (min–max) of per-round ratios.\n\n" + "\n".join(lines) + "\n")


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out or paths.benchmarks_dir() / "sparse_conv.csv"
    t0 = time.perf_counter()
    rows = run_benchmark(args)
    import pandas as pd

    atomic.write_text(out, pd.DataFrame(rows)[COLUMNS].to_csv(index=False))
    atomic.write_text(out.with_suffix(".md"), markdown_table(rows))
    print(markdown_table(rows))
    print(f"wrote {out} and {out.with_suffix('.md')} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
