"""Methods compared across a sweep's columns: average ranks with Friedman's test and a
critical-difference figure (``figures/ranks.png``), and the probability of improvement as a
matrix figure (``figures/improvement.png``) and table (``tables/ranks.md``, ``ranks.csv``,
``improvement.csv``).

A column is a data set × model × sparsity at equal budgets (:mod:`sparsebench.reporting.cells`);
a method is a cell label within it (the method with its sampler, and with its parameters where
they vary within the method). Dense is the reference, not a competitor: it is left out. The
statistics are :mod:`sparsebench.reporting.statistics`'s.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..storage import atomic, paths
from . import statistics
from .cells import cell_keys, column_keys, display_name, missing, recipe_differences
from .plotting import DENSE, SkipFigure, method_colors, save_figure, sparsity_text, theme
from .plotting import title as figure_title
from .results import completed


def column_samples(df: pd.DataFrame) -> dict:
    """{column label: {method label: final accuracies of its completed runs}}, dense left out."""
    keys = cell_keys(df)
    by = column_keys(keys, recipe_differences(df))
    variants = [k for k in keys if k not in by and k not in ("method_label", "sweep")
                and k.startswith("config.method.")]
    runs = completed(df)
    runs = runs[runs["final_test_acc"].notna() & (runs["method"] != DENSE)]
    out: dict = {}
    for column, rows in runs.groupby(by, dropna=False, sort=True):
        values = dict(zip(by, column if isinstance(column, tuple) else (column,)))
        label = " · ".join([str(values["dataset"]), str(values["model"]),
                            sparsity_text(values["density"])]
                           + [f"{display_name(k)}={v}" for k, v in values.items()
                              if k not in ("dataset", "model", "density")])
        cells = {}
        for cell, cell_rows in rows.groupby(["method_label"] + variants, dropna=False, sort=False):
            cell = cell if isinstance(cell, tuple) else (cell,)
            name = str(cell[0]) + "".join(f" {display_name(k)}={v}" for k, v in
                                          zip(variants, cell[1:]) if not missing(v))
            cells[name] = cell_rows["final_test_acc"].to_numpy(dtype=float)
        out[label] = cells
    return out


def ranks(samples: dict) -> statistics.Ranks | None:
    means = pd.DataFrame({column: {m: v.mean() for m, v in cells.items()}
                          for column, cells in samples.items()}).T
    return statistics.rank_methods(means) if len(means) else None


def critical_difference(result: statistics.Ranks) -> float:
    """Nemenyi's critical difference of average ranks at ALPHA (Demšar 2006, eq. 2) from
    scipy's studentized range: q / √2 · √(k (k + 1) / (6 N))."""
    from scipy.stats import studentized_range

    k, n = len(result.average), result.blocks
    q = studentized_range.ppf(1 - statistics.ALPHA, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6 * n)))


def rank_figure(samples: dict) -> Figure:
    """Average ranks (1 = best) on one axis; methods a bar joins are not told apart by
    Nemenyi's test after Friedman's (scikit-posthocs' critical-difference diagram)."""
    import scikit_posthocs as sp

    result = ranks(samples)
    if result is None or result.nemenyi is None:
        raise SkipFigure("needs 3 or more methods in 2 or more columns (sparsities), not all "
                         "tied, to rank")
    colors = method_colors(result.average.index)
    style, context = theme()
    with style, context:
        fig = Figure(figsize=(9, 2.4 + 0.3 * len(result.average)))
        ax = fig.add_axes((0.2, 0.06, 0.6, 0.6))
        sp.critical_difference_diagram(result.average, result.nemenyi, ax=ax,
                                       alpha=statistics.ALPHA,
                                       color_palette={m: colors[m] for m in result.average.index},
                                       label_fmt_left="{label} ({rank:.2f})",
                                       label_fmt_right="({rank:.2f}) {label}")
        verdict = (f"Friedman p = {result.friedman_p:.3g}" if not math.isnan(result.friedman_p)
                   else "no Friedman test")
        figure_title(fig, "Average rank of each method over the sweep's columns (1 = best)",
                     _wrap(f"{result.blocks} columns (data set × model × sparsity); {verdict}; a bar "
                     f"joins methods Nemenyi's test does not tell apart (α = "
                     f"{statistics.ALPHA:g}; critical difference "
                     f"{critical_difference(result):.2f} ranks)"
                     + (f"; left out (in too few columns): {', '.join(result.left_out)}"
                        if result.left_out else "")))
    return fig


def _wrap(text: str) -> str:
    return textwrap.fill(text, 80)


def improvement(samples: dict) -> pd.DataFrame:
    matrix = statistics.probability_of_improvement(samples)
    keep = [m for m in matrix.index if matrix.loc[m].notna().any()]
    result = ranks(samples)
    order = [m for m in (result.average.index if result is not None else []) if m in keep]
    order += [m for m in keep if m not in order]
    return matrix.loc[order, order]


def improvement_figure(samples: dict) -> Figure:
    """P(row method beats column method) over the runs of the columns both have."""
    import seaborn as sns

    matrix = improvement(samples)
    if len(matrix) < 2:
        raise SkipFigure("needs 2 or more methods that share a column")
    style, context = theme()
    with style, context:
        size = 1.6 + 0.55 * len(matrix)
        fig = Figure(figsize=(size + 1.5, size))
        ax = fig.add_axes((0.25, 0.25, 0.62, 0.58))
        sns.heatmap(matrix.astype(float), vmin=0, vmax=1, center=0.5, cmap="RdBu_r", annot=True,
                    fmt=".2f", square=True, cbar_kws={"label": "P(row beats column)"}, ax=ax,
                    annot_kws={"fontsize": 8})
        ax.grid(False)
        ax.set_xlabel("column method")
        ax.set_ylabel("row method")
        figure_title(fig, "Probability that the row method beats the column method",
                     _wrap("P(X > Y) + ½ P(X = Y) over runs (rliable's probability of "
                           "improvement), averaged over the columns both have; 0.5: no edge"))
    return fig


def ranks_table(samples: dict) -> tuple[pd.DataFrame, str]:
    """Average rank per method (best first) and the Friedman line."""
    result = ranks(samples)
    if result is None:
        return pd.DataFrame(columns=["method", "average rank"]), "(too few methods to rank)"
    table = pd.DataFrame({"method": result.average.index,
                          "average rank": [f"{r:.2f}" for r in result.average]})
    line = (f"Friedman's test over {result.blocks} columns: χ² = {result.friedman_stat:.2f}, "
            f"p = {result.friedman_p:.3g}; Nemenyi's critical difference at α = "
            f"{statistics.ALPHA:g}: {critical_difference(result):.2f} ranks"
            if not math.isnan(result.friedman_p) else
            f"no Friedman test (it needs 3 or more methods in 2 or more columns, not all tied; "
            f"{len(result.average)} methods in {result.blocks} columns)")
    if result.left_out:
        line += f". Left out (in half of the columns or fewer): {', '.join(result.left_out)}"
    return table, line


def write(df: pd.DataFrame, sweep: str, root: Path | None = None, *, figures: bool = True,
          formats: tuple[str, ...] = ("png", "pdf")) -> tuple[list[Path], dict[str, str]]:
    """tables/ranks.{md,csv}, tables/improvement.csv and, with ``figures``, figures/ranks and
    figures/improvement; returns (paths written, {figure: why skipped})."""
    from .text import to_markdown

    samples = column_samples(df)
    written, skipped = [], {}
    folder = paths.tables_dir(sweep, root)
    table, line = ranks_table(samples)
    matrix = improvement(samples) if samples else pd.DataFrame()
    shown = matrix.map(lambda v: "—" if pd.isna(v) else f"{v:.2f}") if len(matrix) else matrix
    text = (f"# {sweep}: methods across the sweep's columns\n\n## Average rank (1 = best)\n\n"
            + to_markdown(table) + f"\n{line}\n\n## Probability of improvement\n\n"
            "P(row beats column) = P(X > Y) + ½ P(X = Y) over the runs of a column (rliable's "
            "probability of improvement, from the Mann–Whitney U statistic), averaged over the "
            "columns both methods have; 0.5 means no edge.\n\n"
            + (to_markdown(shown.reset_index(names="row beats column")) if len(shown) else
               "(no two methods share a column)\n"))
    for name, content in (("ranks.md", text), ("ranks.csv", table.to_csv(index=False)),
                          ("improvement.csv", matrix.to_csv(index_label="method"))):
        atomic.write_text(folder / name, content)
        written.append(folder / name)
    if figures:
        out = paths.figures_dir(sweep, root)
        out.mkdir(parents=True, exist_ok=True)
        for name, draw in (("ranks", rank_figure), ("improvement", improvement_figure)):
            try:
                written += save_figure(draw(samples), out, name, formats)
            except SkipFigure as why:
                skipped[name] = str(why)
    return written, skipped
