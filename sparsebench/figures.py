"""The report's figures, drawn with seaborn on plain matplotlib ``Figure`` objects.

Every function takes the DataFrame of :func:`sparsebench.results.load_results` and returns a
Figure, or raises :class:`SkipFigure` saying why the data cannot support it (one method only,
one density only, no sampler comparison in this sweep, ...). Only completed runs are drawn.
Figures are built without pyplot, so nothing here depends on (or changes) the backend; the
report's command line selects the non-interactive Agg backend.

Panels: one per data set and model (and per extra swept config field, see
:func:`sparsebench.tables.extra_keys`). Error bars and bands are ± one standard deviation over
seeds.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

from . import paths
from .results import completed, layer_table, load_metrics
from .tables import display_name, extra_keys, ordered_methods

ACC = "final test accuracy (%)"
DENSE = "dense"


class SkipFigure(Exception):
    """The data of this sweep cannot support this figure (the message says why)."""


# ---------------------------------------------------------------------------------------------
# shared pieces

def _theme():
    return sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85)


def _figure(n_panels: int, width: float = 5.2, height: float = 3.8, ncols: int | None = None):
    ncols = ncols or min(n_panels, 3)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(max(width * ncols, 6.4), height * nrows + 1.0), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes[:n_panels])


def palette(labels) -> dict[str, tuple]:
    """One colour per method label, in the report's method order."""
    methods = ordered_methods(labels)
    # tab10 repeats itself after ten colours (the 11th method would share the 1st's): Dark2's
    # eight follow, then the cycle starts again
    colours = sns.color_palette("tab10") + sns.color_palette("Dark2")
    return {m: colours[i % len(colours)] for i, m in enumerate(methods)}


def sparsity_label(density: float) -> str:
    return f"{100 * (1 - density):.4g}%"


def _completed_with_acc(df: pd.DataFrame) -> pd.DataFrame:
    data = completed(df)
    return data[data["final_test_acc"].notna()].copy()


def _panels(df: pd.DataFrame, exclude: tuple[str, ...] = ()) -> list[tuple[str, pd.DataFrame]]:
    """(title, rows) per data set × model × extra swept config field."""
    extras = [k for k in extra_keys(df) if k not in exclude]
    keys = ["dataset", "model"] + extras
    out = []
    for values, rows in df.groupby(keys, dropna=False, sort=True):
        parts = [str(values[0]), str(values[1])]
        parts += [f"{display_name(k)}={v:g}" if isinstance(v, float) else f"{display_name(k)}={v}"
                  for k, v in zip(extras, values[2:])]
        out.append((" · ".join(parts), rows))
    return out


def _title(fig: Figure, title: str, detail: str) -> None:
    """A short title, with what the marks mean on a second line (fits a one-panel figure)."""
    fig.suptitle(f"{title}\n{detail}", fontsize="medium")


def _figure_legend(fig: Figure, title: str = "method", order: list[str] | None = None,
                  right: bool = False) -> None:
    """One legend for the whole figure, under the panels (or, for a legend with sections, to
    their right), never on top of data; entries named in ``order`` come first, in that order
    (methods: dense first)."""
    entries = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if not label.startswith("_"):
                entries.setdefault(label, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if order is not None:
        rank = {label: i for i, label in enumerate(order)}
        labels = sorted(entries, key=lambda label: rank.get(label, len(rank)))
    else:
        labels = list(entries)
    if labels and right:
        fig.legend([entries[label] for label in labels], labels, title=title,
                   loc="outside right upper", frameon=False)
    elif labels:
        rows = math.ceil(len(labels) / 5)
        fig.legend([entries[label] for label in labels], labels, title=title,
                   loc="outside lower center", ncol=math.ceil(len(labels) / rows), frameon=False)


def _log_axis(ax, axis: str = "x") -> None:
    """Log scale with plain-number ticks at 1, 2, 5 × powers of ten."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    target.set_minor_locator(NullLocator())
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _density_axis(ax, densities) -> None:
    """Log-scaled density, inverted so sparsity grows to the right; ticks name the sparsity."""
    densities = sorted(set(float(d) for d in densities))
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(densities))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda d, _: sparsity_label(d)))
    lo, hi = min(densities), max(densities)
    pad = (hi / lo) ** 0.06 if hi > lo else 1.3
    ax.set_xlim(hi * pad, lo / pad)
    if len(densities) > 6:
        ax.tick_params(axis="x", labelrotation=45)
    ax.set_xlabel("sparsity (share of prunable weights removed; log-spaced)")


def _cell_stats(data: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    stats = data.groupby(keys, dropna=False)[value].agg(["mean", "std", "count"]).reset_index()
    stats["std"] = stats["std"].fillna(0.0)
    return stats


# ---------------------------------------------------------------------------------------------
# figures

def accuracy_vs_density(df: pd.DataFrame) -> Figure:
    """Final test accuracy against density per method, mean ± std over seeds; dense as a band."""
    data = _completed_with_acc(df)
    sparse = data[data["method"] != DENSE]
    if sparse["density"].nunique() < 2:
        raise SkipFigure("needs completed sparse runs at two or more densities")
    colors = palette(df["method_label"])
    style, context = _theme()
    with style, context:
        panels = _panels(data)
        fig, axes = _figure(len(panels))
        for ax, (title, rows) in zip(axes, panels):
            sp = rows[rows["method"] != DENSE]
            if not sp.empty:
                sns.lineplot(data=sp, x="density", y="final_test_acc", hue="method_label",
                             hue_order=[m for m in colors if m in set(sp["method_label"])],
                             palette=colors, errorbar="sd", err_style="bars", marker="o",
                             err_kws={"capsize": 3}, ax=ax)
            _dense_band(ax, rows, colors)
            _density_axis(ax, sp["density"] if not sp.empty else rows["density"])
            ax.set_ylabel(ACC)
            ax.set_title(title)
        _title(fig, "Final test accuracy vs sparsity",
               "mean ± std over seeds; dense: dashed line and band")
        _figure_legend(fig, order=list(colors))
    return fig


def _dense_band(ax, rows: pd.DataFrame, colors: dict) -> None:
    dense = rows.loc[rows["method"] == DENSE, "final_test_acc"]
    if dense.empty:
        return
    mean, std = dense.mean(), dense.std(ddof=1) if len(dense) > 1 else 0.0
    color = colors.get(DENSE, "0.3")
    ax.axhline(mean, color=color, linestyle="--", linewidth=1.2, label=DENSE)
    if std > 0:
        ax.axhspan(mean - std, mean + std, color=color, alpha=0.15, linewidth=0)


def _tradeoff(df: pd.DataFrame, x: str, xlabel: str, title: tuple[str, str], what: str) -> Figure:
    """Accuracy (mean ± std over seeds) against a per-cell cost (mean over seeds); a line joins
    a method's densities from the least to the most sparse."""
    data = _completed_with_acc(df)
    data = data[data[x].notna() & (data[x] > 0)]
    if data.empty:
        raise SkipFigure(f"no completed runs with {what}")
    if data["method_label"].nunique() < 2 and data["density"].nunique() < 2:
        raise SkipFigure("needs two or more methods or densities")
    colors = palette(df["method_label"])
    style, context = _theme()
    with style, context:
        panels = _panels(data)
        fig, axes = _figure(len(panels))
        for ax, (panel_title, rows) in zip(axes, panels):
            acc = _cell_stats(rows, ["method_label", "density"], "final_test_acc")
            cost = rows.groupby(["method_label", "density"])[x].mean().rename("cost").reset_index()
            cells = (acc.merge(cost, on=["method_label", "density"])
                     .sort_values("density", ascending=False))
            for method in [m for m in colors if m in set(cells["method_label"])]:
                c = cells[cells["method_label"] == method]
                ax.errorbar(c["cost"], c["mean"], yerr=c["std"], color=colors[method],
                            marker="*" if method == DENSE else "o",
                            markersize=11 if method == DENSE else 6, capsize=3, label=method)
            span = cells["cost"].max() / cells["cost"].min()
            if span > 8:
                _log_axis(ax, "x")
            ax.set_xlabel(xlabel + (" (log scale)" if span > 8 else ""))
            ax.set_ylabel(ACC)
            ax.set_title(panel_title)
        _title(fig, *title)
        _figure_legend(fig, order=list(colors))
    return fig


def accuracy_vs_train_flops(df: pd.DataFrame) -> Figure:
    return _tradeoff(df, "train_flops_rel_dense", "training FLOPs relative to dense training",
                     ("Final test accuracy vs training FLOPs",
                      "one point per method and density; mean ± std over seeds"),
                     "training FLOPs")


def accuracy_vs_wall_clock(df: pd.DataFrame) -> Figure:
    return _tradeoff(df, "wall_clock_s", "wall-clock training time per run (s)",
                     ("Final test accuracy vs wall-clock training time",
                      "one point per method and density; "
                      "accuracy mean ± std, time mean over seeds"),
                     "a wall-clock time")


def width_scaling(df: pd.DataFrame) -> Figure:
    """Accuracy and median step time against the width multiplier (width_scaling sweeps)."""
    data = _completed_with_acc(df)
    if data["width"].nunique() < 2:
        raise SkipFigure("the sweep has one model width only")
    colors = palette(df["method_label"])
    several_densities = data["density"].nunique() > 1
    legend_order = ["method"] + list(colors)
    if several_densities:
        data["sparsity"] = data["density"].map(sparsity_label)
        legend_order += ["sparsity"] + [sparsity_label(d) for d in
                                        sorted(data["density"].unique(), reverse=True)]
    widths = sorted(data["width"].unique())
    style, context = _theme()
    with style, context:
        panels = _panels(data, exclude=("config.model.width",))
        fig, axes = _figure(2 * len(panels), ncols=2)
        for i, (title, rows) in enumerate(panels):
            # The legend's section headers are the column names: call the label "method".
            rows = rows.drop(columns="method").rename(columns={"method_label": "method"})
            for ax, y, ylabel in ((axes[2 * i], "final_test_acc", ACC),
                                  (axes[2 * i + 1], "step_time_ms", "median step time (ms)")):
                sns.lineplot(data=rows, x="width", y=y, hue="method",
                             hue_order=[m for m in colors if m in set(rows["method"])],
                             palette=colors, style="sparsity" if several_densities else None,
                             errorbar="sd", err_style="bars", marker="o",
                             err_kws={"capsize": 3}, ax=ax)
                ax.set_xscale("log", base=2)
                ax.xaxis.set_major_locator(FixedLocator(widths))
                ax.xaxis.set_minor_locator(NullLocator())
                ax.xaxis.set_major_formatter(FuncFormatter(lambda w, _: f"×{w:g}"))
                ax.set_xlabel("width multiplier of every layer")
                ax.set_ylabel(ylabel)
                ax.set_title(title)
            axes[2 * i + 1].set_ylim(bottom=0)
        detail = "mean ± std over seeds"
        if not several_densities:
            detail += f"; sparsity {sparsity_label(data['density'].iloc[0])}"
        _title(fig, "Width scaling", detail)
        _figure_legend(fig, title="", order=legend_order, right=several_densities)
    return fig


def gse_samplers(df: pd.DataFrame) -> Figure:
    """GSE's gradient samplers side by side at each density: accuracy and mask-update time."""
    data = _completed_with_acc(df)
    if "method.sampler" not in data.columns:
        raise SkipFigure("no GSE runs with a sampler in this sweep")
    gse = data[(data["method"] == "gse") & data["method.sampler"].notna()].copy()
    samplers = sorted(gse["method.sampler"].unique())
    if len(samplers) < 2:
        raise SkipFigure("needs completed GSE runs with two or more samplers")
    gse["sparsity"] = gse["density"].map(sparsity_label)
    order = [sparsity_label(d) for d in sorted(gse["density"].unique(), reverse=True)]
    colors = dict(zip(samplers, sns.color_palette("Set2", len(samplers))))
    style, context = _theme()
    with style, context:
        panels = _panels(gse)
        fig, axes = _figure(2 * len(panels), ncols=2)
        for i, (title, rows) in enumerate(panels):
            for ax, y, ylabel in ((axes[2 * i], "final_test_acc", ACC),
                                  (axes[2 * i + 1], "update_time_s",
                                   "time in mask updates per run (s)")):
                sns.pointplot(data=rows, x="sparsity", y=y, hue="method.sampler",
                              hue_order=samplers,
                              order=[o for o in order if o in set(rows["sparsity"])],
                              palette=colors, errorbar="sd", dodge=0.35, capsize=0.08,
                              linestyle="none", markers="o", ax=ax)
                ax.set_xlabel("sparsity (share of prunable weights removed)")
                ax.set_ylabel(ylabel)
                ax.set_title(title)
            axes[2 * i + 1].set_ylim(bottom=0)
        _title(fig, "GSE: gradient samplers side by side", "mean ± std over seeds")
        _figure_legend(fig, title="GSE sampler")
    return fig


def lowest_sparse_density(data: pd.DataFrame) -> float:
    sparse = data.loc[data["method"] != DENSE, "density"].dropna()
    if sparse.empty:
        raise SkipFigure("no completed sparse runs")
    return float(sparse.min())


def training_progress(df: pd.DataFrame) -> Figure:
    """Test accuracy per epoch at the sweep's highest sparsity, one line per method (mean over
    seeds, ± std band); dense for reference (the GSE paper's training-progress figure)."""
    data = _completed_with_acc(df)
    density = lowest_sparse_density(data)
    chosen = data[(data["density"] == density) | (data["method"] == DENSE)]
    metrics = load_metrics(chosen)
    if metrics.empty or metrics["epoch"].nunique() < 2:
        raise SkipFigure("needs metrics.jsonl with two or more epochs")
    colors = palette(df["method_label"])
    style, context = _theme()
    with style, context:
        panels = _panels(metrics.merge(chosen[["run_id"] + extra_keys(df)], on="run_id")
                         if extra_keys(df) else metrics)
        fig, axes = _figure(len(panels))
        for ax, (title, rows) in zip(axes, panels):
            methods = [m for m in colors if m in set(rows["method_label"])]
            sns.lineplot(data=rows, x="epoch", y="test_acc", hue="method_label", hue_order=methods,
                         palette=colors, style="method_label", style_order=methods,
                         dashes={m: (4, 2) if m == DENSE else "" for m in methods},
                         errorbar="sd", ax=ax)
            ax.set_xlabel("epoch")
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(title)
            ax.xaxis.set_major_locator(FixedLocator(sorted(rows["epoch"].unique())[:: max(
                1, rows["epoch"].nunique() // 10)]))
        _title(fig, f"Training progress at sparsity {sparsity_label(density)}",
               "test accuracy after each epoch; mean ± std band over seeds; dense for reference")
        _figure_legend(fig, order=list(colors))
    return fig


def layer_sparsity(df: pd.DataFrame) -> Figure:
    """Each prunable layer's final compression (size / active connections) per method at the
    sweep's highest sparsity, log scale (the GSE paper's layer-wise sparsity figure)."""
    data = _completed_with_acc(df)
    density = lowest_sparse_density(data)
    layers = layer_table(data[(data["density"] == density) & (data["method"] != DENSE)])
    layers = layers[np.isfinite(layers["compression"])]
    if layers.empty:
        raise SkipFigure("no per-layer densities in the completed runs")
    colors = palette(df["method_label"])
    style, context = _theme()
    with style, context:
        panels = _panels(layers.merge(data[["run_id"] + extra_keys(df)], on="run_id")
                         if extra_keys(df) else layers)
        n_layers = max(rows["layer_index"].nunique() for _, rows in panels)
        fig, axes = _figure(len(panels), width=max(5.2, 0.32 * n_layers + 2), height=4.2,
                            ncols=1 if n_layers > 12 else None)
        for ax, (title, rows) in zip(axes, panels):
            methods = [m for m in colors if m in set(rows["method_label"])]
            # Methods that keep each layer's count (static, SET, RigL) coincide; a small
            # sideways shift per method keeps every one of them visible.
            shift = {m: 0.25 * (i - (len(methods) - 1) / 2) / max(len(methods), 1)
                     for i, m in enumerate(methods)}
            rows = rows.assign(x=rows["layer_index"] + rows["method_label"].map(shift))
            sns.lineplot(data=rows, x="x", y="compression", hue="method_label",
                         hue_order=methods, palette=colors, errorbar="sd", err_style="bars",
                         marker="o", ax=ax)
            _log_axis(ax, "y")
            names = rows.drop_duplicates("layer_index").sort_values("layer_index")
            ax.xaxis.set_major_locator(FixedLocator(names["layer_index"].tolist()))
            layer_names = dict(zip(names["layer_index"], names["layer"]))
            ax.xaxis.set_major_formatter(FuncFormatter(
                lambda i, _, n=layer_names: n.get(int(round(i)), "")))
            ax.tick_params(axis="x", labelrotation=90 if n_layers > 6 else 0)
            ax.set_xlabel("prunable layer (input → output)")
            ax.set_ylabel("compression: weights / active (log)")
            ax.set_title(title)
        _title(fig, f"Layer-wise sparsity at overall sparsity {sparsity_label(density)}",
               "final compression of each prunable layer; mean ± std over seeds")
        _figure_legend(fig, order=list(colors))
    return fig


FIGURES: dict[str, Callable[[pd.DataFrame], Figure]] = {
    "accuracy_vs_density": accuracy_vs_density,
    "accuracy_vs_train_flops": accuracy_vs_train_flops,
    "accuracy_vs_wall_clock": accuracy_vs_wall_clock,
    "width_scaling": width_scaling,
    "gse_samplers": gse_samplers,
    "training_progress": training_progress,
    "layer_sparsity": layer_sparsity,
}


def write_figures(df: pd.DataFrame, sweep: str, root: Path | None = None,
                  formats: tuple[str, ...] = ("png", "pdf")) -> tuple[list[Path], dict[str, str]]:
    """Draw every figure the data supports; returns (paths written, {figure: why skipped})."""
    folder = paths.figures_dir(sweep, root)
    folder.mkdir(parents=True, exist_ok=True)
    written, skipped = [], {}
    for name, draw in FIGURES.items():
        try:
            fig = draw(df)
        except SkipFigure as why:
            skipped[name] = str(why)
            continue
        written += save_figure(fig, folder, name, formats)
    return written, skipped


def save_figure(fig: Figure, folder: Path, name: str,
                formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """``folder/name.{png,pdf}``, each written to a temporary file and renamed into place."""
    written = []
    for fmt in formats:
        path = folder / f"{name}.{fmt}"
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=fmt, dpi=150)
        tmp.replace(path)  # a reader never sees a half-written figure
        written.append(path)
    return written
