"""The plotting kit every figure of sparsebench is drawn with: the sweep report's
(:mod:`sparsebench.reporting.figures`) and the GSE paper's (:mod:`sparsebench.paper`).

One theme, one figure layout (panels plus a title and a legend that never cover data), one
palette (a method has the same colour in every figure of every report), and the axes the
figures share: sparsity in % (never density, which is only the config field's name), log
scales with plain-number ticks. Figures are plain matplotlib ``Figure`` objects built without
pyplot, so nothing here depends on (or changes) the backend.

A figure function that cannot be drawn from the data it is given raises :class:`SkipFigure`
saying what is lacking; the reports turn that into one line.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

DENSE = "dense"
ACCURACY = "final test accuracy (%)"


class SkipFigure(Exception):
    """The data cannot support this figure (the message says why)."""


# ---------------------------------------------------------------------------------------------
# words

def sparsity_text(density: float) -> str:
    """The share of prunable weights removed, as a reader sees it: 0.02 -> "98%", 1.0 -> "0%"."""
    return f"{100 * (1 - float(density)):.4g}%"


def spread_text(counts, what: str = "mean ± std", unit: str = "runs") -> str:
    """What the marks of a figure average, from the number of runs behind each point:
    ``mean ± std over 3 seeds``, ``... over 1–3 seeds``, or ``one run per point (no spread)``
    where no point has a spread to show."""
    counts = [int(c) for c in counts if c]
    if not counts or max(counts) <= 1:
        return "one run per point (no spread)"
    lo, hi = min(counts), max(counts)
    return f"{what} over {lo if lo == hi else f'{lo}–{hi}'} {unit}"


# ---------------------------------------------------------------------------------------------
# one colour per method

_TAB10, _DARK2 = sns.color_palette("tab10"), sns.color_palette("Dark2")
# Every method label the repository ships (results.method_label: GSE with its sampler), in the
# order of the GSE paper's Table 1 (the order of legends), each with its own colour, fixed here
# so that it is the same in every figure whatever else the figure shows. Dense is the dark grey
# reference; tab10's grey is left out so that nothing else looks like it.
METHOD_COLORS: dict[str, tuple] = {
    DENSE: (0.25, 0.25, 0.25),
    "lottery": _TAB10[6],
    "magnitude": _TAB10[5],
    "static": _TAB10[3],
    "snip": _TAB10[4],
    "grasp": _TAB10[9],
    "synflow": _TAB10[8],
    "set": _TAB10[2],
    "rigl": _TAB10[1],
    "topkast": _DARK2[0],
    "gse": _DARK2[6],
    "gse (uniform)": _DARK2[2],
    "gse (grabo)": _TAB10[0],
    "gse (graest)": _DARK2[3],
}
# Labels not in METHOD_COLORS (a plugin method, a new sampler) take these, in sorted order.
_SPARE = sns.color_palette("Set2")


def method_colors(labels) -> dict[str, tuple]:
    """Method label -> colour for the labels given, ``METHOD_COLORS`` order first (dense
    first), then other labels alphabetically."""
    present = {str(x) for x in labels if isinstance(x, str) and x}
    known = [m for m in METHOD_COLORS if m in present]
    other = sorted(present - set(known))
    out = {m: METHOD_COLORS[m] for m in known}
    out.update({m: _SPARE[i % len(_SPARE)] for i, m in enumerate(other)})
    return out


# ---------------------------------------------------------------------------------------------
# figure, title, legend

def theme():
    """The style and context every figure is drawn in: ``with style, context: ...``."""
    return sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85)


def figure(n_panels: int, width: float = 5.2, height: float = 3.8, ncols: int | None = None):
    """A Figure with ``n_panels`` axes (at most three to a row unless ``ncols``), room above
    for a title and below for a legend; returns (figure, list of axes)."""
    ncols = ncols or min(n_panels, 3)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(max(width * ncols, 6.4), height * nrows + 1.0), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes[:n_panels])


def title(fig: Figure, text: str, detail: str) -> None:
    """A short title, with what the marks mean on a second line (fits a one-panel figure)."""
    fig.suptitle(f"{text}\n{detail}", fontsize="medium")


def figure_legend(fig: Figure, title: str = "method", order: list[str] | None = None,
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
    if labels and right:  # centred: clear of the figure's title above
        fig.legend([entries[label] for label in labels], labels, title=title,
                   loc="outside right center", frameon=False)
    elif labels:
        rows = math.ceil(len(labels) / 5)
        fig.legend([entries[label] for label in labels], labels, title=title,
                   loc="outside lower center", ncol=math.ceil(len(labels) / rows), frameon=False)


# ---------------------------------------------------------------------------------------------
# axes

def log_axis(ax, axis: str = "x") -> None:
    """Log scale with plain-number ticks at 1, 2, 5 × powers of ten."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    target.set_minor_locator(NullLocator())
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def sparsity_x_axis(ax, densities, label: str = "sparsity (share of prunable weights removed; "
                                                "log-spaced)") -> None:
    """An x axis of sparsity from ``densities``, log-spaced in the share kept (so 90, 95, 98 %
    are evenly apart), growing to the right; the ticks are the sparsities given, in %."""
    densities = sorted(set(float(d) for d in densities))
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(densities))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda d, _: sparsity_text(d)))
    lo, hi = min(densities), max(densities)
    pad = (hi / lo) ** 0.06 if hi > lo else 1.3
    ax.set_xlim(hi * pad, lo / pad)
    if len(densities) > 6:
        ax.tick_params(axis="x", labelrotation=45)
    ax.set_xlabel(label)


# 100 − sparsity is at least this on a sparsity axis, so that a fully pruned layer has a place.
_FLOOR = 1e-3


def _nines(sparsity_pct):
    kept = np.maximum(1 - np.asarray(sparsity_pct, dtype=float) / 100, _FLOOR)
    return -np.log10(kept)


def _from_nines(y):
    return 100 * (1 - 10 ** -np.asarray(y, dtype=float))


def reference_line(ax, values, color, label: str, **line) -> int:
    """A reference method's mean over ``values`` as a horizontal line, with a ± std band where
    it has two or more values (dense in the sweep figures, RigL in the paper's γ figure);
    returns how many values it averaged (0: nothing drawn)."""
    values = np.asarray(values, dtype=float)
    if not values.size:
        return 0
    mean, std = values.mean(), (values.std(ddof=1) if values.size > 1 else 0.0)
    ax.axhline(mean, color=color, linestyle="--", label=label, **line)
    if std > 0:
        ax.axhspan(mean - std, mean + std, color=color, alpha=0.15, linewidth=0)
    return int(values.size)


def sd_within_range(values) -> tuple[float, float]:
    """A ``mean ± std`` band (seaborn's ``errorbar=``) clipped to the values' own range, so that
    on a bounded or non-linear axis (sparsity up to 100 %, the nines scale) it never runs past
    what was measured, off the axis."""
    v = np.asarray(values, dtype=float)
    mean, sd = v.mean(), (v.std(ddof=1) if v.size > 1 else 0.0)
    # The mean of equal values can round one ulp past them (3 x 91.27555772777217), and
    # matplotlib refuses a bar whose end lies inside the mean: the band always holds the mean.
    return min(max(v.min(), mean - sd), mean), max(min(v.max(), mean + sd), mean)


def coinciding(rows, hue: str, x: str, y: str, order: list | None = None) -> list[list[str]]:
    """Groups of ``hue`` levels whose mean curves of ``y`` over ``x`` are the same (to 1e-6):
    drawn on top of each other, all but the last would be hidden, so figures name them (in
    ``order``, the legend's)."""
    means = rows.groupby([hue, x], sort=False)[y].mean().unstack(x)
    if order is not None:
        means = means.reindex([level for level in order if level in means.index])
    groups: dict[tuple, list[str]] = {}
    for level, curve in means.iterrows():
        groups.setdefault(tuple(np.round(curve.to_numpy(dtype=float), 6)), []).append(level)
    return [g for g in groups.values() if len(g) > 1]


def coincide_note(groups: list[list[str]]) -> str:
    """``"; static, set and rigl coincide"`` for a figure's subtitle ('' when none do)."""
    def names(g):
        g = [str(n) for n in g]
        return g[0] if len(g) == 1 else ", ".join(g[:-1]) + " and " + g[-1]
    return "".join(f"; {names(g)} coincide (their curves lie on top of each other)"
                   for g in groups)


def sparsity_y_axis(ax, label: str, values=()) -> None:
    """A y axis of sparsity in % on a "nines" scale (0, 90, 99, 99.9 % evenly apart), for
    values that run from dense layers (0 %) to nearly empty ones; plot the values in %. The
    axis spans the ticks around ``values`` (all of 0 … 99.9 % without them)."""
    ax.set_yscale("function", functions=(_nines, _from_nines))
    ticks = [0, 50, 80, 90, 95, 98, 99, 99.5, 99.8, 99.9]
    values = [float(v) for v in values if np.isfinite(v)]
    lo = max([t for t in ticks if t <= min(values)], default=0) if values else 0
    hi = min([t for t in ticks if t >= max(values)], default=ticks[-1]) if values else ticks[-1]
    if hi <= lo:
        hi = ticks[min(ticks.index(lo) + 1, len(ticks) - 1)] if lo in ticks else ticks[-1]
    ax.yaxis.set_major_locator(FixedLocator([t for t in ticks if lo <= t <= hi]))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
    pad = 0.04 * (_nines(hi) - _nines(lo))
    ax.set_ylim(_from_nines(_nines(lo) - pad), _from_nines(_nines(hi) + pad))
    # The scale is not linear: the label says so.
    scale = "log scale of the share kept"
    ax.set_ylabel(label.replace("(%)", f"(%, {scale})") if "(%)" in label else f"{label} ({scale})")


# ---------------------------------------------------------------------------------------------
# files

def save_figure(fig: Figure, folder: Path, name: str,
                formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """``folder/name.{png,pdf}``, each written to a temporary file and renamed into place."""
    written = []
    for fmt in formats:
        path = Path(folder) / f"{name}.{fmt}"
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=fmt, dpi=150)
        tmp.replace(path)  # a reader never sees a half-written figure
        written.append(path)
    return written
