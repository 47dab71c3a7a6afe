"""Figure 9: the sparsity of each prunable layer at the end of training, one panel per method,
overall sparsity as hue, averaged over the data sets (CIFAR-10 and CIFAR-100) and seeds.

Layers differ between models, so the figure is drawn for one model: the first of the sweeps
(ResNet-56 in the paper's sweeps); the caption names it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FixedLocator, FuncFormatter

from ..reporting.plotting import (SkipFigure, sd_within_range, figure, figure_legend, sparsity_text,
    sparsity_y_axis, spread_text, theme)
from ..reporting.plotting import title as figure_title
from ..reporting.results import layer_table
from .plotting import Drawn, colors_for, runs_per_point, with_paper_names


def layer_density(done: pd.DataFrame, names, model: str | None = None) -> Drawn:
    sparse = done[done["method"] != "dense"]
    if sparse.empty:
        raise SkipFigure("no completed sparse runs")
    model = model or sparse["model"].iloc[0]
    layers = layer_table(sparse[sparse["model"] == model])
    if layers.empty:
        raise SkipFigure("no per-layer densities in the completed runs")
    layers = with_paper_names(layers, names)
    layers["layer_sparsity"] = 100 * (1 - layers["layer_density"])
    layers["sparsity"] = layers["density"].map(sparsity_text)
    hue_order = [sparsity_text(d) for d in sorted(layers["density"].unique(), reverse=True)]
    methods = list(colors_for(layers["Method"]))
    n_layers = layers["layer_index"].nunique()
    counts = layers.groupby(["Method", "density", "layer_index"])["run_id"].nunique()
    style, context = theme()
    with style, context:
        fig, axes = figure(len(methods), width=max(4.2, 0.12 * n_layers + 2.5), height=3.4,
                            ncols=min(len(methods), 3))
        for ax, method in zip(axes, methods):
            rows = layers[layers["Method"] == method]
            sns.lineplot(data=rows, x="layer_index", y="layer_sparsity", hue="sparsity",
                         hue_order=[h for h in hue_order if h in set(rows["sparsity"])],
                         palette=sns.color_palette("rocket_r", len(hue_order)),
                         errorbar=sd_within_range, marker="o", markersize=3, ax=ax)
            names_by_index = dict(zip(rows["layer_index"], rows["layer"]))
            step = max(1, n_layers // 8)
            ticks = sorted(names_by_index)[::step]
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda i, _: str(int(i))))
            ax.set_xlabel("prunable layer index (input → output)")
            sparsity_y_axis(ax, "sparsity of the layer (%)", layers["layer_sparsity"])
            ax.set_title(method)
        datasets = " and ".join(names.dataset(d) for d in dict.fromkeys(layers["dataset"]))
        figure_title(fig, f"Sparsity of each layer at the end of training, {names.model(model)}",
                     f"{spread_text(counts.tolist())} (seeds and {datasets})")
        figure_legend(fig, title="overall sparsity")
    finite = layers[np.isfinite(layers["layer_density"])]
    return Drawn(fig, f"Final sparsity of each prunable layer of {names.model(model)} (layer "
                      f"0 is the input layer), one panel per method, overall sparsity as colour, "
                      f"averaged over {datasets} (bands: ± std, within the runs' range); "
                      f"{runs_per_point(counts.tolist())}; "
                      f"{finite['layer'].nunique()} layers.")
