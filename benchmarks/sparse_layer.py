"""The GSE paper's sparse matmul benchmark, extended to the backward pass.

The authors' ``benchmark.py`` multiplies a square weight W (n × n, n ∈ {2048, 4096, 8192,
16384}) with a batch of 128 inputs, dense ``torch.mm`` against ``torch.sparse.mm`` in COO and
CSR, forward only. Here every candidate layout for an always-sparse linear layer is timed for
the forward pass and for forward + backward (input gradient and the weight gradient at the
active positions):

Every variant (dense, coo, csr, gather, sparse_layer, sparse_layer_torch) is described, and
measured, in :mod:`sparsebench.paper.kernel_bench`, which ships in the package so that a wheel
can draw figure 8; this script adds the headline ratio and the figure.

The sparse layer's input and output gradient are given in the layout a neighbouring sparse
layer produces (batch index fastest, ``x.t()`` contiguous); the other variants get row-major
tensors, dense's best layout. (From row-major ones the layer copies them first, 2-4 % of its
time at n = 8192, 98 %.)

Connections are drawn uniformly at an exact count (the paper draws a Bernoulli mask), at the
sparsities 90 %, 99 %, 99.9 % of the paper's range plus the point the issue asks for (8192,
98 %). A measurement repeats until ``--budget-s`` seconds or ``--reps`` repetitions (median
reported); a sparse variant whose call is predicted (from the previous width, time ∝ n² at a
fixed sparsity) to take over ``--max-call-s`` is not run (status ``skipped``). Writes ``results/benchmarks/sparse_layer.csv`` and a figure next to it. First, the issue's point (8192, 98 %) is timed dense against
``sparse_layer`` interleaved round by round (``--headline-rounds``), the ratio's median and
spread printed and written to ``sparse_layer_headline.csv``.

    python benchmarks/sparse_layer.py                  # all of the above, on the CPU
    python benchmarks/sparse_layer.py --device cuda    # the same on a GPU
    python benchmarks/sparse_layer.py --quick          # a smoke run
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from interleaved import ratio_summary, time_interleaved  # noqa: E402

from sparsebench.storage import atomic, paths  # noqa: E402
from sparsebench.sparsity import native  # noqa: E402
# The measurements live in the package (an installed wheel draws figure 8 with them).
from sparsebench.paper.kernel_bench import (  # noqa: E402
    MODES, VARIANTS, Problem, parse_args, run_benchmark, write_table)


def write_figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    df = pd.DataFrame(rows).dropna(subset=["time_s"])
    widths = sorted(df["width"].unique())
    fig, axes = plt.subplots(2, len(widths), figsize=(3.2 * len(widths), 6.4), squeeze=False,
                             sharey="row")
    palette = dict(zip(VARIANTS, sns.color_palette("colorblind", len(VARIANTS))))
    for r, mode in enumerate(MODES):
        for c, n in enumerate(widths):
            ax = axes[r][c]
            sub = df[(df["width"] == n) & (df["mode"] == mode)]
            for variant, g in sub.groupby("variant"):
                g = g.sort_values("sparsity")
                style = dict(color=palette[variant], label=variant, marker="o", ms=3)
                if variant == "dense":
                    ax.axhline(g["time_s"].iloc[0], ls="--", **{k: v for k, v in style.items()
                                                                  if k in ("color", "label")})
                else:
                    ax.plot(1 - g["density"], g["time_s"], **style)
            ax.set_xscale("logit")
            ticks = sorted(df["sparsity"].unique())
            ax.set_xticks(ticks, [f"{100 * t:g}%" for t in ticks], fontsize=7)
            ax.minorticks_off()
            ax.set_yscale("log")
            ax.set_title(f"n = {n}, {mode.replace('_', ' + ')}", fontsize=9)
            ax.set_xlabel("sparsity")
            if c == 0:
                ax.set_ylabel("seconds per call")
            ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    threads, device, batch = rows[0]["threads"], rows[0]["device"], rows[0]["batch"]
    fig.suptitle(f"n × n weight times a batch of {batch} ({device}, {threads} thread(s))")
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def headline(args, n: int = 8192, sparsity: float = 0.98) -> dict:
    """Dense against the sparse layer's forward + backward at the issue's point, interleaved
    round by round in this process (``benchmarks/interleaved.py``): the per-round ratio's
    median and spread say what a single sequential measurement cannot on a shared machine."""
    torch.set_num_threads(args.threads)
    problem = Problem(n, 1 - sparsity, args.batch, torch.device(args.device),
                      torch.Generator().manual_seed(args.seed))
    on_c = native.usable(problem.values)
    layers = ["sparse_layer"] + (["sparse_layer_torch"] if on_c else [])
    runs = {v: problem.callable(v, "forward_backward") for v in ("dense", *layers)}
    times = time_interleaved(runs, rounds=args.headline_rounds, budget_s=float("inf"),
                             device=args.device)
    row = {"width": n, "sparsity": sparsity, "batch": args.batch, "threads": args.threads,
           "device": args.device, "kernels": "C" if on_c else "torch",
           "dense_s": statistics.median(times["dense"])}
    for variant in layers:
        ratio = ratio_summary(times["dense"], times[variant])
        print(f"headline n={n} sparsity {sparsity:.2f} batch {args.batch}, forward + backward, "
              f"{args.threads} thread(s), interleaved: dense "
              f"{statistics.median(times['dense']) * 1e3:.0f} ms, {variant} "
              f"{statistics.median(times[variant]) * 1e3:.1f} ms; dense/sparse median "
              f"{ratio['median']:.1f}x (min {ratio['min']:.1f}, max {ratio['max']:.1f}, "
              f"{ratio['rounds']} rounds)", flush=True)
        prefix = "" if variant == "sparse_layer" else "torch_kernels_"
        row[f"{prefix}sparse_s"] = statistics.median(times[variant])
        row.update({f"{prefix}speedup_{k}": v for k, v in ratio.items()})
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out or paths.benchmarks_dir() / "sparse_layer.csv"
    t0 = time.perf_counter()
    import pandas as pd

    if args.headline_rounds > 0:  # 0: the table alone (the paper's fig8 needs no headline)
        atomic.write_text(out.with_name(out.stem + "_headline.csv"),
                          pd.DataFrame([headline(args)]).to_csv(index=False))
    rows = run_benchmark(args)
    write_table(rows, out)
    write_figure(rows, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')} in {time.perf_counter() - t0:.0f} s")
    for row in rows:
        if (row["width"], row["sparsity"], row["variant"]) == (8192, 0.98, "sparse_layer"):
            print(f"8192 at 98 % sparsity, {row['mode']}: sparse_layer is "
                  f"{row['speedup_vs_dense']:.1f}x faster than dense")
    return 0


if __name__ == "__main__":
    sys.exit(main())
