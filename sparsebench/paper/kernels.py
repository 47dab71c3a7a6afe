"""Figure 8: sparse × dense matrix-multiplication time, from :mod:`.kernel_bench`.

The benchmark writes one CSV row per (width n, sparsity, variant, mode) with the median time of
a call (columns ``width, sparsity, variant, mode, time_s, status, device`` among others). The
paper's figure is the forward product of an n × n weight with a batch of 128 for dense, COO and
CSR weights, n ∈ {2048, 4096, 8192, 16384}, ten sparsities from 80 % to 99.9 %; this draws
every variant and device the CSVs hold (forward mode), one panel per n.

``make paper`` runs the benchmark into ``results/paper/kernels/sparse_layer_<device>.csv``
(:data:`BENCHMARK_ARGS`); the figure reads every ``sparse_layer*.csv`` there.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

# The paper's grid: 10 sparsities from 80 % to 99.9 %, evenly spaced in log(1 − sparsity).
PAPER_SPARSITIES = tuple(float(f"{1 - d:.6g}") for d in np.logspace(np.log10(0.2), -3, 10))
PAPER_WIDTHS = (2048, 4096, 8192, 16384)
BENCHMARK_ARGS = ["--widths", *map(str, PAPER_WIDTHS), "--sparsities", *map(str, PAPER_SPARSITIES),
                  "--extra", "--batch", "128", "--variants", "dense", "coo", "csr"]
VARIANT_NAMES = {"dense": "Dense", "coo": "COO", "csr": "CSR", "gather": "gather",
                 "sparse_layer": "SparseLinear (ours)",
                 "sparse_layer_torch": "SparseLinear on torch kernels"}
NEEDED = ("width", "sparsity", "variant", "mode", "time_s")


class NoKernelData(Exception):
    """No usable benchmark CSV (the message says what was looked for)."""


def load(folder: Path) -> pd.DataFrame:
    # The benchmark's ``*_headline.csv`` (one dense-vs-SparseLinear ratio) is not a table row.
    files = sorted(f for f in Path(folder).glob("sparse_layer*.csv")
                   if not f.name.endswith("_headline.csv"))
    if not files:
        raise NoKernelData(f"no sparse_layer*.csv in {folder} (run: python -m sparsebench."
                           f"paper.kernel_bench --out {folder}/sparse_layer_cpu.csv ...)")
    frames = []
    for path in files:
        df = pd.read_csv(path)
        lacking = [c for c in NEEDED if c not in df.columns]
        if lacking:
            raise NoKernelData(f"{path}: no column(s) {', '.join(lacking)}")
        df["file"] = path.name
        frames.append(df)
    data = pd.concat(frames, ignore_index=True)
    if "device" not in data.columns:
        data["device"] = "cpu"
    # Skipped and failed measurements have no time; the paper's figure is the forward product.
    data = data[data["time_s"].notna() & (data["mode"].astype(str) == "forward")]
    if data.empty:
        raise NoKernelData(f"the CSVs in {folder} hold no measured forward times")
    return data


def figure(data: pd.DataFrame) -> Figure:
    import seaborn as sns
    from matplotlib.ticker import FixedLocator, FuncFormatter

    from ..reporting.plotting import log_axis

    data = data.assign(variant_name=data["variant"].map(lambda v: VARIANT_NAMES.get(v, v)),
                       time_ms=1000 * data["time_s"], density=1 - data["sparsity"])
    widths = sorted(data["width"].unique())
    ncols = min(len(widths), 2)
    nrows = math.ceil(len(widths) / ncols)
    fig = Figure(figsize=(5.4 * ncols, 3.8 * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    order = [VARIANT_NAMES.get(v, v) for v in VARIANT_NAMES if v in set(data["variant"])]
    order += sorted(set(data["variant_name"]) - set(order))
    colors = dict(zip(order, sns.color_palette("tab10", len(order))))
    devices = sorted(data["device"].astype(str).unique())
    styles = dict(zip(devices, ["-", "--", ":", "-."]))
    for ax, n in zip(axes, widths):
        rows = data[data["width"] == n]
        for (variant, device), group in rows.groupby(["variant_name", "device"]):
            group = group.sort_values("density", ascending=False)
            ax.plot(group["density"], group["time_ms"], marker="o", markersize=3,
                    color=colors[variant], linestyle=styles[str(device)],
                    label=f"{variant}" + (f" ({device})" if len(devices) > 1 else ""))
        ax.set_xscale("log")
        ax.invert_xaxis()
        ticks = sorted({d for d in rows["density"]}, reverse=True)
        shown = [d for d in ticks if any(abs(d - t) < 1e-9 for t in (0.2, 0.1, 0.05, 0.02, 0.01,
                                                                      0.005, 0.002, 0.001))] or ticks
        ax.xaxis.set_major_locator(FixedLocator(shown))
        ax.xaxis.set_minor_locator(FixedLocator([]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda d, _: f"{100 * (1 - d):.4g}%"))
        log_axis(ax, "y")  # ticks at 1, 2, 5 × powers of ten, as plain numbers
        ax.set_xlabel("sparsity of the n × n weight (log scale of the share kept)")
        ax.set_ylabel("time per product (ms, log scale)")
        batch = int(rows["batch"].iloc[0]) if "batch" in rows.columns else 128
        ax.set_title(f"n = {n}, batch {batch}")
    for ax in axes[len(widths):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    rank = {name: i for i, name in enumerate(order)}
    pairs = sorted(zip(labels, handles), key=lambda p: rank.get(p[0].split(" (")[0], len(rank)))
    labels, handles = [p[0] for p in pairs], [p[1] for p in pairs]
    fig.legend(handles, labels, loc="outside right upper", title="weight format", frameon=False)
    fig.suptitle("Sparse × dense matrix multiplication (forward)", fontsize=11)
    return fig
