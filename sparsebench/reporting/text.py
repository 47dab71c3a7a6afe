"""How a table's numbers are spelled in each output: Markdown (bold, ±, † and ‡), LaTeX
(escaped, math-mode marks) and plain CSV text; and the Markdown and LaTeX table writers."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

MARK = "†"
FEW_UPDATES_MARK = "‡"


@dataclass(frozen=True)
class Style:
    """How a cell is spelled in one output format."""

    pm: str = "±"
    mark: str = MARK
    missing: str = "—"
    escape: bool = False
    few_updates: str = FEW_UPDATES_MARK
    bold: bool = True   # False for CSV text (main.csv's tied_with_best says it)


MARKDOWN = Style()
PLAIN = Style(bold=False)
LATEX = Style(pm=r"$\pm$", mark=r"$^\dagger$", missing="--", escape=True,
              few_updates=r"$^\ddagger$")

_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                   "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                   "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def latex_math(text: str) -> str:
    """``n≥7``, ``<0.001``, ``>100`` as LaTeX (≥, < and > are not text-mode characters)."""
    return (latex_escape(text).replace("≥", r"$\geq$").replace("<", r"$<$")
            .replace(">", r"$>$"))


def accuracy_text(mean: float, std: float, n: int, excluded: int, style: Style, *,
                  bold: bool = False, few_updates: int = 0) -> str:
    """``mean ± std`` (bold where tied with its column's best), then the cell's marks."""
    if n == 0 or pd.isna(mean):
        text = style.missing
    elif n == 1 or pd.isna(std):
        text = f"{mean:.2f}"
    else:
        text = f"{mean:.2f} {style.pm} {std:.2f}"
    if bold and style.bold and text != style.missing:
        text = f"\\textbf{{{text}}}" if style.escape else f"**{text}**"
    marks = (style.mark if excluded else "") + (style.few_updates if few_updates else "")
    return text + (f" {marks}" if marks else "")


def interval_text(low: float, high: float, style: Style) -> str:
    if pd.isna(low) or pd.isna(high):
        return style.missing
    return f"[{low:.2f}, {high:.2f}]"


def p_text(p: float, style: Style) -> str:
    if pd.isna(p):
        return style.missing
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def number_text(value: float, fmt: str, style: Style) -> str:
    return style.missing if value is None or pd.isna(value) else format(value, fmt)


def seconds_text(value: float, style: Style) -> str:
    if value is None or pd.isna(value):
        return style.missing
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def value_text(value, style: Style) -> str:
    if isinstance(value, float):
        text = "" if pd.isna(value) else f"{value:g}"
    else:
        text = str(value)
    return latex_escape(text) if style.escape else text


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    if table.empty and not len(table.columns):
        return ""
    header = [str(c) for c in table.columns]
    rows = [[str(v).replace("|", r"\|") for v in row] for row in table.itertuples(index=False)]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule] + [line(r) for r in rows]) + "\n"


def to_latex(table: pd.DataFrame, caption: str | None = None) -> str:
    """A booktabs tabular of already-escaped text cells."""
    align = "".join("l" if i == 0 or not _numeric_column(table[c]) else "r"
                    for i, c in enumerate(table.columns))
    text = table.to_latex(index=False, escape=False, column_format=align)
    return (f"% {caption}\n" if caption else "") + text


def _numeric_column(column: pd.Series) -> bool:
    return all(str(v)[:1].isdigit() or str(v).startswith(("-", "—")) for v in column if str(v))
