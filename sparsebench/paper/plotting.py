"""What the paper's figures share: one colour per method for every figure, the paper's method
names in legends, and the caption's count of the runs behind each point."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from .names import METHODS, Names

# One colour per paper method, the same in every figure (tab20 has room for all 13).
_PALETTE = sns.color_palette("tab20", 20)
COLORS = {name: _PALETTE[i] for i, name in enumerate(METHODS.values())}


@dataclass
class Drawn:
    figure: Figure
    caption: str


def with_paper_names(df: pd.DataFrame, names: Names) -> pd.DataFrame:
    """``df`` with a column ``Method``: the paper's name of each run's method."""
    return df.assign(Method=[names.method(m) for m in df["method_label"]])


def colors_for(labels) -> dict:
    """Paper method name -> colour, for the names present, in the paper's order."""
    order = [n for n in METHODS.values() if n in set(labels)]
    extra = sorted(set(labels) - set(order))
    out = {n: COLORS[n] for n in order}
    out.update(dict(zip(extra, sns.color_palette("Set2", max(len(extra), 1)))))
    return out


def runs_per_point(counts) -> str:
    """"3 runs" or "1–3 runs (mean ± std where more than one)" for a caption."""
    counts = [int(c) for c in counts]
    if not counts:
        return "no runs"
    lo, hi = min(counts), max(counts)
    text = f"{lo} run{'s' * (lo != 1)}" if lo == hi else f"{lo}–{hi} runs"
    return text + " per point"
