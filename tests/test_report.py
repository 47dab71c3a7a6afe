"""Results as data, the tables and the report, on result trees with known numbers."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from sparsebench import load_results, report
from sparsebench.storage import paths
from sparsebench.reporting import tables
from sparsebench.reporting.figures import FIGURES
from sparsebench.storage.run_files import ResultsWarning
from sparsebench.reporting.results import write_summary

from .fake_results import write_run


@pytest.fixture
def root(tmp_path):
    return tmp_path / "results"


def hand_mean_std(values):
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def make_cells(root, sweep="cells"):
    """static at 0.1: three completed seeds, one failed, one diverged, one running;
    static at 0.05: one seed; dense: two seeds."""
    for seed, acc, rel in ((0, 80.0, 0.10), (1, 82.0, 0.12), (2, 84.5, 0.14)):
        write_run(root, sweep, "static", 0.1, seed, acc=acc, train_flops_rel_dense=rel,
                  curve=[70.0, acc])
    write_run(root, sweep, "static", 0.1, 3, status="failed")
    write_run(root, sweep, "static", 0.1, 4, acc=10.0, status="diverged", train_flops_rel_dense=0.9)
    write_run(root, sweep, "static", 0.1, 5, status="running", curve=[71.0])
    write_run(root, sweep, "static", 0.05, 0, acc=70.0, curve=[60.0, 70.0])
    for seed, acc in ((0, 90.0), (1, 91.0)):
        write_run(root, sweep, "dense", 1.0, seed, acc=acc, curve=[85.0, acc])
    return sweep


def test_table_mean_and_std_match_hand_values_and_exclude_failed_runs(root):
    sweep = make_cells(root)
    table = tables.main_table(load_results(sweep, root))
    row = table[(table["method_label"] == "static") & (table["density"] == 0.1)].iloc[0]
    mean, std = hand_mean_std([80.0, 82.0, 84.5])
    assert row["acc_mean"] == pytest.approx(mean)          # 82.1667: the diverged 10 % is out
    assert row["acc_std"] == pytest.approx(std)            # 2.2546 (sample std)
    assert (row["n"], row["failed"], row["diverged"], row["running"]) == (3, 1, 1, 1)
    assert row["train_flops_rel_dense"] == pytest.approx(0.12)  # completed runs only
    dense = table[table["method_label"] == "dense"].iloc[0]
    assert (dense["acc_mean"], dense["n"]) == (pytest.approx(90.5), 2)
    assert dense["acc_std"] == pytest.approx(math.sqrt(0.5))
    # Dense first, then the densities from the least to the most sparse.
    assert list(zip(table["method_label"], table["density"])) == [
        ("dense", 1.0), ("static", 0.1), ("static", 0.05)]

    text = tables.to_markdown(tables.main_display(table))
    assert "82.17 ± 2.25 †" in text and "90.50 ± 0.71 " in text
    assert "| 70.00 " in text  # one seed: no std
    pivot = tables.pivot_display(table)
    assert list(pivot.columns) == ["method", "sparsity 0%", "sparsity 90%", "sparsity 95%"]
    assert pivot.set_index("method").loc["static", "sparsity 90%"] == "82.17 ± 2.25 †"


def test_load_results_flattens_config_and_reads_partial_folders(root):
    sweep = make_cells(root)
    write_run(root, sweep, "gse", 0.1, 0, acc=85.0, sampler="grabo")
    broken = write_run(root, sweep, "static", 0.2, 0, acc=50.0)
    (broken / paths.RESULT).write_text('{"status": "compl')          # damaged file
    (paths.runs_dir(sweep, root) / "empty_folder").mkdir()           # a run not started yet
    with pytest.warns(ResultsWarning, match=f"{broken / paths.RESULT}: not valid JSON"):
        df = load_results(sweep, root)

    assert len(df) == 11 and df["run_id"].is_unique
    assert df["config.optim.lr"].eq(0.1).all() and "config.model.width" in df
    gse = df[df["method"] == "gse"].iloc[0]
    assert gse["method.sampler"] == "grabo" and gse["method_label"] == "gse (grabo)"
    running = df[df["status"] == "running"].iloc[0]
    assert (running["seed"], running["epochs_completed"]) == (5, 1)
    assert pd.isna(running["final_test_acc"])
    damaged = df[df["density"] == 0.2].iloc[0]
    assert damaged["status"] == "unreadable" and "not valid JSON" in damaged["error"]
    assert df["status"].value_counts().to_dict() == {"completed": 7, "failed": 1,
                                                     "diverged": 1, "running": 1,
                                                     "unreadable": 1}

    with pytest.warns(ResultsWarning, match="not valid JSON"):  # read again: named again
        path = write_summary(sweep, root)
    summary = pd.read_csv(path)
    assert len(summary) == len(df) and set(summary["run_id"]) == set(df["run_id"])
    assert json.loads(summary.loc[summary["status"] == "completed", "layer_sizes"].iloc[0])


def make_full_sweep(root, sweep="full"):
    """Every figure has data: methods, densities, two widths, three GSE samplers, seeds,
    curves, layer densities; plus a failed and a still-running run."""
    for seed in (0, 1):
        for width in (1.0, 2.0):
            write_run(root, sweep, "dense", 1.0, seed, acc=90.0 + seed, curve=[85.0, 90.0],
                      width=width)
            for density in (0.1, 0.02):
                for i, (method, sampler) in enumerate((("static", None), ("set", None),
                                                       ("gse", "uniform"), ("gse", "grabo"))):
                    acc = 80.0 + 10 * density + i + seed * 0.5
                    write_run(root, sweep, method, density, seed, acc=acc, curve=[acc - 5, acc],
                              width=width, sampler=sampler, wall_clock_s=10.0 + i,
                              layer_densities={"net.1": density / 2, "net.3": density * 2,
                                               "net.5": min(1.0, density * 5 + i / 10)})
    write_run(root, sweep, "set", 0.02, 2, status="failed")
    write_run(root, sweep, "gse", 0.02, 2, status="running", sampler="graest", curve=[60.0])
    return sweep


def test_report_on_a_partial_sweep_writes_every_table_and_figure(root, capsys):
    sweep = make_full_sweep(root)
    assert report.main([sweep, "--results", str(root)]) == 0
    out = capsys.readouterr().out
    assert "gse (grabo)" in out and "sparsity 98%" in out       # the pivot table
    for name in ("main", "accuracy_pivot"):
        for ext in ("md", "tex", "csv"):
            path = paths.tables_dir(sweep, root) / f"{name}.{ext}"
            assert path.is_file() and f"wrote {path}" in out
    assert r"\toprule" in (paths.tables_dir(sweep, root) / "main.tex").read_text()
    assert paths.summary_csv(sweep, root).is_file()
    for name in FIGURES:
        png = paths.figures_dir(sweep, root) / f"{name}.png"
        pdf = paths.figures_dir(sweep, root) / f"{name}.pdf"
        assert png.read_bytes()[:4] == b"\x89PNG", name
        assert pdf.read_bytes()[:4] == b"%PDF", name
    main = pd.read_csv(paths.tables_dir(sweep, root) / "main.csv")
    assert "model.width" in main.columns  # widths are separate cells, never averaged together
    assert main["failed"].sum() == 1 and main["running"].sum() == 1


def test_report_skips_unsupported_figures_with_a_note(root, capsys):
    write_run(root, "tiny", "static", 0.1, 0, acc=80.0)
    write_run(root, "tiny", "static", 0.1, 1, status="running")
    assert report.main(["tiny", "--results", str(root)]) == 0
    out = capsys.readouterr().out
    assert "note: figure accuracy_vs_density skipped" in out
    assert "note: figure gse_samplers skipped" in out
    assert (paths.tables_dir("tiny", root) / "main.md").is_file()


def test_report_without_a_name_reports_every_sweep_and_survives_empty_ones(root, monkeypatch,
                                                                          capsys):
    monkeypatch.setenv("SPARSEBENCH_RESULTS", str(root))
    make_cells(root, "first")
    write_run(root, "second", "static", 0.1, 0, status="running")
    paths.runs_dir("empty", root).mkdir(parents=True)
    assert report.main(["--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "== first:" in out and "== empty: 0 runs" in out
    assert "== second: 1 runs (1 running)" in out
    for sweep in ("first", "second", "empty"):
        assert (paths.tables_dir(sweep, root) / "main.csv").is_file()


def test_unknown_sweep_is_one_line_and_exit_code_2(root, capsys):
    make_cells(root, "known")
    assert report.main(["nosuch", "--results", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nosuch" in err and "known" in err
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--help"])
    assert exit_info.value.code == 0
