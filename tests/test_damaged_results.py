"""Damaged run files are named once and counted as unreadable; read-only results still report."""
from __future__ import annotations

import errno
import json

import pytest

from sparsebench.storage import atomic, paths
from sparsebench import load_results
from sparsebench.report import main as report_main
from sparsebench.storage.run_files import ResultsWarning

from .fake_results import write_run

SWEEP = "damaged"


@pytest.fixture
def damaged_sweep():
    """Two good runs and one of each kind of damage; returns {kind: the damaged file}."""
    root = paths.results_root()
    write_run(root, SWEEP, "static", 0.1, 0, acc=80.0)
    write_run(root, SWEEP, "static", 0.1, 1, acc=82.0, curve=[70.0, 82.0])
    files = {}
    run = write_run(root, SWEEP, "static", 0.1, 2, acc=81.0)
    files["not utf-8"] = run / paths.RESULT
    files["not utf-8"].write_bytes(b'{"status": "completed", "method": "st\xe4tic"}')
    run = write_run(root, SWEEP, "static", 0.1, 3, acc=81.0)
    files["wrong type"] = run / paths.RESULT
    result = json.loads(files["wrong type"].read_text())
    files["wrong type"].write_text(json.dumps({**result, "final_test_acc": "99.9"}))
    run = write_run(root, SWEEP, "static", 0.1, 4, acc=81.0)
    files["not an object"] = run / paths.RESULT
    files["not an object"].write_text("[1, 2]")
    run = write_run(root, SWEEP, "static", 0.1, 5, status="running")
    files["config not utf-8"] = run / paths.CONFIG
    files["config not utf-8"].write_bytes(b"method: {name: \xff}\n")
    run = write_run(root, SWEEP, "static", 0.1, 6, acc=83.0, curve=[70.0, 83.0])
    files["metrics line"] = run / paths.METRICS
    with open(files["metrics line"], "ab") as f:
        f.write(b'{"epoch": 3, "test_ac\n\xfe\xff\n')
    return files


def test_load_results_warns_once_per_damaged_file_and_counts_it_unreadable(damaged_sweep):
    with pytest.warns(ResultsWarning) as caught:
        df = load_results(SWEEP)
    messages = [str(w.message) for w in caught]
    for kind, path in damaged_sweep.items():
        if kind != "metrics line":  # metrics are read by the figures, not by load_results
            assert sum(m.startswith(f"{path}: ") for m in messages) == 1, (kind, messages)
    assert "not UTF-8 text (byte 0xe4" in " ".join(messages)
    assert "field final_test_acc is '99.9' (str), expected a number" in " ".join(messages)
    counts = df["status"].value_counts().to_dict()
    assert counts == {"completed": 3, "unreadable": 4}
    # a wrong-typed accuracy is never averaged in
    assert sorted(df.loc[df["status"] == "completed", "final_test_acc"]) == [80.0, 82.0, 83.0]
    # the damaged result's config still places the run in its cell
    wrong = df[df["run_dir"] == str(damaged_sweep["wrong type"].parent)].iloc[0]
    assert (wrong["method"], wrong["seed"]) == ("static", 3)


def test_report_names_each_damaged_file_and_keeps_going(damaged_sweep, capsys):
    assert report_main([SWEEP]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    for path in damaged_sweep.values():
        assert sum(f"warning: {path}: " in line for line in warnings) == 1, (path, warnings)
    assert "2 lines not a JSON object (first: line 3)" in captured.err
    assert f"== {SWEEP}: 7 runs (3 completed, 4 unreadable)" in captured.out
    assert "81.67" in captured.out  # mean of the three completed runs
    assert (paths.sweep_dir(SWEEP) / "summary.csv").is_file()
    assert "Traceback" not in captured.err


def _read_only(monkeypatch, under):
    """Writes under ``under`` fail as on a read-only file system (tests run as root, where a
    chmod would not stop them)."""
    real = atomic.open_temporary

    def open_temporary(folder, name):
        if str(folder).startswith(str(under)):
            raise OSError(errno.EROFS, "Read-only file system", str(folder))
        return real(folder, name)

    monkeypatch.setattr(atomic, "open_temporary", open_temporary)


def test_report_on_read_only_results_prints_its_tables(monkeypatch, capsys, tmp_path):
    root = paths.results_root()
    for seed, acc in enumerate((80.0, 84.0)):
        write_run(root, "ro", "static", 0.1, seed, acc=acc)
    _read_only(monkeypatch, root)
    assert report_main(["ro", "--no-figures"]) == 0
    captured = capsys.readouterr()
    assert "== ro: 2 runs (2 completed)" in captured.out and "82.00" in captured.out
    line, = [l for l in captured.err.splitlines() if l.startswith("warning: ")]
    assert f"Read-only file system: cannot write {paths.summary_csv('ro')}" in line
    assert "--out DIR" in line
    assert not paths.summary_csv("ro").exists() and not paths.tables_dir("ro").exists()

    out = tmp_path / "elsewhere"
    assert report_main(["ro", "--no-figures", "--out", str(out)]) == 0
    assert (out / "ro" / "summary.csv").is_file() and (out / "ro" / "tables" / "main.md").is_file()
    assert f"wrote {out / 'ro' / 'summary.csv'}" in capsys.readouterr().out


def test_report_rejects_a_sweep_name_that_is_a_path(capsys):
    assert report_main(["../etc"]) == 2
    assert "sweep name '../etc': must be a folder name" in capsys.readouterr().err
