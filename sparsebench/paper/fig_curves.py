"""Accuracy per epoch, from each run's ``metrics.jsonl``: every method at the sparsest setting
(figure 6) and train and test accuracy for each width of figure 3 (figure 7)."""
from __future__ import annotations

import pandas as pd
import seaborn as sns

from ..reporting.plotting import (SkipFigure, coincide_note, coinciding, figure, figure_legend, sparsity_text, spread_text,
    theme)
from ..reporting.plotting import title as figure_title
from ..reporting.results import load_metrics
from .plotting import Drawn, colors_for, runs_per_point, with_paper_names


def last_round(metrics: pd.DataFrame) -> pd.DataFrame:
    """Methods with several rounds of the schedule (Lottery): their last round only, by its own
    epochs, so that every line spans the same training schedule."""
    if "round" not in metrics.columns or metrics["round"].fillna(0).eq(0).all():
        return metrics
    rounds = metrics["round"].fillna(0)
    last = rounds.groupby(metrics["run_id"]).transform("max")
    out = metrics[rounds == last].copy()
    if "round_epoch" in out.columns:
        out["epoch"] = out["round_epoch"].fillna(out["epoch"])
    return out


def _epochs_axis(ax, rows: pd.DataFrame) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_xlim(left=0.5, right=rows["epoch"].max() + 0.5)


def per_method(done: pd.DataFrame, names) -> Drawn:
    """Figure 6: test accuracy after each epoch at the sparsest density, every method (dense
    for reference), one panel per data set × model."""
    sparse = done[done["method"] != "dense"]
    if sparse.empty:
        raise SkipFigure("no completed sparse runs")
    density = float(sparse["density"].min())
    chosen = done[((done["density"] - density).abs() < 1e-12) | (done["method"] == "dense")]
    metrics = load_metrics(chosen)
    if metrics.empty:
        raise SkipFigure("no epoch rows in the runs' metrics.jsonl")
    metrics = with_paper_names(last_round(metrics), names)
    together = []
    colors = colors_for(metrics["Method"])
    counts = []
    style, context = theme()
    with style, context:
        panels = list(metrics.groupby(["dataset", "model"], sort=False))
        fig, axes = figure(len(panels))
        for ax, ((dataset, model), rows) in zip(axes, panels):
            methods = [m for m in colors if m in set(rows["Method"])]
            sns.lineplot(data=rows, x="epoch", y="test_acc", hue="Method", hue_order=methods,
                         palette=colors, style="Method", style_order=methods,
                         dashes={m: (4, 2) if m == "Dense" else "" for m in methods},
                         markers=True, markevery=max(1, rows["epoch"].nunique() // 10),
                         errorbar="sd", ax=ax)
            together += [g for g in coinciding(rows, "Method", "epoch", "test_acc", methods)
                         if g not in together]
            counts += rows.groupby(["Method"])["run_id"].nunique().tolist()
            _epochs_axis(ax, rows)
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(f"{names.dataset(dataset)} · {names.model(model)}")
        figure_title(fig, f"Test accuracy during training at sparsity {sparsity_text(density)}",
                     f"{spread_text(counts, 'mean ± std band')}; Dense (dashed) for reference"
                     f"{coincide_note(together)}")
        figure_legend(fig, order=list(colors))
    return Drawn(fig, f"Test accuracy after every epoch at {sparsity_text(density)} sparsity "
                      f"for every method (Lottery: its last round), one panel per data set and "
                      f"model; "
                      f"{runs_per_point(counts)} (lines: mean, bands: ± std).")


def per_width(done: pd.DataFrame, names) -> Drawn:
    """Figure 7: train (dashed) and test (solid) accuracy per epoch for each width."""
    metrics = last_round(load_metrics(done[done["method"] != "dense"]))
    if metrics.empty:
        raise SkipFigure("no epoch rows in the runs' metrics.jsonl")
    if "train_acc" not in metrics.columns:
        raise SkipFigure("the runs' metrics have no train_acc")
    long = metrics.melt(id_vars=["run_id", "dataset", "model", "width", "epoch"],
                        value_vars=["train_acc", "test_acc"], var_name="split",
                        value_name="accuracy")
    long["split"] = long["split"].map({"train_acc": "train", "test_acc": "test"})
    # Relative to each model's narrowest run (×1), so a miniature's widths read as the paper's.
    long["relative"] = long["width"] / long.groupby("model")["width"].transform("min")
    long["width (× the ×1 model)"] = long["relative"].map(lambda w: f"×{w:g}")
    widths = [f"×{w:g}" for w in sorted(long["relative"].unique())]
    counts = []
    style, context = theme()
    with style, context:
        panels = list(long.groupby(["dataset", "model"], sort=False))
        fig, axes = figure(len(panels))
        for ax, ((dataset, model), rows) in zip(axes, panels):
            sns.lineplot(data=rows, x="epoch", y="accuracy", hue="width (× the ×1 model)",
                         hue_order=widths,
                         palette=sns.color_palette("viridis", len(widths)), style="split",
                         style_order=["test", "train"], markers=True,
                         markevery=max(1, rows["epoch"].nunique() // 10), errorbar="sd", ax=ax)
            counts += rows.groupby(["relative"])["run_id"].nunique().tolist()
            _epochs_axis(ax, rows)
            ax.set_ylabel("accuracy (%)")
            ax.set_title(f"{names.dataset(dataset)} · {names.model(model)}")
        method = names.method(done["method_label"].iloc[0])
        figure_title(fig, f"{method}: train and test accuracy per epoch for each width",
                     f"solid: test, dashed: train; {spread_text(counts, 'mean ± std band')}")
        figure_legend(fig, title="", right=True)
    return Drawn(fig, f"Train (dashed) and test (solid) accuracy of {method} after every epoch "
                      f"for each width of figure 3, one panel per model; "
                      f"{runs_per_point(counts)}.")
