"""Final accuracy against one swept quantity: the subset factor γ (figure 2), the width at a
constant number of active connections (figure 3), the layer-wise distribution (figure 5).

Each takes the completed runs of its artifact (``Evidence.completed()``) and the report's
:class:`~sparsebench.paper.names.Names`, and returns a :class:`~sparsebench.paper.plotting.Drawn`
or raises :class:`sparsebench.reporting.plotting.SkipFigure` saying what is lacking. Marks are the mean
over runs with ± one standard deviation.
"""
from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from ..reporting.plotting import (ACCURACY, SkipFigure, figure, figure_legend, reference_line,
    sparsity_text, spread_text, theme)
from ..reporting.plotting import title as figure_title
from .names import SAMPLERS
from .plotting import Drawn, colors_for, runs_per_point, with_paper_names

DISTRIBUTIONS = {"uniform": "uniform", "er": "ER", "er_flat": "ER (flattened)", "erk": "ERK"}


def _panel_title(names, dataset, model, extra: str = "") -> str:
    return f"{names.dataset(dataset)} · {names.model(model)}" + (f" · {extra}" if extra else "")


def gamma(done: pd.DataFrame, names) -> Drawn:
    """Figure 2: accuracy vs γ per sampler, one panel per model; RigL as a horizontal line."""
    gse = done[done["method"] == "gse"].copy()
    if gse.empty or "method.subset_factor" not in gse.columns:
        raise SkipFigure("no completed GSE runs with a subset factor")
    gse["sampler"] = gse["method.sampler"].map(lambda s: f"GSE ({SAMPLERS.get(s, s)})")
    rigl = done[done["method"] == "rigl"]
    samplers = [f"GSE ({v})" for v in SAMPLERS.values() if f"GSE ({v})" in set(gse["sampler"])]
    colors = colors_for(samplers + (["RigL"] if len(rigl) else []))
    gammas = sorted(gse["method.subset_factor"].unique())
    counts = []
    style, context = theme()
    with style, context:
        panels = list(gse.groupby(["dataset", "model", "density"], sort=False))
        fig, axes = figure(len(panels))
        for ax, ((dataset, model, density), rows) in zip(axes, panels):
            sns.lineplot(data=rows, x="method.subset_factor", y="final_test_acc", hue="sampler",
                         hue_order=samplers, palette=colors, errorbar="sd", err_style="bars",
                         marker="o", err_kws={"capsize": 3}, ax=ax)
            counts += rows.groupby(["sampler", "method.subset_factor"]).size().tolist()
            ref = rigl[(rigl["dataset"] == dataset) & (rigl["model"] == model)
                       & ((rigl["density"] - density).abs() < 1e-12)]["final_test_acc"]
            if reference_line(ax, ref, colors["RigL"], "RigL"):
                counts.append(len(ref))
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(FixedLocator(gammas))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(FuncFormatter(lambda g, _: f"{g:g}"))
            ax.set_xlabel("subset factor γ (candidates per active connection; log₂ scale)")
            ax.set_ylabel(ACCURACY)
            ax.set_title(_panel_title(names, dataset, model, f"sparsity {sparsity_text(density)}"))
        figure_title(fig, "Accuracy vs the subset factor γ, per sampler",
                     f"{spread_text(counts)}; RigL (dashed, ± std band) for reference")
        figure_legend(fig, order=samplers + ["RigL"])
    return Drawn(fig, f"Final test accuracy against γ for GSE's three samplers, RigL as the "
                      f"dashed reference; {runs_per_point(counts)}.")


def width(done: pd.DataFrame, names) -> Drawn:
    """Figure 3: accuracy vs width multiplier at a constant number of active connections."""
    data = done[done["method"] != "dense"].copy()
    if data.empty or data["width"].nunique() < 1:
        raise SkipFigure("no completed sparse runs")
    data["model_name"] = data["model"].map(names.model)
    # Relative to each model's narrowest run (×1), so a miniature's widths read as the paper's.
    data["relative"] = data["width"] / data.groupby("model")["width"].transform("min")
    models = list(dict.fromkeys(data["model_name"]))
    widths = sorted(data["relative"].unique())
    counts = data.groupby(["model", "relative"]).size().tolist()
    style, context = theme()
    with style, context:
        fig, axes = figure(1, width=6.0, height=4.2)
        ax = axes[0]
        sns.lineplot(data=data, x="relative", y="final_test_acc", hue="model_name",
                     hue_order=models, style="model_name", markers=True, dashes=False,
                     palette=sns.color_palette("Dark2", len(models)), errorbar="sd",
                     err_style="bars", err_kws={"capsize": 3}, ax=ax)
        ax.xaxis.set_major_locator(FixedLocator(widths))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda w, _: f"×{w:g}"))
        ax.set_xlabel("width of every layer, × the ×1 model (active connections held constant)")
        ax.set_ylabel(ACCURACY)
        dataset = names.dataset(data["dataset"].iloc[0])
        method = names.method(data["method_label"].iloc[0])
        ax.set_title(f"{method} on {dataset}", fontsize="medium")
        figure_title(fig, "Wider and sparser at a constant number of active connections",
                     f"{spread_text(counts)}; sparsity grows with the width")
        figure_legend(fig, title="model")
    return Drawn(fig, f"{method} final test accuracy on {dataset} against the width multiplier, "
                      f"each width at the active-connection count of the ×1 model at its "
                      f"sparsest setting; one line per model; {runs_per_point(counts)}.")


def distribution(done: pd.DataFrame, names) -> Drawn:
    """Figure 5: uniform vs Erdős–Rényi layer-wise densities for SET, RigL and GSE."""
    data = with_paper_names(done[done["method"].isin(["set", "rigl", "gse"])], names)
    if data.empty or data["distribution"].nunique() < 1:
        raise SkipFigure("no completed SET, RigL or GSE runs")
    data["layer-wise sparsity"] = data["distribution"].map(lambda d: DISTRIBUTIONS.get(d, d))
    dists = [v for v in DISTRIBUTIONS.values() if v in set(data["layer-wise sparsity"])]
    methods = [m for m in colors_for(data["Method"])]
    counts = data.groupby(["dataset", "model", "density", "Method", "distribution"]).size()
    style, context = theme()
    with style, context:
        panels = list(data.groupby(["dataset", "model", "density"], sort=False))
        fig, axes = figure(len(panels), width=4.6)
        for ax, ((dataset, model, density), rows) in zip(axes, panels):
            sns.barplot(data=rows, x="Method", y="final_test_acc", hue="layer-wise sparsity",
                        order=[m for m in methods if m in set(rows["Method"])], hue_order=dists,
                        palette=sns.color_palette("Paired", len(dists)), errorbar="sd",
                        capsize=0.1, ax=ax)
            low = rows["final_test_acc"].min()
            ax.set_ylim(bottom=max(0.0, low - 10))
            ax.set_xlabel("method")
            ax.set_ylabel(ACCURACY)
            ax.set_title(_panel_title(names, dataset, model, f"sparsity {sparsity_text(density)}"))
        figure_title(fig, "Uniform vs Erdős–Rényi layer-wise sparsity",
                     spread_text(counts.tolist()))
        figure_legend(fig, title="layer-wise sparsity")
    return Drawn(fig, "Final test accuracy of SET, RigL and GSE with uniform and Erdős–Rényi "
                      f"layer-wise densities; {runs_per_point(counts.tolist())}.")
