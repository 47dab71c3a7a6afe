"""The report's tables: per experimental cell, the final test accuracy over seeds with its
confidence interval, and per column which methods are not significantly below the best.

Cells and columns are chosen in :mod:`sparsebench.reporting.cells` (every config field that
differs between the runs is a cell key); the statistics are :mod:`sparsebench.reporting.statistics`.

Only ``completed`` runs enter a mean. Failed, diverged and still-running runs are counted in
their own columns, and a cell with any of them carries a dagger (†) beside its accuracy. A cell
of a dynamic method with a run that changed its mask fewer than twice (``mask_updates`` < 2 in
result.json) carries a double dagger (‡): it trained as a static mask. The std is the sample
standard deviation over seeds (ddof = 1); a cell with one seed shows its mean only. Bold marks
every cell not significantly below its column's best (the best included).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..storage import atomic, paths
from . import statistics
from .cells import (BASE_KEYS, NOT_CELL_FIELDS, cell_keys, column_keys, differences,  # noqa: F401
                    display_name, extra_keys, panel_label, recipe_differences)
from .plotting import sparsity_text
from .text import (FEW_UPDATES_MARK, LATEX, MARK, MARKDOWN, PLAIN, Style, accuracy_text,
                   interval_text, latex_escape, latex_math, number_text, p_text, seconds_text,
                   to_latex, to_markdown, value_text)
from ..storage.run_files import DIVERGED, FAILED, RUNNING, STOPPED
from .results import completed
# Methods in the order the field introduced them; others follow alphabetically.
METHOD_ORDER = ["dense", "static", "snip", "magnitude", "set", "rigl", "gse"]
FEW_UPDATES = 2   # a dynamic method's run with fewer mask updates trained as a static mask
# The counts of a cell's runs that are not averaged in, one column each, named as the status.
NOT_IN_MEAN = (FAILED, DIVERGED, STOPPED, RUNNING)
# The quantity columns of main_table, in its order (every other column is a cell key).
MAIN_NUMBERS = ("acc_mean", "acc_std", "n", "acc_ci_low", "acc_ci_high", "p_vs_best",
                "tied_with_best", "seeds_needed", "best_acc_mean", "train_flops_rel_dense",
                "inference_flops_rel_dense", "wall_clock_s", "step_time_ms", "update_time_s",
                *NOT_IN_MEAN, "few_mask_updates")


def not_in_mean(table):
    """Per cell (a main_table, or one of its rows): how many runs are not averaged in."""
    return sum(table[status] for status in NOT_IN_MEAN)


def method_sort_key(label: str) -> tuple:
    base = str(label).split(" (")[0]
    rank = METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER)
    return rank, str(label)


def ordered_methods(labels) -> list[str]:
    return sorted({str(x) for x in labels if isinstance(x, str) and x}, key=method_sort_key)


# ---------------------------------------------------------------------------------------------
# numbers

def main_table(df: pd.DataFrame, keys: list[str] | None = None) -> pd.DataFrame:
    """One row per cell: accuracy mean/std/n over completed runs with its 95 % t-interval, the
    test against its column's best (``p_vs_best`` Holm-corrected, ``tied_with_best``, the
    ``seeds_needed`` for 80 % power), mean FLOPs relative to dense, mean wall-clock, step and
    mask-update time, the counts of runs not averaged in, and ``few_mask_updates`` (runs of a
    dynamic method with fewer than 2 mask updates). ``keys`` (default :func:`cell_keys`) are
    the columns that define a cell; they must include :data:`BASE_KEYS` (the paper's tables
    add e.g. ``epochs`` or ``width``)."""
    keys = list(keys) if keys is not None else cell_keys(df)
    columns = keys + list(MAIN_NUMBERS)
    if df.empty:
        return pd.DataFrame(columns=[display_name(c) for c in columns])
    rows, samples = [], []
    for cell, runs in df.groupby(keys, dropna=False, sort=False):
        done = completed(runs)
        acc = done["final_test_acc"].dropna()
        low, high = statistics.mean_interval(acc)
        rows.append({
            **dict(zip(keys, cell)),
            "acc_mean": acc.mean() if len(acc) else math.nan,
            "acc_std": acc.std(ddof=1) if len(acc) > 1 else math.nan,
            "n": len(acc), "acc_ci_low": low, "acc_ci_high": high,
            "best_acc_mean": done["best_test_acc"].mean(),
            "train_flops_rel_dense": done["train_flops_rel_dense"].mean(),
            "inference_flops_rel_dense": done["inference_flops_rel_dense"].mean(),
            "wall_clock_s": done["wall_clock_s"].mean(),
            "step_time_ms": done["step_time_ms"].mean(),
            "update_time_s": done["update_time_s"].mean(),
            **{status: int((runs["status"] == status).sum()) for status in NOT_IN_MEAN},
            "few_mask_updates": few_mask_updates(done),
        })
        samples.append(acc.to_numpy())
    table = pd.DataFrame(rows, columns=columns)
    shown_only = [k for k in recipe_differences(df) if k in keys]
    table = with_tests(table, samples, column_keys(keys, shown_only))
    table = sort_cells(table, keys)
    return table.rename(columns={c: display_name(c) for c in keys}).reset_index(drop=True)


def few_mask_updates(runs: pd.DataFrame) -> int:
    """Runs of a dynamic method (result.json ``dynamic``) that changed their mask fewer than
    :data:`FEW_UPDATES` times; 0 for results written before runs recorded either key."""
    if "dynamic" not in runs.columns or "mask_updates" not in runs.columns:
        return 0
    dynamic = runs["dynamic"].map(lambda v: isinstance(v, (bool, np.bool_)) and bool(v))
    updates = pd.to_numeric(runs["mask_updates"], errors="coerce")
    return int((dynamic & (updates < FEW_UPDATES)).sum())


def with_tests(table: pd.DataFrame, samples: list, by: list[str]) -> pd.DataFrame:
    """``table`` with each cell tested against the best of its column (the cells of equal
    ``by`` values; :func:`sparsebench.reporting.statistics.against_best`)."""
    table = table.assign(p_vs_best=math.nan, tied_with_best=None, seeds_needed=math.nan)
    table["tied_with_best"] = table["tied_with_best"].astype(object)
    for _, column in table.groupby(by, dropna=False, sort=False):
        index = list(column.index)
        for i, result in zip(index, statistics.against_best([samples[i] for i in index])):
            table.at[i, "p_vs_best"] = result.p_vs_best
            table.at[i, "tied_with_best"] = result.tied_with_best
            table.at[i, "seeds_needed"] = result.seeds_needed
    return table


def sort_cells(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Data set, model, then methods in METHOD_ORDER, densities from dense to sparsest."""
    order = table.assign(_method=[method_sort_key(m) for m in table["method_label"]],
                         _density=-table["density"])
    by = ["dataset", "model", "_method", "_density"] + [k for k in keys if k not in BASE_KEYS]
    return order.sort_values(by, kind="stable").drop(columns=["_method", "_density"])


def cell_text(row, style: Style) -> str:
    """One main_table row's accuracy as a table shows it: bold where tied with the best, †
    for runs not in the mean, ‡ for a dynamic method's run that hardly changed its mask."""
    return accuracy_text(row["acc_mean"], row["acc_std"], int(row["n"]), int(not_in_mean(row)),
                         style, bold=row.get("tied_with_best") is True,
                         few_updates=int(row.get("few_mask_updates", 0) or 0))


def main_display(table: pd.DataFrame, style: Style = MARKDOWN) -> pd.DataFrame:
    """The main table as the text a reader sees (one column per quantity, units in headers)."""
    keys = [c for c in table.columns if c not in MAIN_NUMBERS]
    shown = {}
    for key in keys:
        if key == "density":  # the config field; a reader sees sparsity
            shown["sparsity"] = [value_text(sparsity_text(v), style) for v in table[key]]
            continue
        header = {"method_label": "method"}.get(key, key)
        shown[header] = [value_text(v, style) for v in table[key]]
    shown["test acc. (%)"] = [cell_text(row, style) for _, row in table.iterrows()]
    shown["95% CI"] = [interval_text(lo, hi, style) for lo, hi in
                       zip(table["acc_ci_low"], table["acc_ci_high"])]
    shown["seeds"] = table["n"].astype(int).astype(str).tolist()
    shown["p vs best (Holm)"] = ["best" if pd.isna(p) and tied is True else p_text(p, style)
                                 for p, tied in zip(table["p_vs_best"], table["tied_with_best"])]
    shown["seeds for 80% power"] = [statistics.seeds_text(x, n) for x, n in
                                    zip(table["seeds_needed"], table["n"])]
    shown["train FLOPs (× dense)"] = [number_text(v, ".3g", style)
                                      for v in table["train_flops_rel_dense"]]
    shown["inference FLOPs (× dense)"] = [number_text(v, ".3g", style)
                                          for v in table["inference_flops_rel_dense"]]
    shown["wall-clock (s)"] = [seconds_text(v, style) for v in table["wall_clock_s"]]
    shown["step (ms)"] = [number_text(v, ".2f", style) for v in table["step_time_ms"]]
    for status in NOT_IN_MEAN:
        shown[status] = table[status].astype(int).astype(str).tolist()
    out = pd.DataFrame(shown)
    if style.escape:
        out.columns = [latex_escape(c).replace("×", r"$\times$") for c in out.columns]
        for column in ("95\\% CI", "seeds for 80\\% power", "p vs best (Holm)"):
            if column in out:
                out[column] = [latex_math(v) if v != style.missing else v for v in out[column]]
    return out


def pivot_display(table: pd.DataFrame, style: Style = MARKDOWN) -> pd.DataFrame:
    """Accuracy "mean ± std" with methods as rows and sparsities as columns (0 %, dense,
    first)."""
    keys = [c for c in table.columns if c not in MAIN_NUMBERS and c != "density"]
    # Data set and model become row labels only when the sweep has more than one of them.
    keys = [k for k in keys if k == "method_label" or table[k].nunique(dropna=False) > 1]
    if table.empty:
        return pd.DataFrame(columns=["method"])
    cells = table.assign(_text=[cell_text(row, style) for _, row in table.iterrows()])
    densities = sorted(cells["density"].dropna().unique(), reverse=True)
    rows = []
    for label, group in cells.groupby(keys, dropna=False, sort=False):
        label = label if isinstance(label, tuple) else (label,)
        row = {({"method_label": "method"}.get(k, k)): value_text(v, style) for k, v in zip(keys, label)}
        by_density = dict(zip(group["density"], group["_text"]))
        for d in densities:
            row[f"sparsity {sparsity_text(d)}"] = by_density.get(d, "")
        rows.append(row)
    out = pd.DataFrame(rows)
    if style.escape:
        out.columns = [latex_escape(c) for c in out.columns]
    return out


FOOTNOTE = (f"{MARK}: some runs of this cell are not in the mean (counted as failed, diverged, "
            "stopped or running). Accuracy: final test accuracy, mean ± sample std over seeds.")
FEW_UPDATES_NOTE = (f"{FEW_UPDATES_MARK}: a run of this dynamic method changed its mask fewer "
                    f"than {FEW_UPDATES} times (result.json `mask_updates`): it trained as a static "
                    "mask whatever its label says (its schedule's interval or end does not fit "
                    "the run's steps).")


def tests_note(table: pd.DataFrame, column: str = "data set × model × sparsity") -> str:
    """What bold, the CI and the p-values mean, with the table's seeds per cell."""
    counts = sorted({int(n) for n in table["n"] if n}) if len(table) else []
    n = ("n = " + (f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}")
         + (" seed" if counts == [1] else " seeds") + " per cell") if counts else \
        "no completed runs"
    return (f"**Bold**: not significantly below the best mean of its column ({column}), the best "
            "included: Welch's two-sided t-test against the column's best, Holm-corrected over "
            f"the column's comparisons, α = {statistics.ALPHA:g}; {n}. 95% CI: Student's "
            "t-interval of the mean. No test where a cell has fewer than 2 seeds or neither "
            "cell varies over seeds (p —): such a cell is never bold, nor is a column whose "
            "best cannot be tested or that has one cell.")


def seeds_note(table: pd.DataFrame, sweep: str = "NAME") -> str | None:
    """How many seeds the untold differences need, and the sweep line that runs them."""
    needed = [x for x, n in zip(table["seeds_needed"], table["n"])
              if statistics.seeds_text(x, n)] if len(table) else []
    if len(table) and table["n"].max() == 1:
        return ("One seed per cell: no interval and no test is possible, so nothing is bold; "
                f"`sparsebench sweep {sweep} seed=0,1,2` runs 3.")
    if not needed:
        return None
    settle = [int(x) for x in needed if x <= statistics.MAX_SEEDS]
    line = ("n≥K: seeds per method that a two-sided t-test needs for 80% power to tell this "
            "method from its column's best at the observed difference and spread (at α = 0.05 "
            "over the column's comparisons, Bonferroni: enough for Holm); "
            f">{statistics.MAX_SEEDS}: too small a difference to settle by seeds.")
    if settle:
        k = max(settle)
        seeds = ",".join(map(str, range(k))) if k <= 10 else f"0,1,…,{k - 1}"
        line += (f" Every difference shown needs {k} seeds: `sparsebench sweep {sweep} "
                 f"seed={seeds}`.")
    return line


def notes(table: pd.DataFrame, sweep: str = "NAME", column: str | None = None) -> list[str]:
    """The footnotes a table of ``main_table`` rows needs."""
    if not len(table):
        return []
    out = [tests_note(table, column or "data set × model × sparsity")]
    if (seeds := seeds_note(table, sweep)) is not None:
        out.append(seeds)
    if not_in_mean(table).any():
        out.append(FOOTNOTE)
    if table["few_mask_updates"].fillna(0).astype(int).any():
        out.append(FEW_UPDATES_NOTE)
    return out


def header_lines(df: pd.DataFrame) -> list[str]:
    """The report's first lines: what differs between the runs besides method, density, seed."""
    differ = differences(df)
    lines = [("Differs between runs (a column of every table; cells compared only at equal "
              "values): " + "; ".join(differ)) if differ else
             "Equal budgets: no config field differs between the runs besides the method, its "
             "parameters, the sparsity and the seed."]
    if "superseded" in df.columns and len(old := df[df["superseded"].fillna(False).astype(bool)]):
        lines.append(f"Left out: {len(old)} completed run(s) repeating the config and seed of a "
                     f"run that finished later (an earlier sparsebench named them differently): "
                     + ", ".join(old["run_id"].astype(str)))
    if recipe := recipe_differences(df):
        lines.append("Set per method (part of each method's recipe, compared across): "
                     + ", ".join(display_name(c) for c in recipe))
    return lines


def column_text(df: pd.DataFrame) -> str:
    keys = [display_name(k) for k in extra_keys(df) if not k.startswith("config.method.")]
    return " × ".join(["data set", "model", "sparsity", *keys])


def write_tables(df: pd.DataFrame, sweep: str, root: Path | None = None) -> list[Path]:
    """main.{md,tex,csv} and accuracy_pivot.{md,tex,csv} under results/SWEEP/tables/."""
    folder = paths.tables_dir(sweep, root)
    table = main_table(df)
    written = []

    def put(name: str, text: str) -> None:
        path = folder / name
        atomic.write_text(path, text)
        written.append(path)

    head = "".join(f"{line}\n\n" for line in header_lines(df)) if len(df) else ""
    footnote = "".join(f"\n{line}\n" for line in notes(table, sweep, column_text(df)))
    put("main.md", f"# {sweep}: final test accuracy per cell\n\n" + head
        + to_markdown(main_display(table, MARKDOWN)) + footnote)
    put("main.tex", to_latex(main_display(table, LATEX), f"{sweep}: final test accuracy per cell"))
    put("main.csv", table.to_csv(index=False))
    pivot_md = pivot_display(table, MARKDOWN)
    put("accuracy_pivot.md", f"# {sweep}: final test accuracy (%), mean ± std over seeds\n\n"
        + head + to_markdown(pivot_md) + footnote)
    put("accuracy_pivot.tex", to_latex(pivot_display(table, LATEX),
                                       f"{sweep}: final test accuracy (%), mean $\\pm$ std"))
    put("accuracy_pivot.csv", pivot_display(table, PLAIN).to_csv(index=False))
    return written
