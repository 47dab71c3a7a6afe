"""Running sweeps inline: dry run, skipping completed runs, failed runs reported and not retried."""
from __future__ import annotations

import io
import json
import os

import pytest

from sparsebench.storage import atomic, paths
from sparsebench.launch import executors, spec as sweep_spec
from sparsebench.launch.executors import Outcome
from sparsebench.sweep import Plan, Progress, main, timing_line

from .conftest import needs_fmnist

BASE = "configs/fmnist_mlp.yaml"
TINY = {"epochs": 1, "data.train_subset": 512}

# pytest-timeout: only a hang gets near this
pytestmark = [needs_fmnist, pytest.mark.timeout(180)]



def _files(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[p] = os.stat(p).st_mtime_ns
    return out


def _result(sweep, cell):
    return json.loads((paths.run_dir(sweep, cell.run_id) / paths.RESULT).read_text())


def test_dry_run_lists_cells_and_submits_nothing(write_sweep, capsys):
    path = write_sweep("dry", {"base": BASE, "overrides": TINY,
                               "grid": {"method.name": ["dense", "static"], "density": [0.1, 0.05]}})
    assert main([str(path), "--dry-run", "--executor", "slurm"]) == 0
    out = capsys.readouterr().out
    sweep = sweep_spec.expand(str(path))
    assert "4 cells -> 3 runs" in out and "to run 3" in out
    for cell in sweep.cells:
        line, = [l for l in out.splitlines() if l.strip().startswith(cell.run_id)]
        assert "to run" in line and sweep_spec.format_label(cell.label) in line
    assert "(same run as 1 more cell)" in out  # dense at 0.05 is dense at 0.1
    assert "one SLURM array job of 3 tasks" in out and "timeout_min=60" in out
    assert out.rstrip().endswith("dry run: nothing submitted")
    assert not paths.results_root().exists()


def test_completed_runs_are_skipped(write_sweep, capsys):
    path = write_sweep("skip", {"base": BASE, "overrides": TINY,
                                "grid": {"method.name": ["dense", "static"], "density": [0.1, 0.05]}})
    assert main([str(path), "--executor", "inline"]) == 0
    out = capsys.readouterr().out
    sweep = sweep_spec.expand(str(path))
    assert all(_result("skip", c)["status"] == "completed" for c in sweep.cells)
    assert "3 runs: 3 completed" in out
    table = out.split("final test accuracy")[1]
    assert "dense" in table and "static" in table and "(1/1)" in table

    before = _files(paths.runs_dir(sweep.name))
    assert main([str(path), "--executor", "inline"]) == 0
    out = capsys.readouterr().out
    assert "completed 3," in out and "to run 0" in out and "nothing to submit" in out
    assert _files(paths.runs_dir(sweep.name)) == before  # nothing ran, nothing rewritten

    assert main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for cell in sweep.cells:
        line, = [l for l in out.splitlines() if l.strip().startswith(cell.run_id)]
        assert line.split()[1] == "completed"


def test_failed_runs_are_reported_and_retried_only_when_asked(write_sweep, capsys):
    # data.root pointing nowhere: with --skip-data-check (data only on the compute nodes) the
    # launcher lets it through and the run fails when it starts, with the preflight's line
    path = write_sweep("fail", {"base": BASE, "overrides": TINY,
                                "grid": {"data.root": [None, "/nonexistent/fmnist"]}})
    sweep = sweep_spec.expand(str(path))
    good, bad = sweep.cells
    assert main([str(path), "--executor", "inline", "--skip-data-check"]) == 1
    out = capsys.readouterr().out
    assert _result("fail", good)["status"] == "completed"
    failed = _result("fail", bad)
    assert failed["status"] == "failed" and failed["error"].startswith("data.root: /nonexistent")
    assert "1 run not completed" in out
    assert out.splitlines()[-1] == ("sweep fail: not all runs completed: 1 completed, 1 failed, "
                                    "0 diverged, 0 missing (exit code 1)")
    row, = [l for l in out.splitlines() if l.strip().startswith(bad.run_id)]
    assert "failed" in row and failed["error"].splitlines()[0][:60] in row

    log = paths.run_dir("fail", bad.run_id) / paths.LOG
    attempts = log.read_text().count("failed:")
    before = _files(paths.runs_dir(sweep.name))
    assert main([str(path), "--executor", "inline", "--skip-data-check"]) == 1
    out = capsys.readouterr().out
    assert "failed or diverged (not retried) 1" in out and "to run 0" in out
    assert bad.run_id in out.split("not completed")[1]
    assert _files(paths.runs_dir(sweep.name)) == before

    assert main([str(path), "--executor", "inline", "--retry-failed", "--skip-data-check"]) == 1
    out = capsys.readouterr().out
    assert "to run 1" in out
    assert log.read_text().count("failed:") == attempts + 1
    assert _result("fail", good) == json.loads(
        (paths.run_dir("fail", good.run_id) / paths.RESULT).read_text())


def test_diverged_runs_count_as_failed_for_retrying(write_sweep, capsys):
    path = write_sweep("div", {"base": BASE, "overrides": {**TINY, "optim.lr": 1.0e12},
                               "grid": {"method.name": ["dense"]}})
    cell, = sweep_spec.expand(str(path)).cells
    # a diverged run is a result, not a crash, but a script must not take the sweep as done
    assert main([str(path), "--executor", "inline"]) == 1
    out = capsys.readouterr().out
    assert _result("div", cell)["status"] == "diverged"
    assert "diverged" in out.split("not completed")[1]
    assert out.splitlines()[-1] == ("sweep div: not all runs completed: 0 completed, 0 failed, "
                                    "1 diverged, 0 missing (exit code 1)")
    assert main([str(path), "--executor", "inline"]) == 1
    assert "failed or diverged (not retried) 1" in capsys.readouterr().out


def test_auto_picks_slurm_only_where_sbatch_is_on_the_path(write_sweep, tmp_path, monkeypatch, capsys):
    path = write_sweep("auto", {"base": BASE, "overrides": TINY, "grid": {"seed": [0, 1]}})
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    monkeypatch.setenv("PATH", str(fake_bin))  # no sbatch anywhere
    assert main([str(path), "--dry-run", "--workers", "3"]) == 0
    assert "executor local: 2 runs in 2 local processes at once" in capsys.readouterr().out
    sbatch = fake_bin / "sbatch"
    sbatch.write_text("#!/bin/sh\nexit 1\n")
    sbatch.chmod(0o755)
    assert main([str(path), "--dry-run"]) == 0
    assert "executor slurm: one SLURM array job of 2 tasks" in capsys.readouterr().out


def test_a_second_launcher_of_the_same_sweep_is_refused(write_sweep, capsys):
    import fcntl

    path = write_sweep("busy", {"base": BASE, "overrides": TINY, "grid": {"seed": [0]}})
    lock = paths.launcher_lock("busy")
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:
        held.write("pid 1 on elsewhere\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        assert main([str(path), "--executor", "inline"]) == 1
        assert "another launcher is working on sweep busy (pid 1 on elsewhere)" in capsys.readouterr().err
        assert not paths.runs_dir("busy").exists()
    assert main([str(path), "--executor", "inline"]) == 0  # released: runs


def test_progress_bar_counts_done_running_and_failed_runs(write_sweep):
    path = write_sweep("bar", {"base": BASE, "overrides": TINY, "grid": {"seed": [0, 1, 2, 3]}})
    sweep = sweep_spec.expand(str(path))
    first = sweep.cells[0]
    atomic.write_json(executors.result_path(first), {"status": "completed", "final_test_acc": 80.0})
    plan = Plan(sweep, retry_failed=False)
    assert plan.completed == [first] and len(plan.to_run) == 3

    out = io.StringIO()
    progress = Progress(plan, file=out, disable=False)
    progress.done(Outcome(sweep.cells[1].run_id, "completed"), running=2)
    progress.done(Outcome(sweep.cells[2].run_id, "failed", "RuntimeError: boom"), running=1)
    progress.close()
    lines = out.getvalue().replace("\r", "\n").splitlines()
    last = [l for l in lines if l.startswith("bar:")][-1]
    assert "3/4" in last and "running=1" in last and "failed=1" in last, last
    assert progress.failed == 1 and set(progress.outcomes) == {c.run_id for c in sweep.cells[1:3]}


def test_timing_line_compares_the_launch_with_the_sum_of_its_runs(write_sweep):
    path = write_sweep("ratio", {"base": BASE, "overrides": TINY, "grid": {"seed": [0, 1, 2]}})
    sweep = sweep_spec.expand(str(path))
    plan = Plan(sweep, retry_failed=False)
    for cell, seconds in zip(sweep.cells, (10.0, 30.0, None)):
        atomic.write_json(executors.result_path(cell), {"status": "completed", "wall_clock_s": seconds})
    line = timing_line(plan, 20.0)
    assert line == ("time: 3 runs took 20.0 s from launch to the last result; their training "
                    "alone adds up to 40.0 s (2 of the 3 runs report a time): 2.0× faster side "
                    "by side than one after another")
