"""Tables and figures of a sweep: ``python -m sparsebench.report [NAME ...]``.

Reads whatever has landed in ``results/NAME/runs`` (a sweep still in progress is fine: running
and failed runs are counted, never averaged in) and writes

    results/NAME/summary.csv                       one row per run (sparsebench.load_results)
    results/NAME/tables/main.{md,tex,csv}          accuracy mean ± std, seeds, FLOPs, time
    results/NAME/tables/accuracy_pivot.{md,tex,csv}  method × density accuracy
    results/NAME/tables/ranks.{md,csv}, improvement.csv  methods across the sweep's columns
    results/NAME/figures/*.{png,pdf}               every figure the data supports (ranks.png:
                                                   average ranks, improvement.png: P(A beats B))

Every table gives the 95 % t-interval of each cell's mean and bolds every method not
significantly below its column's best (Welch, Holm-corrected, α 0.05); its first lines say
which config fields differ between the runs (each is a column: runs of different budgets are
never averaged or compared); docs/results.md explains every column.

``--sparsity PCT`` chooses the sparsity the per-epoch and per-layer figures are drawn at
(default: the sweep's highest). Given several names it also writes their comparison, methods
side by side, under results/comparisons/A-vs-B/ (summary.csv with a ``sweep`` column,
tables/). Without a name it reports every sweep under the results folder ($SPARSEBENCH_RESULTS,
default ./results). Prints the accuracy pivot table and the paths it wrote.

A damaged run file gives one warning naming it (the run counts as ``unreadable`` in the
header) and the rest is reported. Where the results folder cannot be written (read-only, full)
the tables are still printed and writing is skipped with a warning; ``--out DIR`` writes the
files under DIR/NAME/ instead.

``--paper`` writes the GSE paper's tables and figures instead, across the paper's sweeps, into
results/paper/ (see sparsebench.paper); ``--paper --mini`` the miniature's, into
results/paper_mini/ (made by ``make paper-mini``).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

from .storage import paths
from .storage.run_files import ResultsWarning
from .cli import prog
from .reporting.results import available_sweeps, load_results, sweep_exists, write_summary


def report(sweep: str, root: Path | None = None, *, figures: bool = True, out=None,
           write_root: Path | None = None, density: float | None = None) -> list[Path]:
    """Print the header and accuracy table of one sweep read from ``root``, then write its
    summary, tables and figures under ``write_root`` (default: ``root``); returns the paths
    written (none where the folder cannot be written, with a warning on stderr). ``density``
    is the sparsity of the per-epoch and per-layer figures (default: the sweep's highest)."""
    from .reporting import tables

    out = out or sys.stdout
    write_root = write_root if write_root is not None else root

    df = load_results(sweep, root)
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no runs yet"
    print(f"== {sweep}: {len(df)} runs ({status})", file=out)
    if len(df):
        for line in tables.header_lines(df):
            print(line, file=out)
        table = tables.main_table(df)
        print(tables.to_markdown(tables.pivot_display(table)), file=out)
        for line in tables.notes(table, sweep, tables.column_text(df)):
            print(line, file=out)
    written: list[Path] = []
    try:
        from .reporting import comparisons

        written.append(write_summary(sweep, write_root, df))
        written += tables.write_tables(df, sweep, write_root)
        more, skipped = comparisons.write(df, sweep, write_root, figures=figures)
        written += more
        if figures:
            from .reporting.figures import write_figures

            figs, skipped_too = write_figures(df, sweep, write_root, density=density)
            written += figs
            for name, why in {**skipped_too, **skipped}.items():
                print(f"note: figure {name} skipped: {why}", file=out)
    except OSError as err:  # read-only or full: the tables above are the report
        print(f"warning: {sweep}: report files not written ({_storage_reason(err)}); the "
              f"tables above are printed only; --out DIR writes them elsewhere", file=sys.stderr)
    for path in written:
        print(f"wrote {path}", file=out)
    return written


def comparison_name(sweeps: list[str]) -> str:
    """The folder (under results/comparisons/) of a comparison of several sweeps."""
    return "-vs-".join(sweeps)[:200]


def compare(sweeps: list[str], root: Path | None = None, *, out=None,
            write_root: Path | None = None) -> list[Path]:
    """One table over several sweeps, their methods side by side (a ``sweep`` column in the
    summary, a row per sweep within each method in the tables), written under
    ``results/comparisons/A-vs-B/`` (summary.csv, tables/); no figures."""
    from .reporting import tables

    out = out or sys.stdout
    df = load_results(sweeps, root)
    name = comparison_name(sweeps)
    print(f"== {' vs '.join(sweeps)}: {len(df)} runs", file=out)
    if len(df):
        for line in tables.header_lines(df):
            print(line, file=out)
        table = tables.main_table(df)
        print(tables.to_markdown(tables.pivot_display(table)), file=out)
        for line in tables.notes(table, "NAME", tables.column_text(df)):
            print(line, file=out)
    base = (write_root if write_root is not None else root) or paths.results_root()
    written: list[Path] = []
    try:
        written.append(write_summary(name, base / "comparisons", df))
        written += tables.write_tables(df, name, base / "comparisons")
    except OSError as err:
        print(f"warning: {name}: comparison files not written ({_storage_reason(err)})",
              file=sys.stderr)
    for path in written:
        print(f"wrote {path}", file=out)
    return written


def _storage_reason(err: OSError) -> str:
    from .storage.atomic import WriteError

    if isinstance(err, WriteError):
        return str(err)
    where = f": {err.filename}" if err.filename else ""
    return f"{err.strerror or err}{where}"


@contextmanager
def warnings_as_lines(stream=None):
    """Show each ResultsWarning once, as one ``warning: <file>: <problem>`` line on stderr."""
    stream = stream or sys.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("default", ResultsWarning)  # once per distinct message
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, ResultsWarning):
                print(f"warning: {message}", file=stream)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog("report"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="*", metavar="NAME",
                        help="sweep(s) to report; default: every sweep under the results folder")
    parser.add_argument("--results", type=Path, default=None, metavar="DIR",
                        help="results folder (default: $SPARSEBENCH_RESULTS or ./results)")
    parser.add_argument("--no-figures", action="store_true", help="summary and tables only")
    parser.add_argument("--sparsity", type=float, default=None, metavar="PCT",
                        help="draw the per-epoch and per-layer figures (training_progress, "
                             "layer_sparsity) at this sparsity in %%, e.g. 95 (default: the "
                             "sweep's highest)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="write summary, tables and figures under DIR/NAME/ instead of the "
                             "results folder (e.g. when that is read-only)")
    parser.add_argument("--paper", action="store_true",
                        help="the GSE paper's tables and figures into results/paper/")
    parser.add_argument("--mini", action="store_true",
                        help="with --paper: the miniature's, into results/paper_mini/")
    args = parser.parse_args(argv)
    root = args.results
    if args.mini and not args.paper:
        parser.error("--mini goes with --paper")
    if args.sparsity is not None and not 0 <= args.sparsity < 100:
        parser.error(f"--sparsity {args.sparsity:g}: a percentage from 0 to below 100, e.g. 95")
    density = None if args.sparsity is None else round(1 - args.sparsity / 100, 9)
    if args.paper:
        import matplotlib

        matplotlib.use("Agg")
        from .paper import mini, report as paper_report

        if args.sweeps:
            parser.error("--paper takes no sweep names (it reads every paper sweep)")
        index = mini.report(root) if args.mini else paper_report.write_default(root)
        print(f"wrote {index}")
        return 0
    base = root if root is not None else paths.results_root()
    names = args.sweeps or available_sweeps(root)
    for name in args.sweeps:
        if not paths.is_safe_name(name):
            print(f"error: sweep name {name!r}: must be {paths.NAME_RULE}", file=sys.stderr)
            return 2
        if not sweep_exists(name, root):
            known = ", ".join(available_sweeps(root)) or "none"
            hint = (f"; run it first: make sweep SWEEP={name}"
                    if paths.find_resource("sweeps", f"{name}.yaml") else "")
            print(f"error: unknown sweep {name!r}: no {paths.runs_dir(name, root)} "
                  f"(sweeps with results under {base}: {known}){hint}", file=sys.stderr)
            return 2
    if not names:
        print(f"no sweeps with results under {base}; run one with `make sweep SWEEP=NAME`")
        return 0
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed (also on a cluster node)
    with warnings_as_lines():
        for name in names:
            report(name, root, figures=not args.no_figures, write_root=args.out, density=density)
        if len(args.sweeps) > 1:
            compare(args.sweeps, root, write_root=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
