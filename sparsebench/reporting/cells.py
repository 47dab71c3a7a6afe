"""Which runs a table averages together and which cells it compares: cell keys and columns.

A *cell* is one point of a table without the seed: data set, model, method (GSE with its
sampler, e.g. ``gse (grabo)``), density, plus every config field that differs between the
table's runs, so that runs of different settings are never averaged together and a difference
of budget is never hidden:

- a run-level field (``epochs``, ``data.train_subset``, ``data.batch_size``, ``protocol``,
  ``model.width``, ``optim.lr``, ...) is a cell key as soon as two runs of the table differ in
  it, also when each method has only one value (``sweep NAME method.name=set epochs=2`` beside
  the sweep's own 1-epoch runs);
- a method parameter (``method.interval``, ...) is a cell key only where it varies within one
  method: methods have different parameters by design;
- a field of a method's *recipe* (:data:`RECIPE_FIELDS`: what a method's defaults or a
  protocol's per-method ``run:`` entry set, such as each method's own default distribution) is
  shown as a column where it differs, but splits comparisons only where it varies within one
  method.

A *column* is what the statistics compare (:mod:`sparsebench.reporting.statistics`): the cells
of one data set × model × density with equal values of every key that splits comparisons
(:func:`column_keys`), whatever their method, method parameters or recipe.
"""
from __future__ import annotations

import pandas as pd

BASE_KEYS = ["dataset", "model", "method_label", "density"]
# Config fields that are the base keys themselves, or that never change a run's numbers.
NOT_CELL_FIELDS = {"config.seed", "config.sweep", "config.progress", "config.density",
                   "config.data.name", "config.model.name", "config.method.name",
                   "config.method.sampler", "config.data.root", "config.device",
                   "config.save_final"}
NOT_CELL_PREFIXES = ("config.tracking.",)
METHOD_PARAMS = "config.method."
# Run-level fields that a method's own defaults (its default distribution, under ``protocol:
# own``) or a protocol's per-method ``run:`` entry set per method (protocols/*.yaml). They are
# part of what a method is; tests/test_report_statistics.py checks that every field a shipped
# protocol sets per method is here.
RECIPE_FIELDS = ("config.sparsity.distribution", "config.sparsity.init",
                 "config.optim.warmup_epochs", "config.optim.decay_norm_and_bias")


def _candidates(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("config.") and c not in NOT_CELL_FIELDS
            and not c.startswith(NOT_CELL_PREFIXES)]


# A field that some runs lack (written by a sparsebench before the field existed, or set to
# null) differs from one they hold: runs of an older definition left in a sweep's folder are a
# cell of their own, never averaged in beside the current ones (nor counted twice per seed).
def _spelled(values: pd.Series) -> pd.Series:
    """Each value as text (lists too), every kind of missing value as one."""
    return values.map(lambda v: NOT_SET if missing(v) else repr(v))


def _varies_within(df: pd.DataFrame, column: str, by: list[str]) -> bool:
    if df[column].map(missing).all():
        return False
    spelled = pd.DataFrame({k: _spelled(df[k]) for k in by}).assign(_value=_spelled(df[column]))
    return spelled.groupby(by)["_value"].nunique().max() > 1


def _differs(df: pd.DataFrame, column: str) -> bool:
    return _spelled(df[column]).nunique() > 1


def extra_keys(df: pd.DataFrame) -> list[str]:
    """Config fields that split comparisons (and a figure's panels): run-level fields that
    differ between the runs, method parameters that vary within a method, and recipe fields
    that vary within a method at equal values of everything else (``sparsity.distribution``
    swept as a grid axis, not each method's own default under two protocols)."""
    keys, recipe = [], []
    for column in _candidates(df):
        if column in RECIPE_FIELDS:
            recipe.append(column)
        elif column.startswith(METHOD_PARAMS):
            if _varies_within(df, column, ["method_label"]):
                keys.append(column)
        elif _differs(df, column):
            keys.append(column)
    by = ["method_label", "dataset", "model", "density"] + keys
    return keys + [c for c in recipe if _varies_within(df, c, by)]


def recipe_differences(df: pd.DataFrame) -> list[str]:
    """Recipe fields that differ between methods but not within one (shown, not splitting)."""
    return [c for c in RECIPE_FIELDS if c in df.columns and _differs(df, c)
            and c not in extra_keys(df)]


def cell_keys(df: pd.DataFrame) -> list[str]:
    """BASE_KEYS, :func:`extra_keys`, :func:`recipe_differences`, and ``sweep`` for a frame of
    several sweeps (their rows of one method and density then sit side by side)."""
    several = "sweep" in df.columns and df["sweep"].nunique() > 1
    return BASE_KEYS + extra_keys(df) + recipe_differences(df) + (["sweep"] if several else [])


def column_keys(keys: list[str], shown_only: list[str] = ()) -> list[str]:
    """The keys of ``keys`` whose equal values make a column: all but the method, its
    parameters, ``sweep`` and the recipe fields that are ``shown_only``."""
    return [k for k in keys if k not in ("method_label", "sweep") and k not in shown_only
            and not k.startswith(METHOD_PARAMS)]


def display_name(column: str) -> str:
    return column.removeprefix("config.")


def differences(df: pd.DataFrame) -> list[str]:
    """One line per field that differs between the runs: ``epochs: 1, 2`` (``method.X``
    parameters and recipe fields that only differ between methods aside)."""
    lines = []
    for column in extra_keys(df):
        if column.startswith(METHOD_PARAMS):
            continue
        values = sorted({_value_text(v) for v in df[column] if not missing(v)})
        if any(missing(v) for v in df[column]):
            values.append(NOT_SET)
        lines.append(f"{display_name(column)}: {', '.join(values)}")
    return lines


NOT_SET = "not set (null, or a run written before the field existed)"


def missing(value) -> bool:
    """A config value that is not set: None, or NaN (pandas' empty cell)."""
    return value is None or (isinstance(value, float) and value != value)


def _value_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def panel_label(column: str, value) -> str:
    """A swept config field's value as a figure's panel title names it: ``width ×2``,
    ``optim.lr=0.05``."""
    if column == "config.model.width":
        return f"width ×{value:g}"
    return f"{display_name(column)}={value:g}" if isinstance(value, float) else \
        f"{display_name(column)}={value}"
