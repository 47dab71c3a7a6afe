"""The paper's own numbers, from ``published.csv`` beside this file, to print beside ours.

One row per published number::

    artifact,dataset,model,method,sparsity,epochs,width,value,pm,source,page
    table3,cifar100,resnet56,gse (uniform),0.98,300,1,56.4,0.3,"... supplementary Table 3",

``method`` is our method label (``gse (uniform)``, ``rigl``, ``dense``: see
:func:`sparsebench.reporting.results.method_label`), ``sparsity`` a fraction (0 for dense), ``value`` and
``pm`` (±) in percent; ``epochs`` and ``width`` may be empty where they do not matter. Rows that
no run of ours matches (other methods, e.g. Table 2's published ImageNet numbers) are shown as
published rows, marked as such. More numbers (Table 1, Table 2) are added by adding rows: no
code changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config.schema import ConfigError

PUBLISHED_CSV = Path(__file__).with_name("published.csv")
COLUMNS = ("artifact", "dataset", "model", "method", "sparsity", "epochs", "width", "value",
           "pm", "source", "page")
# The keys a published number is matched on (with the artifact); empty ones match anything.
MATCH_KEYS = ("dataset", "model", "method", "sparsity", "epochs", "width")


def load(path: Path | str | None = None) -> pd.DataFrame:
    """The published numbers as a DataFrame with :data:`COLUMNS`; a malformed file is a
    ConfigError naming the file, the row and the field."""
    path = Path(path) if path is not None else PUBLISHED_CSV
    try:
        df = pd.read_csv(path, dtype={"page": str, "source": str, "method": str})
    except (OSError, pd.errors.ParserError) as err:
        raise ConfigError("", f"{path}: cannot read published numbers ({err})") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError("", f"{path}: missing column(s) {', '.join(missing)}; "
                              f"expected {', '.join(COLUMNS)}")
    for column in ("sparsity", "epochs", "width", "value", "pm"):
        numbers = pd.to_numeric(df[column], errors="coerce")
        bad = df[column].notna() & numbers.isna()
        if column in ("sparsity", "value"):
            bad |= df[column].isna()
        if bad.any():
            row = int(bad.idxmax()) + 2  # + header line, 1-based
            raise ConfigError(column, f"{path} line {row}: got {df.at[bad.idxmax(), column]!r}; "
                                      "allowed: a number" + ("" if column in ("sparsity", "value")
                                                             else " or empty"))
        df[column] = numbers.astype(float)
    if ((df["sparsity"] < 0) | (df["sparsity"] >= 1)).any():
        row = int(((df["sparsity"] < 0) | (df["sparsity"] >= 1)).idxmax()) + 2
        raise ConfigError("sparsity", f"{path} line {row}: allowed: a fraction in [0, 1)")
    df["page"] = df["page"].fillna("")
    return df[list(COLUMNS)]


@dataclass(frozen=True)
class Published:
    value: float
    pm: float | None
    source: str
    page: str

    def text(self) -> str:
        # One decimal, as the paper prints its accuracies ("40.7 ± 1.0").
        pm = "" if self.pm is None else f" ± {self.pm:.1f}"
        return f"{self.value:.1f}{pm}"

    def cite(self) -> str:
        return self.source + (f", p. {self.page}" if self.page else "")


def lookup(published: pd.DataFrame, artifact: str, **keys) -> Published | None:
    """The published number of ``artifact`` whose keys match (empty fields match anything)."""
    rows = published[published["artifact"] == artifact]
    for key, value in keys.items():
        if key not in MATCH_KEYS:
            raise KeyError(f"unknown match key {key!r}; allowed: {', '.join(MATCH_KEYS)}")
        column = rows[key]
        if key in ("sparsity", "epochs", "width"):
            hit = column.isna() | ((column - float(value)).abs() < 1e-9)
        else:
            hit = column.isna() | (column == value)
        rows = rows[hit]
    if rows.empty:
        return None
    row = rows.iloc[0]
    return Published(float(row["value"]), None if pd.isna(row["pm"]) else float(row["pm"]),
                     str(row["source"]), str(row["page"]))


def difference(ours: float | None, paper: Published | None) -> str:
    """Ours minus the paper's, in points, signed ("+1.2", "−0.4"); "—" when one is missing."""
    if paper is None or ours is None or pd.isna(ours):
        return "—"
    delta = ours - paper.value
    return f"{delta:+.1f}".replace("-", "−")
