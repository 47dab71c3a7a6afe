"""The sweep command line: grids (`key=a,b,c`), slurm.* overrides, plans without the data,
`paper.full --dry-run` failing on an error, and `make sweep` writing the report of what
completed when a cell diverged."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from sparsebench.storage import paths
from sparsebench.launch import spec as sweep_spec
from sparsebench.config.schema import ConfigError
from sparsebench.sweep import main

from .conftest import REPO, needs_fmnist

BASE = "configs/fmnist_mlp.yaml"
TINY = {"epochs": 1, "data.train_subset": 512}


def test_comma_values_on_the_command_line_expand_the_grid(write_sweep):
    path = write_sweep("grid", {"base": BASE, "overrides": TINY,
                                "grid": {"method.name": ["static"], "density": [0.5]}})
    two = sweep_spec.expand(str(path), ["density=0.1,0.05"])  # replaces the file's density axis
    assert sorted(c.config.density for c in two.cells) == [0.05, 0.1]
    assert [c.label for c in two.cells] == [{"method.name": "static", "density": 0.1},
                                            {"method.name": "static", "density": 0.05}]
    four = sweep_spec.expand(str(path), ["density=0.1,0.05", "seed=1,2"])  # a new axis, varies fastest
    assert [(c.config.density, c.config.seed) for c in four.cells] == [
        (0.1, 1), (0.1, 2), (0.05, 1), (0.05, 2)]
    # A list in brackets stays one value; a single value applies to every cell.
    one = sweep_spec.expand(str(path), ["optim.betas=[0.8,0.9]", "epochs=2"])
    assert len(one.cells) == 1 and one.cells[0].config.optim.betas == (0.8, 0.9)
    assert one.cells[0].config.epochs == 2
    with pytest.raises(ConfigError, match="density: got 2.0"):
        sweep_spec.expand(str(path), ["density=0.1,2"])


def test_slurm_settings_on_the_command_line(write_sweep):
    path = write_sweep("sl", {"base": BASE, "grid": {"density": [0.1]},
                              "slurm": {"partition": "cpu", "array_parallelism": 8}})
    sweep = sweep_spec.expand(str(path), ["slurm.array_parallelism=1", "slurm.time_min=30"])
    assert (sweep.spec.slurm.array_parallelism, sweep.spec.slurm.time_min) == (1, 30)
    assert sweep.spec.slurm.partition == "cpu"  # the file's, kept
    with pytest.raises(ConfigError, match="slurm.bogus: unknown field"):
        sweep_spec.expand(str(path), ["slurm.bogus=1"])
    with pytest.raises(ConfigError, match="slurm.array_parallelism: got 0"):
        sweep_spec.expand(str(path), ["slurm.array_parallelism=0"])
    with pytest.raises(ConfigError, match="slurm.time_min: one value"):
        sweep_spec.expand(str(path), ["slurm.time_min=30,60"])


def test_dry_run_without_the_data_shows_the_plan_and_says_so(write_sweep, tmp_path, capsys):
    empty = tmp_path / "no_data"
    empty.mkdir()
    path = write_sweep("nodata", {"base": BASE, "overrides": {**TINY, "data.root": str(empty)},
                                  "grid": {"method.name": ["static", "set"]}})
    assert main([str(path), "--dry-run", "--executor", "inline", "density=0.1,0.05"]) == 0
    out = capsys.readouterr().out
    assert "data: not checked here" in out and str(empty) in out
    assert "runs per model x method x density" in out
    table = out.split("runs per model x method x density")[1].split("executor inline")[0]
    for method in ("static", "set"):
        (line,) = [l for l in table.splitlines() if f" {method} " in l]
        assert line.split()[-3:] == ["1/1", "1/1", "2/2"]  # d=0.1, d=0.05, all
    assert out.rstrip().endswith("dry run: nothing submitted")
    with pytest.raises(SystemExit) as exit_:  # launching for real still needs the data
        main([str(path), "--executor", "inline"])
    assert exit_.value.code == 2


def test_paper_dry_run_exits_non_zero_on_an_error(monkeypatch, capsys):
    from sparsebench.paper import full

    monkeypatch.setattr(full, "paper_sweeps", lambda: ["no_such_sweep"])
    assert full.main(["--dry-run", "--executor", "inline"]) == 2
    assert "1 of 1 sweeps have errors: no_such_sweep" in capsys.readouterr().err


@needs_fmnist
@pytest.mark.timeout(300)
@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_sweep_writes_the_report_when_a_cell_diverged(write_sweep, tmp_path):
    path = write_sweep("halfbad", {"base": BASE, "overrides": {**TINY, "optim.momentum": 0.99},
                                   "grid": {"method.name": ["static"], "optim.lr": [0.05, 1e8]}})
    env = {**os.environ, "SPARSEBENCH_RESULTS": str(tmp_path / "results"), "PYTHONPATH": str(REPO)}
    done = subprocess.run(["make", "-o", "setup", "sweep", f"PY={sys.executable}",
                           f"SWEEP={path}", "EXECUTOR=inline", "ARGS=density=0.1 tracking.tensorboard=false"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode != 0, done.stdout  # the sweep's status: one run diverged
    assert "1 diverged" in done.stdout
    summary = paths.summary_csv("halfbad", tmp_path / "results")
    assert summary.is_file(), done.stdout + done.stderr
    text = summary.read_text()
    assert "completed" in text and "diverged" in text


def test_report_of_two_sweeps_puts_their_methods_side_by_side(tmp_path, capsys):
    from sparsebench import load_results
    from sparsebench.report import main as report_main

    from .fake_results import write_run

    root = tmp_path / "results"
    for seed, (a, b) in enumerate([(80.0, 82.0), (81.0, 83.0)]):
        write_run(root, "baselines", "rigl", 0.1, seed, acc=a)
        write_run(root, "baselines", "static", 0.1, seed, acc=a - 5)
        write_run(root, "newmethod", "rigl", 0.1, seed, acc=b)
    df = load_results(["baselines", "newmethod"], root)
    assert sorted(df.groupby("sweep").size().items()) == [("baselines", 4), ("newmethod", 2)]
    with pytest.raises(FileNotFoundError, match="nope"):
        load_results(["baselines", "nope"], root)
    assert report_main(["baselines", "newmethod", "--results", str(root), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "== baselines vs newmethod: 6 runs" in out
    pivot = (root / "comparisons" / "baselines-vs-newmethod" / "tables" / "accuracy_pivot.csv")
    table = pd.read_csv(pivot)
    rows = list(zip(table["method"], table["sweep"], table["sparsity 90%"]))
    at = [i for i, row in enumerate(rows) if row[0] == "rigl"]
    assert at == [at[0], at[0] + 1]  # the method's rows of both sweeps are neighbours
    assert [rows[i] for i in at] == [("rigl", "baselines", "80.50 ± 0.71"),
                                     ("rigl", "newmethod", "82.50 ± 0.71")]
    assert ("static", "baselines", "75.50 ± 0.71") in rows
    summary = pd.read_csv(root / "comparisons" / "baselines-vs-newmethod" / "summary.csv")
    assert set(summary["sweep"]) == {"baselines", "newmethod"}
    # Each sweep's own report is written as before.
    assert paths.summary_csv("baselines", root).is_file()


def test_epoch_lines_report_each_epoch_once_with_an_eta(write_sweep):
    from sparsebench.storage import atomic
    from sparsebench.launch.progress import EpochLines

    path = write_sweep("lines", {"base": BASE, "overrides": {"epochs": 10},
                                 "grid": {"density": [0.1, 0.05]}})
    sweep = sweep_spec.expand(str(path))
    lines = EpochLines(sweep.cells, sweep_spec.row_labels(sweep.cells))
    assert lines.poll() == []  # nothing written yet
    first, second = sweep.cells
    folder = paths.run_dir("lines", first.run_id)
    folder.mkdir(parents=True)
    rows = [{"epoch": e, "round": 0, "round_epoch": e, "test_acc": 50.0 + e,
             "epoch_time_s": 120.0} for e in (1, 2)]
    atomic.write_jsonl(folder / paths.METRICS, rows)
    out = lines.poll()
    assert len(out) == 2 and "epoch 1/10 test_acc 51.00%" in out[0]
    assert out[1].endswith("2.0 min/epoch, ETA 16.0 min")  # 8 epochs left at 2 minutes
    assert lines.poll() == []  # each epoch once
    atomic.write_jsonl(folder / paths.METRICS, rows + [{**rows[1], "epoch": 3, "round_epoch": 3}])
    assert [l.split("]")[1].split(" test_acc")[0] for l in lines.poll()] == [" epoch 3/10"]


@needs_fmnist
def test_inline_sweep_writes_epoch_lines(write_sweep, capsys):
    path = write_sweep("inl", {"base": BASE, "overrides": {**TINY, "epochs": 2},
                               "grid": {"method.name": ["static"]}})
    assert main([str(path), "--executor", "inline", "--lines-every", "0.5",
                 "tracking.tensorboard=false"]) == 0
    out = capsys.readouterr().out
    assert "epoch 1/2 test_acc" in out and "epoch 2/2 test_acc" in out and "ETA" in out


def test_no_wait_submits_and_returns(write_sweep, monkeypatch, capsys):
    from sparsebench.launch import slurm

    path = write_sweep("nowait", {"base": BASE, "overrides": TINY,
                                  "grid": {"density": [0.1, 0.05]}})
    assert main([str(path), "--executor", "inline", "--no-wait"]) == 2
    assert "--no-wait: only with the slurm executor" in capsys.readouterr().err
    submitted = []
    monkeypatch.setattr(slurm, "slurm_available", lambda: True)
    monkeypatch.setattr(slurm, "active_records", lambda sweep, cells: {})
    monkeypatch.setattr(slurm, "submit_slurm", lambda name, spec, cells: (
        submitted.extend(cells) or {c.run_id: f"77_{i}" for i, c in enumerate(cells)}))
    monkeypatch.setattr(slurm, "SlurmWatch", None)  # waiting would need it
    assert main([str(path), "--executor", "slurm", "--no-wait", "--skip-data-check"]) == 0
    out = capsys.readouterr().out
    assert len(submitted) == 2 and "submitted array job 77" in out
    assert "reattaches" in out.splitlines()[-1]
