"""The report's figures, drawn with seaborn on plain matplotlib ``Figure`` objects.

Every function takes the DataFrame of :func:`sparsebench.reporting.results.load_results` and returns a
Figure, or raises :class:`SkipFigure` saying why the data cannot support it (one method only,
one density only, no sampler comparison in this sweep, ...). Only completed runs are drawn.
Figures are built without pyplot, so nothing here depends on (or changes) the backend; the
report's command line selects the non-interactive Agg backend.

Panels: one per data set and model (and per extra swept config field, see
:func:`sparsebench.reporting.tables.extra_keys`). Error bars and bands are ± one standard deviation over
seeds.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from ..storage import paths
from .plotting import (ACCURACY, DENSE, SkipFigure, coincide_note, coinciding, figure,
    figure_legend, log_axis, method_colors, reference_line, save_figure, sd_within_range,
    sparsity_text, sparsity_x_axis, sparsity_y_axis, spread_text, theme)
from .plotting import title as figure_title
from .results import completed, layer_table, load_metrics
from .tables import extra_keys, panel_label

__all__ = ["FIGURES", "SkipFigure", "write_figures"]


# ---------------------------------------------------------------------------------------------
# shared pieces

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
        parts += [panel_label(k, v) for k, v in zip(extras, values[2:])]
        out.append((" · ".join(parts), rows))
    return out


def _over_seeds(data: pd.DataFrame, what: str = "mean ± std") -> str:
    """``mean ± std over 3 seeds`` (or ``over 1–3 seeds``); ``one run per point`` when no
    point has a spread to show."""
    seeds = data.groupby(["dataset", "model", "method_label", "density"] + extra_keys(data),
                         dropna=False)["run_id"].nunique()
    return spread_text(seeds.tolist(), what, unit="seeds")


def _cell_stats(data: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    stats = data.groupby(keys, dropna=False)[value].agg(["mean", "std", "count"]).reset_index()
    stats["std"] = stats["std"].fillna(0.0)
    return stats


# ---------------------------------------------------------------------------------------------
# figures

def accuracy_vs_density(df: pd.DataFrame) -> Figure:
    """Final test accuracy against sparsity per method, mean ± std over seeds; dense as a
    dashed line with a ± std band where the sweep has dense runs."""
    data = _completed_with_acc(df)
    sparse = data[data["method"] != DENSE]
    if sparse["density"].nunique() < 2:
        raise SkipFigure("needs completed sparse runs at two or more sparsities")
    colors = method_colors(df["method_label"])
    style, context = theme()
    with style, context:
        panels = _panels(data)
        fig, axes = figure(len(panels))
        for ax, (panel_title, rows) in zip(axes, panels):
            sp = rows[rows["method"] != DENSE]
            if not sp.empty:
                sns.lineplot(data=sp, x="density", y="final_test_acc", hue="method_label",
                             hue_order=[m for m in colors if m in set(sp["method_label"])],
                             palette=colors, errorbar="sd", err_style="bars", marker="o",
                             err_kws={"capsize": 3}, ax=ax)
            _dense_band(ax, rows, colors)
            sparsity_x_axis(ax, sp["density"] if not sp.empty else rows["density"])
            ax.set_ylabel(ACCURACY)
            ax.set_title(panel_title)
        reference = ("dense: dashed line, ± std band" if (data["method"] == DENSE).any()
                     else "no dense run in this sweep")
        figure_title(fig, "Final test accuracy vs sparsity",
                     f"{_over_seeds(data)}; {reference}")
        figure_legend(fig, order=list(colors))
    return fig


def _dense_band(ax, rows: pd.DataFrame, colors: dict) -> None:
    reference_line(ax, rows.loc[rows["method"] == DENSE, "final_test_acc"],
                   colors.get(DENSE, "0.3"), DENSE, linewidth=1.2)


def _tradeoff(df: pd.DataFrame, x: str, xlabel: str, heading: tuple[str, str], what: str) -> Figure:
    """Accuracy (mean ± std over seeds) against a per-cell cost (mean over seeds); a line joins
    a method's densities from the least to the most sparse."""
    data = _completed_with_acc(df)
    data = data[data[x].notna() & (data[x] > 0)]
    if data.empty:
        raise SkipFigure(f"no completed runs with {what}")
    if data["method_label"].nunique() < 2 and data["density"].nunique() < 2:
        raise SkipFigure("needs two or more methods or densities")
    colors = method_colors(df["method_label"])
    style, context = theme()
    with style, context:
        panels = _panels(data)
        fig, axes = figure(len(panels))
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
                log_axis(ax, "x")
            ax.set_xlabel(xlabel + (" (log scale)" if span > 8 else ""))
            ax.set_ylabel(ACCURACY)
            ax.set_title(panel_title)
        figure_title(fig, heading[0], f"{heading[1]}; {_over_seeds(data)}")
        figure_legend(fig, order=list(colors))
    return fig


def accuracy_vs_train_flops(df: pd.DataFrame) -> Figure:
    return _tradeoff(df, "train_flops_rel_dense", "training FLOPs relative to dense training",
                     ("Final test accuracy vs training FLOPs",
                      "one point per method and sparsity"),
                     "training FLOPs")


def accuracy_vs_wall_clock(df: pd.DataFrame) -> Figure:
    return _tradeoff(df, "wall_clock_s", "wall-clock training time per run (s)",
                     ("Final test accuracy vs wall-clock training time",
                      "one point per method and sparsity (time: the mean)"),
                     "a wall-clock time")


def width_scaling(df: pd.DataFrame) -> Figure:
    """Accuracy and median step time against the width multiplier (width_scaling sweeps)."""
    data = _completed_with_acc(df)
    if data["width"].nunique() < 2:
        raise SkipFigure("the sweep has one model width only")
    colors = method_colors(df["method_label"])
    several_densities = data["density"].nunique() > 1
    legend_order = ["method"] + list(colors)
    if several_densities:
        data["sparsity"] = data["density"].map(sparsity_text)
        legend_order += ["sparsity"] + [sparsity_text(d) for d in
                                        sorted(data["density"].unique(), reverse=True)]
    widths = sorted(data["width"].unique())
    style, context = theme()
    with style, context:
        panels = _panels(data, exclude=("config.model.width",))
        fig, axes = figure(2 * len(panels), ncols=2)
        for i, (panel_title, rows) in enumerate(panels):
            # The legend's section headers are the column names: call the label "method".
            rows = rows.drop(columns="method").rename(columns={"method_label": "method"})
            for ax, y, ylabel in ((axes[2 * i], "final_test_acc", ACCURACY),
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
                ax.set_xlabel("width multiplier of every layer (log₂ scale)")
                ax.set_ylabel(ylabel)
                ax.set_title(panel_title)
            axes[2 * i + 1].set_ylim(bottom=0)
        detail = _over_seeds(data)
        if not several_densities:
            detail += f"; sparsity {sparsity_text(data['density'].iloc[0])}"
        figure_title(fig, "Final test accuracy and step time vs model width", detail)
        figure_legend(fig, title="", order=legend_order, right=several_densities)
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
    gse["sparsity"] = gse["density"].map(sparsity_text)
    order = [sparsity_text(d) for d in sorted(gse["density"].unique(), reverse=True)]
    # The sampler's colour is its method label's (gse (grabo) ...), as in every other figure.
    by_label = method_colors([f"gse ({s})" for s in samplers])
    colors = {label[len("gse ("):-1]: colour for label, colour in by_label.items()}
    samplers = list(colors)  # in the legends' order: uniform, grabo, graest, then others
    style, context = theme()
    with style, context:
        panels = _panels(gse)
        fig, axes = figure(2 * len(panels), ncols=2)
        for i, (panel_title, rows) in enumerate(panels):
            for ax, y, ylabel in ((axes[2 * i], "final_test_acc", ACCURACY),
                                  (axes[2 * i + 1], "update_time_s",
                                   "time in mask updates per run (s)")):
                sns.pointplot(data=rows, x="sparsity", y=y, hue="method.sampler",
                              hue_order=samplers,
                              order=[o for o in order if o in set(rows["sparsity"])],
                              palette=colors, errorbar="sd", dodge=0.35, capsize=0.08,
                              linestyle="none", markers="o", ax=ax)
                ax.set_xlabel("sparsity (share of prunable weights removed)")
                ax.set_ylabel(ylabel)
                ax.set_title(panel_title)
            axes[2 * i + 1].set_ylim(bottom=0)
        figure_title(fig, "GSE's gradient samplers: final test accuracy and time in mask "
                     "updates at each sparsity", _over_seeds(gse))
        figure_legend(fig, title="GSE sampler")
    return fig


def chosen_density(data: pd.DataFrame, density: float | None = None) -> float:
    """``density`` when given (it must be one of the sweep's), else the sweep's highest
    sparsity: the density the per-epoch and per-layer figures are drawn at."""
    sparse = data.loc[data["method"] != DENSE, "density"].dropna()
    if sparse.empty:
        raise SkipFigure("no completed sparse runs")
    if density is None:
        return float(sparse.min())
    if not np.isclose(sparse.unique(), density).any():
        raise SkipFigure(f"no completed sparse runs at sparsity {sparsity_text(density)}; "
                         f"completed: {sparsities_text(sparse)} (--sparsity PCT picks one)")
    return float(density)


def sparsities_text(densities) -> str:
    return ", ".join(sparsity_text(d) for d in sorted(set(densities), reverse=True))


def _at(data: pd.DataFrame, density: float) -> pd.Series:
    return np.isclose(data["density"], density)


def training_progress(df: pd.DataFrame, density: float | None = None) -> Figure:
    """Test accuracy per epoch at one sparsity (default: the sweep's highest), one line per
    method (mean over seeds, ± std band), dense as the dashed reference where the sweep has
    one (the GSE paper's training-progress figure)."""
    data = _completed_with_acc(df)
    density = chosen_density(data, density)
    chosen = data[_at(data, density) | (data["method"] == DENSE)]
    metrics = load_metrics(chosen)
    if metrics.empty:
        raise SkipFigure("no epoch rows in the runs' metrics.jsonl")
    colors = method_colors(df["method_label"])
    together = []
    style, context = theme()
    with style, context:
        panels = _panels(metrics.merge(chosen[["run_id"] + extra_keys(df)], on="run_id")
                         if extra_keys(df) else metrics)
        fig, axes = figure(len(panels))
        for ax, (panel_title, rows) in zip(axes, panels):
            methods = [m for m in colors if m in set(rows["method_label"])]
            # A marker per method (about ten per curve) shows a run of one epoch, and curves
            # that lie on top of each other (named in the subtitle).
            sns.lineplot(data=rows, x="epoch", y="test_acc", hue="method_label", hue_order=methods,
                         palette=colors, style="method_label", style_order=methods,
                         dashes={m: (4, 2) if m == DENSE else "" for m in methods},
                         markers=True, markevery=max(1, rows["epoch"].nunique() // 10),
                         errorbar="sd", ax=ax)
            together += [g for g in coinciding(rows, "method_label", "epoch", "test_acc", methods)
                         if g not in together]
            ax.set_xlabel("epoch")
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(panel_title)
            ax.xaxis.set_major_locator(FixedLocator(sorted(rows["epoch"].unique())[:: max(
                1, rows["epoch"].nunique() // 10)]))
        reference = ("dense (dashed) for reference" if (metrics["method"] == DENSE).any()
                     else "no dense run in this sweep")
        figure_title(fig, f"Test accuracy during training at sparsity {sparsity_text(density)}",
                     f"after each epoch; {_over_seeds(chosen, 'mean ± std band')}; "
                     f"{reference}{coincide_note(together)}")
        figure_legend(fig, order=list(colors))
    return fig


def layer_sparsity(df: pd.DataFrame, density: float | None = None) -> Figure:
    """Each prunable layer's final sparsity per method at one overall sparsity (default: the
    sweep's highest), on a scale where 90, 99 and 99.9 % are evenly apart (the GSE paper's
    layer-wise sparsity figure)."""
    data = _completed_with_acc(df)
    density = chosen_density(data, density)
    layers = layer_table(data[_at(data, density) & (data["method"] != DENSE)])
    if layers.empty:
        raise SkipFigure("no per-layer densities in the completed runs")
    layers = layers.assign(layer_sparsity=100 * (1 - layers["layer_density"]))
    colors = method_colors(df["method_label"])
    style, context = theme()
    with style, context:
        panels = _panels(layers.merge(data[["run_id"] + extra_keys(df)], on="run_id")
                         if extra_keys(df) else layers)
        n_layers = max(rows["layer_index"].nunique() for _, rows in panels)
        fig, axes = figure(len(panels), width=max(5.2, 0.32 * n_layers + 2), height=4.2,
                           ncols=1 if n_layers > 12 else None)
        for ax, (panel_title, rows) in zip(axes, panels):
            methods = [m for m in colors if m in set(rows["method_label"])]
            # Methods that keep each layer's count (static, SET, RigL) coincide; a small
            # sideways shift per method keeps every one of them visible.
            shift = {m: 0.25 * (i - (len(methods) - 1) / 2) / max(len(methods), 1)
                     for i, m in enumerate(methods)}
            rows = rows.assign(x=rows["layer_index"] + rows["method_label"].map(shift))
            sns.lineplot(data=rows, x="x", y="layer_sparsity", hue="method_label",
                         hue_order=methods, palette=colors, errorbar=sd_within_range,
                         err_style="bars", marker="o", ax=ax)
            sparsity_y_axis(ax, "sparsity of the layer (%)", rows["layer_sparsity"])
            names = rows.drop_duplicates("layer_index").sort_values("layer_index")
            ax.xaxis.set_major_locator(FixedLocator(names["layer_index"].tolist()))
            layer_names = dict(zip(names["layer_index"], names["layer"]))
            ax.xaxis.set_major_formatter(FuncFormatter(
                lambda i, _, n=layer_names: n.get(int(round(i)), "")))
            ax.tick_params(axis="x", labelrotation=90 if n_layers > 6 else 0)
            ax.set_xlabel("prunable layer (input → output)")
            ax.set_title(panel_title)
        figure_title(fig, f"Sparsity of each layer at overall sparsity {sparsity_text(density)}",
                     f"at the end of training; {_over_seeds(data[_at(data, density)])}")
        figure_legend(fig, order=list(colors))
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


# The figures drawn at one sparsity (``report --sparsity``; default the sweep's highest).
AT_ONE_SPARSITY = ("training_progress", "layer_sparsity")


def write_figures(df: pd.DataFrame, sweep: str, root: Path | None = None,
                  formats: tuple[str, ...] = ("png", "pdf"), *,
                  density: float | None = None) -> tuple[list[Path], dict[str, str]]:
    """Draw every figure the data supports; returns (paths written, {figure: why skipped}).
    ``density`` chooses the sparsity of the figures in :data:`AT_ONE_SPARSITY`."""
    folder = paths.figures_dir(sweep, root)
    folder.mkdir(parents=True, exist_ok=True)
    written, skipped = [], {}
    for name, draw in FIGURES.items():
        if name in AT_ONE_SPARSITY:
            draw = partial(draw, density=density)
        try:
            fig = draw(df)
        except SkipFigure as why:
            skipped[name] = str(why)
            continue
        written += save_figure(fig, folder, name, formats)
    return written, skipped
