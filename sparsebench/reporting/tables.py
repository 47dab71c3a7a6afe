"""The report's tables: per experimental cell, mean ± std over seeds of the final test accuracy.

A *cell* is one point of the sweep's grid without the seed: data set, model, method (GSE with
its sampler, e.g. ``gse (grabo)``), density, plus any other config field that the sweep varies
within a method (e.g. ``model.width`` in a width-scaling sweep, ``optim.lr`` in a learning-rate
sweep), so that runs of different settings are never averaged together.

Only ``completed`` runs enter a mean. Failed, diverged and still-running runs are counted in
their own columns, and a cell with any of them carries a dagger (†) beside its accuracy.
The std is the sample standard deviation over seeds (ddof = 1); a cell with one seed shows
its mean only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..storage import atomic, paths
from .plotting import sparsity_text
from ..storage.run_files import COMPLETED, DIVERGED, FAILED, RUNNING, STOPPED

BASE_KEYS = ["dataset", "model", "method_label", "density"]
# Config fields that are the base keys themselves, or that never define a cell.
NOT_CELL_FIELDS = {"config.seed", "config.sweep", "config.progress", "config.density",
                   "config.data.name", "config.model.name", "config.method.name",
                   "config.method.sampler", "config.data.root", "config.device"}
# Methods in the order the field introduced them; others follow alphabetically.
METHOD_ORDER = ["dense", "static", "snip", "magnitude", "set", "rigl", "gse"]
MARK = "†"
# The counts of a cell's runs that are not averaged in, one column each, named as the status.
NOT_IN_MEAN = (FAILED, DIVERGED, STOPPED, RUNNING)
# The quantity columns of main_table, in its order (every other column is a cell key).
MAIN_NUMBERS = ("acc_mean", "acc_std", "n", "best_acc_mean", "train_flops_rel_dense",
                "inference_flops_rel_dense", "wall_clock_s", "step_time_ms", "update_time_s",
                *NOT_IN_MEAN)


def not_in_mean(table):
    """Per cell (a main_table, or one of its rows): how many runs are not averaged in."""
    return sum(table[status] for status in NOT_IN_MEAN)


def method_sort_key(label: str) -> tuple:
    base = str(label).split(" (")[0]
    rank = METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER)
    return rank, str(label)


def ordered_methods(labels) -> list[str]:
    return sorted({str(x) for x in labels if isinstance(x, str) and x}, key=method_sort_key)


def extra_keys(df: pd.DataFrame) -> list[str]:
    """Config columns that take more than one value within some method: they define cells."""
    keys = []
    for column in df.columns:
        if not column.startswith("config.") or column in NOT_CELL_FIELDS:
            continue
        values = df[[column, "method_label"]].dropna()
        if len(values) and values.groupby("method_label")[column].nunique().max() > 1:
            keys.append(column)
    return keys


def cell_keys(df: pd.DataFrame) -> list[str]:
    """BASE_KEYS, the config fields that vary within a method, and ``sweep`` for a frame of
    several sweeps (their rows of one method and density then sit side by side)."""
    several = "sweep" in df.columns and df["sweep"].nunique() > 1
    return BASE_KEYS + extra_keys(df) + (["sweep"] if several else [])


def display_name(column: str) -> str:
    return column.removeprefix("config.")


def panel_label(column: str, value) -> str:
    """A swept config field's value as a figure's panel title names it: ``width ×2``,
    ``optim.lr=0.05``."""
    if column == "config.model.width":
        return f"width ×{value:g}"
    return f"{display_name(column)}={value:g}" if isinstance(value, float) else \
        f"{display_name(column)}={value}"


# ---------------------------------------------------------------------------------------------
# numbers

def main_table(df: pd.DataFrame, keys: list[str] | None = None) -> pd.DataFrame:
    """One row per cell: accuracy mean/std/n over completed runs, mean FLOPs relative to dense,
    mean wall-clock, step and mask-update time, and the counts of runs not averaged in.
    ``keys`` (default :func:`cell_keys`) are the columns that define a cell; they must include
    :data:`BASE_KEYS` (the paper's tables add e.g. ``epochs`` or ``width``)."""
    keys = list(keys) if keys is not None else cell_keys(df)
    columns = keys + list(MAIN_NUMBERS)
    if df.empty:
        return pd.DataFrame(columns=[display_name(c) for c in columns])
    rows = []
    for cell, runs in df.groupby(keys, dropna=False, sort=False):
        done = runs[runs["status"] == COMPLETED]
        acc = done["final_test_acc"].dropna()
        rows.append({
            **dict(zip(keys, cell)),
            "acc_mean": acc.mean() if len(acc) else math.nan,
            "acc_std": acc.std(ddof=1) if len(acc) > 1 else math.nan,
            "n": len(acc),
            "best_acc_mean": done["best_test_acc"].mean(),
            "train_flops_rel_dense": done["train_flops_rel_dense"].mean(),
            "inference_flops_rel_dense": done["inference_flops_rel_dense"].mean(),
            "wall_clock_s": done["wall_clock_s"].mean(),
            "step_time_ms": done["step_time_ms"].mean(),
            "update_time_s": done["update_time_s"].mean(),
            **{status: int((runs["status"] == status).sum()) for status in NOT_IN_MEAN},
        })
    table = pd.DataFrame(rows, columns=columns)
    table = sort_cells(table, keys)
    return table.rename(columns={c: display_name(c) for c in keys}).reset_index(drop=True)


def sort_cells(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Data set, model, then methods in METHOD_ORDER, densities from dense to sparsest."""
    order = table.assign(_method=[method_sort_key(m) for m in table["method_label"]],
                         _density=-table["density"])
    by = ["dataset", "model", "_method", "_density"] + [k for k in keys if k not in BASE_KEYS]
    return order.sort_values(by, kind="stable").drop(columns=["_method", "_density"])


# ---------------------------------------------------------------------------------------------
# text

@dataclass(frozen=True)
class Style:
    """How a cell is spelled in one output format."""

    pm: str = "±"
    mark: str = MARK
    missing: str = "—"
    escape: bool = False


MARKDOWN = Style()
LATEX = Style(pm=r"$\pm$", mark=r"$^\dagger$", missing="--", escape=True)

_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                   "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                   "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def accuracy_text(mean: float, std: float, n: int, excluded: int, style: Style) -> str:
    if n == 0 or pd.isna(mean):
        text = style.missing
    elif n == 1 or pd.isna(std):
        text = f"{mean:.2f}"
    else:
        text = f"{mean:.2f} {style.pm} {std:.2f}"
    return text + (f" {style.mark}" if excluded else "")


def _number(value: float, fmt: str, style: Style) -> str:
    return style.missing if value is None or pd.isna(value) else format(value, fmt)


def _seconds(value: float, style: Style) -> str:
    if value is None or pd.isna(value):
        return style.missing
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _text(value, style: Style) -> str:
    if isinstance(value, float):
        text = "" if pd.isna(value) else f"{value:g}"
    else:
        text = str(value)
    return latex_escape(text) if style.escape else text


def main_display(table: pd.DataFrame, style: Style = MARKDOWN) -> pd.DataFrame:
    """The main table as the text a reader sees (one column per quantity, units in headers)."""
    keys = [c for c in table.columns if c not in MAIN_NUMBERS]
    shown = {}
    for key in keys:
        if key == "density":  # the config field; a reader sees sparsity
            shown["sparsity"] = [_text(sparsity_text(v), style) for v in table[key]]
            continue
        header = {"method_label": "method"}.get(key, key)
        shown[header] = [_text(v, style) for v in table[key]]
    excluded = not_in_mean(table)
    shown["test acc. (%)"] = [accuracy_text(m, s, n, x, style) for m, s, n, x in
                              zip(table["acc_mean"], table["acc_std"], table["n"], excluded)]
    shown["seeds"] = table["n"].astype(int).astype(str).tolist()
    shown["train FLOPs (× dense)"] = [_number(v, ".3g", style)
                                      for v in table["train_flops_rel_dense"]]
    shown["inference FLOPs (× dense)"] = [_number(v, ".3g", style)
                                          for v in table["inference_flops_rel_dense"]]
    shown["wall-clock (s)"] = [_seconds(v, style) for v in table["wall_clock_s"]]
    shown["step (ms)"] = [_number(v, ".2f", style) for v in table["step_time_ms"]]
    for status in NOT_IN_MEAN:
        shown[status] = table[status].astype(int).astype(str).tolist()
    out = pd.DataFrame(shown)
    if style.escape:
        out.columns = [latex_escape(c).replace("×", r"$\times$") for c in out.columns]
    return out


def pivot_display(table: pd.DataFrame, style: Style = MARKDOWN) -> pd.DataFrame:
    """Accuracy "mean ± std" with methods as rows and sparsities as columns (0 %, dense,
    first)."""
    keys = [c for c in table.columns if c not in MAIN_NUMBERS and c != "density"]
    # Data set and model become row labels only when the sweep has more than one of them.
    keys = [k for k in keys if k == "method_label" or table[k].nunique(dropna=False) > 1]
    if table.empty:
        return pd.DataFrame(columns=["method"])
    excluded = table["failed"] + table["diverged"] + table["running"]
    cells = table.assign(_text=[accuracy_text(m, s, n, x, style) for m, s, n, x in
                                zip(table["acc_mean"], table["acc_std"], table["n"], excluded)])
    densities = sorted(cells["density"].dropna().unique(), reverse=True)
    rows = []
    for label, group in cells.groupby(keys, dropna=False, sort=False):
        label = label if isinstance(label, tuple) else (label,)
        row = {({"method_label": "method"}.get(k, k)): _text(v, style) for k, v in zip(keys, label)}
        by_density = dict(zip(group["density"], group["_text"]))
        for d in densities:
            row[f"sparsity {sparsity_text(d)}"] = by_density.get(d, "")
        rows.append(row)
    out = pd.DataFrame(rows)
    if style.escape:
        out.columns = [latex_escape(c) for c in out.columns]
    return out


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


FOOTNOTE = (f"{MARK}: some runs of this cell are not in the mean (counted as failed, diverged, "
            "stopped or running). Accuracy: final test accuracy, mean ± sample std over seeds.")


def write_tables(df: pd.DataFrame, sweep: str, root: Path | None = None) -> list[Path]:
    """main.{md,tex,csv} and accuracy_pivot.{md,tex,csv} under results/SWEEP/tables/."""
    folder = paths.tables_dir(sweep, root)
    table = main_table(df)
    written = []

    def put(name: str, text: str) -> None:
        path = folder / name
        atomic.write_text(path, text)
        written.append(path)

    footnote = f"\n{FOOTNOTE}\n" if len(table) and not_in_mean(table).any() else ""
    put("main.md", f"# {sweep}: final test accuracy per cell\n\n"
        + to_markdown(main_display(table, MARKDOWN)) + footnote)
    put("main.tex", to_latex(main_display(table, LATEX), f"{sweep}: final test accuracy per cell"))
    put("main.csv", table.to_csv(index=False))
    pivot_md = pivot_display(table, MARKDOWN)
    put("accuracy_pivot.md", f"# {sweep}: final test accuracy (%), mean ± std over seeds\n\n"
        + to_markdown(pivot_md) + footnote)
    put("accuracy_pivot.tex", to_latex(pivot_display(table, LATEX),
                                       f"{sweep}: final test accuracy (%), mean $\\pm$ std"))
    put("accuracy_pivot.csv", pivot_md.to_csv(index=False))
    return written
