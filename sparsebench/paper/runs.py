"""Which runs an artifact needs, which of them have landed, and the rows to draw from.

An artifact names its *sources*: a sweep and, optionally, a filter on the resolved config of
its cells (``{"density": 0.02, "method.name": ["gse", "rigl"]}``, dotted names as
:func:`sparsebench.config.schema.flat_config` spells them). The runs it needs are the cells of those
sweeps that pass the filter (so a table can span sweeps, and an artifact can reuse another's
runs instead of training them twice); each is ``completed``, ``failed``, ``diverged``,
``stopped`` or ``running`` (a folder without result.json yet: :mod:`sparsebench.reporting.results`)
or ``missing`` (no folder at all). Only the expected runs are drawn: a stale run of an older
sweep definition in the same folder is not.

A :class:`Library` expands each sweep and loads its results once for all artifacts. A sweep
that cannot be expanded (e.g. it names a method this checkout lacks) is a *problem* of the
artifacts that need it, reported in the index; it never stops the report.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..launch import spec as sweep_spec
from ..config.schema import ConfigError, flat_config
from ..reporting.plotting import sparsity_text
from ..storage.run_files import COMPLETED, DIVERGED, FAILED, RUNNING, STOPPED
from ..reporting.results import load_results, method_label

MISSING = "missing"
STATUS_ORDER = (COMPLETED, FAILED, DIVERGED, STOPPED, RUNNING, MISSING)


@dataclass(frozen=True)
class Source:
    """The cells of ``sweep`` whose resolved config matches every entry of ``where`` (a value,
    or a list of allowed values)."""

    sweep: str
    where: tuple[tuple[str, Any], ...] = ()
    why: str = ""  # what these runs are for, in the index ("RigL reference", "γ = 1")

    @classmethod
    def of(cls, sweep: str, why: str = "", **where) -> "Source":
        # Keyword names cannot hold dots: method__name stands for method.name.
        return cls(sweep, tuple((k.replace("__", "."), v) for k, v in where.items()), why)

    def matches(self, flat: dict) -> bool:
        for key, want in self.where:
            value = flat.get(key)
            allowed = want if isinstance(want, (list, tuple, set)) else [want]
            if not any(_equal(value, w) for w in allowed):
                return False
        return True

    def describe(self) -> str:
        def value(k, v):
            if k == "density":
                return "sparsity " + "|".join(sparsity_text(d) for d in
                                              (v if isinstance(v, (list, tuple)) else [v]))
            return f"{k}={'|'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"

        parts = [value(k, v) for k, v in self.where]
        text = self.sweep + (f" ({', '.join(parts)})" if parts else "")
        return text + (f": {self.why}" if self.why else "")


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
    return a == b


class Library:
    """Sweeps expanded and results loaded once. ``sweep_file(name)`` finds a sweep's YAML
    (the repository's sweeps/, or the miniature's derived ones); results live under ``root``."""

    def __init__(self, root: Path | None = None,
                 sweep_file: Callable[[str], Path] = sweep_spec.find):
        self.root = root
        self.sweep_file = sweep_file
        self._cells: dict[str, pd.DataFrame | str] = {}
        self._results: dict[str, pd.DataFrame] = {}

    def cells(self, sweep: str) -> pd.DataFrame | str:
        """One row per distinct run of the sweep (flat config, run_id), or why it cannot be had."""
        if sweep not in self._cells:
            try:
                expanded = sweep_spec.expand(str(self.sweep_file(sweep)))
            except (ConfigError, FileNotFoundError) as err:
                self._cells[sweep] = f"sweep {sweep} cannot be expanded: {err}"
            else:
                rows = []
                for cell in expanded.cells:
                    flat = flat_config(cell.config)
                    flat.update(sweep=sweep, run_id=cell.run_id,
                                method_label=method_label(flat.get("method.name"),
                                                          flat.get("method.sampler")))
                    rows.append(flat)
                self._cells[sweep] = pd.DataFrame(rows)
        return self._cells[sweep]

    def results(self, sweep: str) -> pd.DataFrame:
        if sweep not in self._results:
            try:
                self._results[sweep] = load_results(sweep, self.root)
            except FileNotFoundError:
                self._results[sweep] = pd.DataFrame(columns=["run_id", "status"])
        return self._results[sweep]

    def evidence(self, sources: tuple[Source, ...]) -> "Evidence":
        expected, landed, problems = [], [], []
        for source in sources:
            cells = self.cells(source.sweep)
            if isinstance(cells, str):
                problems.append(cells)
                continue
            keep = cells[[source.matches(row) for row in cells.to_dict("records")]].copy()
            if keep.empty:
                problems.append(f"{source.describe()}: no cell of the sweep matches")
                continue
            results = self.results(source.sweep)
            found = results[results["run_id"].isin(set(keep["run_id"]))]
            status = dict(zip(found["run_id"], found["status"]))
            keep["status"] = [status.get(r, MISSING) for r in keep["run_id"]]
            expected.append(keep)
            landed.append(found)
        exp = (pd.concat(expected, ignore_index=True) if expected
               else pd.DataFrame(columns=["sweep", "run_id", "status", "method_label"]))
        # The same run may be needed through two sources: count it once.
        exp = exp.drop_duplicates(["sweep", "run_id"])
        runs = (pd.concat([f for f in landed if len(f)], ignore_index=True)
                if any(len(f) for f in landed) else pd.DataFrame(columns=["run_id", "status"]))
        if len(runs):
            runs = runs.drop_duplicates(["sweep", "run_id"]).reset_index(drop=True)
        return Evidence(sources, exp, runs, problems)


@dataclass
class Evidence:
    sources: tuple[Source, ...]
    expected: pd.DataFrame      # one row per needed run: flat config, sweep, run_id, status
    runs: pd.DataFrame          # their rows from load_results (every status)
    problems: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = Counter(self.expected["status"]) if len(self.expected) else Counter()
        return {s: counts.get(s, 0) for s in STATUS_ORDER}

    def completed(self) -> pd.DataFrame:
        if self.runs.empty:
            return self.runs
        done = self.runs[self.runs["status"] == COMPLETED]
        return done[done["final_test_acc"].notna()].copy()

    def counts_text(self) -> str:
        counts = self.counts()
        total = sum(counts.values())
        return f"{total} needed: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n or
                                               s in (COMPLETED, MISSING))

    def not_completed(self, limit: int = 8) -> list[str]:
        """Lines naming what is still missing (or failed), grouped by sweep, model, method and
        sparsity, at most ``limit`` groups per status."""
        lines = []
        if self.expected.empty:
            return lines
        for status in (MISSING, FAILED, DIVERGED, STOPPED, RUNNING):
            rows = self.expected[self.expected["status"] == status]
            if rows.empty:
                continue
            keys = [k for k in ("sweep", "data.name", "model.name", "model.width", "epochs",
                                "method_label", "density") if k in rows.columns]
            groups = rows.groupby(keys, dropna=False, sort=False).size()
            shown = []
            for values, n in list(groups.items())[:limit]:
                named = dict(zip(keys, values))
                parts = [named.pop("sweep")]
                parts += [_group_text(k, v) for k, v in named.items()
                          if not (k == "model.width" and v == 1) and k != "epochs"]
                if "epochs" in named and rows["epochs"].nunique() > 1:
                    parts.append(f"{named['epochs']} epochs")
                shown.append(f"{' · '.join(parts)} ({n})")
            more = len(groups) - limit
            lines.append(f"{len(rows)} {status}: " + "; ".join(shown)
                         + (f"; and {more} more group{'s' * (more > 1)}" if more > 0 else ""))
        return lines


def _group_text(key: str, value: Any) -> str:
    """One key of a group of runs as index.md names it: ``width ×2``, ``sparsity 98%``."""
    if key == "model.width":
        return f"width ×{value:g}"
    if key == "density":
        return f"sparsity {sparsity_text(value)}"
    return f"{value:g}" if isinstance(value, float) else str(value)
