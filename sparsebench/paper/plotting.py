"""What the paper's figures share besides the plotting kit (:mod:`sparsebench.reporting.plotting`):
the paper's method names in legends, each in its method's colour from the kit's one palette
(the same as in a sweep's report), and the caption's count of the runs behind each point."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure

from ..reporting.plotting import method_colors
from .names import METHODS, Names

_LABEL_OF = {name: label for label, name in METHODS.items()}


@dataclass
class Drawn:
    figure: Figure
    caption: str


def with_paper_names(df: pd.DataFrame, names: Names) -> pd.DataFrame:
    """``df`` with a column ``Method``: the paper's name of each run's method."""
    return df.assign(Method=[names.method(m) for m in df["method_label"]])


def colors_for(names) -> dict:
    """Paper method name -> its method's colour, for the names given, in the paper's order
    (a name the paper does not have is a label of ours and keeps that label's colour)."""
    names = [str(n) for n in dict.fromkeys(names)]
    by_label = method_colors([_LABEL_OF.get(n, n) for n in names])
    rank = {name: i for i, name in enumerate(METHODS.values())}
    order = sorted(names, key=lambda n: (rank.get(n, len(rank)), n))
    return {n: by_label[_LABEL_OF.get(n, n)] for n in order}


def runs_per_point(counts) -> str:
    """"3 runs" or "1–3 runs (mean ± std where more than one)" for a caption."""
    counts = [int(c) for c in counts]
    if not counts:
        return "no runs"
    lo, hi = min(counts), max(counts)
    text = f"{lo} run{'s' * (lo != 1)}" if lo == hi else f"{lo}–{hi} runs"
    return text + " per point"
