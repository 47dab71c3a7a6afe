"""The paper's tables in its own layout, each spanning the sweeps it needs.

=======  ==========================================================================================
table1   final test accuracy, mean ± std over seeds: rows Dense and the 12 methods in the paper's
         order, columns data set × model × sparsity; in bold every sparse method not
         significantly below the column's best (Welch, Holm-corrected, α 0.05)
table2   ImageNet ResNet-50 top-1 at 80 / 90 % sparsity: our runs, then the published rows of
         ``published.csv`` marked as published
table3   GSE (uniform) at 98 % on CIFAR-100 after 200 / 300 / 400 epochs, ours beside the paper's
table4   dense ViT at width 1–4× on CIFAR-100, ours beside the paper's
=======  ==========================================================================================

Every builder takes an :class:`~sparsebench.paper.runs.Evidence` and the report's context and
returns a :class:`Table`: the same table as Markdown and LaTeX text, its numbers as CSV rows,
and the lines "ours vs paper" for the index. Cells average completed runs only; a cell with
failed, diverged or running runs carries a dagger (as :mod:`sparsebench.reporting.tables`).
Every CSV gives each cell's 95 % t-interval (``acc_ci_low``, ``acc_ci_high``), table1's also
the test against its column's best (``p_vs_best``, ``tied_with_best``); a config field that
differs between a table's runs is named in its notes and its Markdown.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..reporting import tables as base
from ..reporting.cells import differences, display_name, extra_keys, missing
from ..reporting.text import (LATEX, MARKDOWN, Style, accuracy_text, latex_escape, to_latex,
    to_markdown, value_text)
from . import published as pub
from ..reporting.plotting import sparsity_text
from .names import METHODS, method_rank

KEYS = ["dataset", "model", "method_label", "density"]


@dataclass
class Table:
    markdown: str
    latex: str
    csv: pd.DataFrame
    beside: list[dict] = field(default_factory=list)  # ours vs the paper, for the index
    notes: list[str] = field(default_factory=list)


def cells(runs: pd.DataFrame, extra: list[str] = ()) -> pd.DataFrame:
    """Mean ± std per cell (:func:`sparsebench.reporting.tables.main_table`) keyed by KEYS + ``extra``."""
    if runs.empty:
        return pd.DataFrame(columns=KEYS + list(extra) + list(base.MAIN_NUMBERS))
    return base.main_table(runs, KEYS + list(extra))


def _text(row, style: Style, bold: bool = False) -> str:
    if row is None:
        return style.missing
    excluded = int(base.not_in_mean(row))
    return accuracy_text(row["acc_mean"], row["acc_std"], int(row["n"]), excluded, style,
                         bold=bold, few_updates=int(row.get("few_mask_updates", 0) or 0))


def _differ_lines(runs: pd.DataFrame, axes: tuple[str, ...] = ()) -> list[str]:
    """The config fields that differ between a table's runs besides the table's own ``axes``
    (e.g. ``epochs``): its cells may mix them."""
    lines = [line for line in (differences(runs) if len(runs) else [])
             if line.split(":")[0] not in axes]
    return [f"config fields that differ between this table's runs: {'; '.join(lines)}"] \
        if lines else []


def _footer(table: pd.DataFrame, tests: bool = False) -> str:
    lines = base.notes(table) if tests else [
        "95% CI (acc_ci_low, acc_ci_high in the CSV): Student's t-interval of the mean."]
    if not tests and len(table) and base.not_in_mean(table).any():
        lines.append(base.FOOTNOTE)
    if not tests and len(table) and table["few_mask_updates"].fillna(0).astype(int).any():
        lines.append(base.FEW_UPDATES_NOTE)
    return "".join(f"\n{line}\n" for line in lines)


def _lookup(table: pd.DataFrame, **keys):
    rows = table
    for key, value in keys.items():
        if missing(value):
            rows = rows[rows[key].map(missing)]
        elif isinstance(value, float):
            rows = rows[(rows[key] - value).abs() < 1e-9]
        else:
            rows = rows[rows[key] == value]
    return None if rows.empty else rows.iloc[0]


def _latex_table(frame: pd.DataFrame, caption: str) -> str:
    escaped = frame.copy()
    escaped.columns = [latex_escape(c) if isinstance(c, str) else
                       tuple(latex_escape(x) for x in c) for c in frame.columns]
    if isinstance(frame.columns, pd.MultiIndex):
        escaped.columns = pd.MultiIndex.from_tuples(escaped.columns)
        text = escaped.to_latex(index=False, escape=False, multicolumn=True,
                                multicolumn_format="c", column_format="l" + "r" * (frame.shape[1] - 1))
        return f"% {caption}\n" + text
    return to_latex(escaped, caption)


def _beside(what: str, ours_row, paper: pub.Published | None, comparable: bool) -> dict:
    ours = None if ours_row is None or not ours_row["n"] else float(ours_row["acc_mean"])
    return {"what": what, "ours": _text(ours_row, MARKDOWN),
            "paper": paper.text() if paper else "—",
            "difference": pub.difference(ours, paper) if comparable else "not comparable",
            "source": paper.cite() if paper else ""}


# ---------------------------------------------------------------------------------------------
# table 1

def _split_by(runs: pd.DataFrame) -> list[str]:
    """The config fields (display names) that split table 1's rows: every field that differs
    between its runs (:func:`sparsebench.reporting.cells.extra_keys`), so runs of different
    budgets are never averaged into one cell; each becomes a column beside the method."""
    return [display_name(k) for k in extra_keys(runs)] if len(runs) else []


def table1(ev, ctx) -> Table:
    names = ctx.names
    split = _split_by(ev.runs)
    table = cells(ev.runs, ["config." + k for k in split])
    exp = ev.expected
    datasets = list(dict.fromkeys(exp["data.name"])) if len(exp) else []
    columns = []  # (dataset, model, density) for the sparse densities, as the sweeps define them
    for dataset in datasets:
        of_data = exp[exp["data.name"] == dataset]
        for model in dict.fromkeys(of_data["model.name"]):
            densities = sorted({d for d in of_data.loc[of_data["model.name"] == model, "density"]
                                if d < 1}, reverse=True)
            columns += [(dataset, model, d) for d in densities]
    labels = sorted(set(METHODS) | set(exp.get("method_label", [])) | set(table["method_label"]),
                    key=method_rank)
    not_in_sweeps = [names.method(m) for m in labels
                     if m in METHODS and not (exp.get("method_label", pd.Series()) == m).any()]
    # Rows: (method, values of the splitting fields); a method with no runs gets one row.
    rows = []
    for label in labels:
        mine = table[table["method_label"] == label][split].drop_duplicates() if split else []
        rows += [(label, tuple(v)) for v in mine.itertuples(index=False)] if len(mine) \
            else [(label, (None,) * len(split))]

    def cell(row, dataset, model, density):
        label, values = row
        return _lookup(table, method_label=label, dataset=dataset, model=model,
                       density=1.0 if label == "dense" else density, **dict(zip(split, values)))

    def tied(row, col) -> bool:  # not significantly below the column's best sparse method
        found = cell(row, *col)
        return row[0] != "dense" and found is not None and found["tied_with_best"] is True

    def header(col, style):
        dataset, model, density = col
        return (names.dataset(dataset), names.model(model), sparsity_text(density))

    def frame(style: Style, multi: bool) -> pd.DataFrame:
        data = {("", "", "method") if multi else "method": [names.method(m) for m, _ in rows]}
        for i, key in enumerate(split):
            data[("", "", key) if multi else key] = [
                style.missing if missing(values[i]) else value_text(values[i], style)
                for _, values in rows]
        for col in columns:
            key = header(col, style) if multi else " · ".join(header(col, style))
            data[key] = [_text(cell(r, *col), style, bold=tied(r, col)) for r in rows]
        out = pd.DataFrame(data)
        if multi:
            out.columns = pd.MultiIndex.from_tuples(list(data))
        return out

    caption = ("Final test accuracy (%), mean ± std over seeds; in bold every sparse method not "
               "significantly below the column's best; Dense repeated in every sparsity column "
               "of its model")
    csv_rows, beside = [], []
    for col in columns:
        for r in rows:
            m, row = r[0], cell(r, *col)
            paper = pub.lookup(ctx.published, "table1", **ctx.paper_keys(dict(
                dataset=col[0], model=col[1], method=m,
                sparsity=0.0 if m == "dense" else round(1 - col[2], 9))))
            csv_rows.append({"dataset": col[0], "model": col[1], "sparsity": round(1 - col[2], 9),
                             "method": names.method(m), **dict(zip(split, r[1])), **_numbers(row),
                             "paper": paper.value if paper else None,
                             "paper_pm": paper.pm if paper else None})
            if paper:
                beside.append(_beside(f"{names.method(m)}, " + ", ".join(header(col, MARKDOWN)),
                                      row, paper, ctx.comparable))
    notes = _differ_lines(ev.runs)
    if not_in_sweeps:
        notes.append("methods in the paper's table but in none of these sweeps: "
                     + ", ".join(not_in_sweeps))
    md = (f"# Table 1: {caption}\n\n" + "".join(f"{line}\n\n" for line in _differ_lines(ev.runs))
          + (to_markdown(frame(MARKDOWN, False)) if columns else "(no sweep cells to lay out)\n")
          + _footer(table, tests=True))
    tex = _latex_table(frame(LATEX, True), caption) if columns else f"% {caption}: no cells\n"
    return Table(md, tex, pd.DataFrame(csv_rows), beside, notes)


NUMBERS = ("acc_mean", "acc_std", "n", "acc_ci_low", "acc_ci_high", "p_vs_best", "tied_with_best",
           *base.NOT_IN_MEAN, "few_mask_updates")


def _numbers(row) -> dict:
    if row is None:
        return {**dict.fromkeys(NUMBERS), "n": 0, **dict.fromkeys(base.NOT_IN_MEAN, 0),
                "few_mask_updates": 0}
    return {k: row[k] for k in NUMBERS}


# ---------------------------------------------------------------------------------------------
# table 2

def table2(ev, ctx) -> Table:
    names = ctx.names
    table = cells(ev.runs)
    exp = ev.expected
    densities = sorted({d for d in exp.get("density", []) if d < 1}, reverse=True)
    labels = sorted(set(exp.get("method_label", [])), key=method_rank)
    dataset = next(iter(exp["data.name"]), "imagenet") if len(exp) else "imagenet"
    model = next(iter(exp["model.name"]), "resnet50") if len(exp) else "resnet50"
    rows_md, rows_tex, csv_rows = [], [], []
    for m in labels:
        entry = {"method": names.method(m), "source": "this benchmark"}
        tex = dict(entry)
        for d in densities:
            row = _lookup(table, method_label=m, density=1.0 if m == "dense" else d)
            entry[sparsity_text(d)] = _text(row, MARKDOWN)
            tex[sparsity_text(d)] = _text(row, LATEX)
            csv_rows.append({"method": names.method(m), "source": "this benchmark",
                             "sparsity": round(1 - d, 9), **_numbers(row)})
        rows_md.append(entry)
        rows_tex.append(tex)
    published = ctx.published[ctx.published["artifact"] == "table2"]
    for (method, source), group in published.groupby(["method", "source"], sort=False):
        entry = {"method": f"{names.method(method)} (published)", "source": source}
        for d in densities:
            hit = group[(group["sparsity"] - (1 - d)).abs() < 1e-9]
            value = "—" if hit.empty else pub.Published(
                float(hit.iloc[0]["value"]), None if pd.isna(hit.iloc[0]["pm"]) else
                float(hit.iloc[0]["pm"]), source, hit.iloc[0]["page"]).text()
            entry[sparsity_text(d)] = value
            csv_rows.append({"method": names.method(method), "source": source,
                             "sparsity": round(1 - d, 9),
                             "paper": None if hit.empty else float(hit.iloc[0]["value"])})
        rows_md.append(entry)
        rows_tex.append({k: latex_escape(v) if k in ("method", "source") else
                         v.replace("±", r"$\pm$") for k, v in entry.items()})
    caption = (f"{names.dataset(dataset)} {names.model(model)}: top-1 test accuracy (%), "
               "mean ± std over seeds; rows marked (published) are entered from published.csv")
    notes = [] if len(published) else [
        "no published rows for table2 in published.csv yet (add them: artifact table2)"]
    notes += _differ_lines(ev.runs)
    md = (f"# Table 2: {caption}\n\n" + "".join(f"{line}\n\n" for line in _differ_lines(ev.runs))
          + to_markdown(pd.DataFrame(rows_md)) + _footer(table))
    tex_frame = pd.DataFrame(rows_tex)
    tex_frame["method"] = [latex_escape(v) if "published" not in v else v for v in tex_frame["method"]] \
        if len(tex_frame) else []
    return Table(md, to_latex(tex_frame, caption), pd.DataFrame(csv_rows), [], notes)


# ---------------------------------------------------------------------------------------------
# tables 3 and 4: ours beside the paper's

def _versus_table(ev, ctx, artifact, row_key, col_key, row_name, col_name, caption) -> Table:
    table = cells(ev.runs, [k for k in (row_key, col_key) if k not in KEYS])
    exp = ev.expected
    exp_key = {"model": "model.name", "epochs": "epochs", "width": "model.width"}
    if exp.empty:
        return Table(f"# {artifact}: {caption}\n\n(no sweep cells to lay out)\n",
                     f"% {caption}: no cells\n", pd.DataFrame(), [], [])
    rows_values = list(dict.fromkeys(exp[exp_key[row_key]]))
    col_values = sorted(set(exp[exp_key[col_key]]))
    label = exp["method_label"].iloc[0]
    dataset = exp["data.name"].iloc[0]
    density = float(exp["density"].iloc[0])
    paper_head = "paper" if ctx.comparable else "paper (full size)"
    md_rows, tex_rows, csv_rows, beside = [], [], [], []
    for rv in rows_values:
        md, tex = {row_key: row_name(rv)}, {row_key: latex_escape(row_name(rv))}
        for cv in col_values:
            keys = {row_key: rv, col_key: cv}
            row = _lookup(table, **{k: (v if k == "model" else float(v)) for k, v in keys.items()})
            match = dict(dataset=dataset, method=label, sparsity=round(1 - density, 9),
                         model=rv if row_key == "model" else exp["model.name"].iloc[0])
            match.update({k: v for k, v in keys.items() if k in ("epochs", "width")})
            paper = pub.lookup(ctx.published, artifact, **ctx.paper_keys(match))
            ours = None if row is None or not row["n"] else float(row["acc_mean"])
            name = col_name(cv)
            md[f"{name}: ours"], tex[f"{name}: ours"] = _text(row, MARKDOWN), _text(row, LATEX)
            md[f"{name}: {paper_head}"] = paper.text() if paper else "—"
            tex[f"{name}: {paper_head}"] = (paper.text() if paper else "--").replace("±", r"$\pm$")
            diff = pub.difference(ours, paper)
            if ctx.comparable:
                md[f"{name}: Δ"] = diff
                tex[f"{name}: Δ"] = diff.replace("−", "-").replace("—", "--")
            csv_rows.append({row_key: rv, col_key: cv, **_numbers(row),
                             "paper": paper.value if paper else None,
                             "paper_pm": paper.pm if paper else None,
                             "difference": (ours - paper.value) if (paper and ours is not None
                                                                    and ctx.comparable) else None})
            beside.append(_beside(f"{row_name(rv)}, {name}", row, paper, ctx.comparable))
        md_rows.append(md)
        tex_rows.append(tex)
    full = f"{caption}; Δ = ours − paper, in points" if ctx.comparable else (
        f"{caption}; the paper's full-size numbers are shown for orientation only")
    axes = tuple({"epochs": "epochs", "width": "model.width", "model": "model.name"}[k]
                 for k in (row_key, col_key))
    md_text = (f"# Table {artifact[-1]}: {full}\n\n"
               + "".join(f"{line}\n\n" for line in _differ_lines(ev.runs, axes))
               + to_markdown(pd.DataFrame(md_rows)) + _footer(table))
    tex_frame = pd.DataFrame(tex_rows)
    tex_frame.columns = [latex_escape(c).replace("Δ", r"$\Delta$") for c in tex_frame.columns]
    return Table(md_text, to_latex(tex_frame, full), pd.DataFrame(csv_rows), beside,
                 _differ_lines(ev.runs, axes))


def table3(ev, ctx) -> Table:
    names = ctx.names
    exp = ev.expected
    what = ""
    if len(exp):
        what = (f"{names.method(exp['method_label'].iloc[0])} at "
                f"{sparsity_text(exp['density'].iloc[0])} sparsity on "
                f"{names.dataset(exp['data.name'].iloc[0])}")
    return _versus_table(ev, ctx, "table3", "model", "epochs", names.model,
                         lambda e: f"{int(e)} epochs",
                         f"extended training, {what}: final test accuracy (%), mean ± std")


def table4(ev, ctx) -> Table:
    names = ctx.names
    exp = ev.expected
    what = ""
    if len(exp):
        what = (f"dense {names.model(exp['model.name'].iloc[0])} on "
                f"{names.dataset(exp['data.name'].iloc[0])}")
    return _versus_table(ev, ctx, "table4", "width", "epochs", lambda w: f"width ×{w:g}",
                         lambda e: f"{int(e)} epochs", f"{what} by width multiplier: final test "
                         "accuracy (%), mean ± std")
