"""The ``sparsebench`` command as a user meets it: ``--version``, ``list``, ``paper ...``,
usage lines and resume hints that name the command as it was typed, a line per finished run
and per epoch that says which run it is, and a warning for every method file that did not
load. (From an installed wheel: tests/test_wheel_install.py.)"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from sparsebench import cli, __version__
from sparsebench.launch import spec as sweep_spec
from sparsebench.launch.executors import Outcome
from sparsebench.launch.progress import EpochLines, RunLines, duration, run_labels
from sparsebench.storage import atomic, paths
from sparsebench.sweep import resume_args

from .conftest import REPO

BASE = "configs/fmnist_mlp.yaml"


def sparsebench(*args: str, env: dict | None = None, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sparsebench", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env={**os.environ, **(env or {})})


def test_version_is_the_packages(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"sparsebench {__version__}\n"
    text = (REPO / "pyproject.toml").read_text()  # one place for the version
    assert 'dynamic = ["version"]' in text and "sparsebench.__version__" in text


def test_list_names_each_kind_and_where_it_comes_from(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    sections = {block.split(" (")[0]: block for block in out.split("\n") if not block.startswith(" ")}
    assert [k for k in sections if k] == ["sweeps", "configs", "methods", "protocols"]
    lines = out.splitlines()
    assert any(l.split()[:1] == ["fmnist_smoke"] and l.endswith("fmnist_smoke.yaml") for l in lines)
    assert any(l.split()[:1] == ["fmnist_mlp"] and l.endswith("fmnist_mlp.yaml") for l in lines)
    assert any(l.split()[:1] == ["rigl"] and l.endswith("rigl.py") for l in lines)
    assert any(l.split()[:1] == ["gse_paper"] for l in lines)
    assert cli.main(["list", "methods"]) == 0
    only = capsys.readouterr().out
    assert only.startswith("methods (") and "sweeps (" not in only
    with pytest.raises(SystemExit) as exit_:
        cli.main(["list", "models"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "KIND: got 'models'; allowed: sweeps, configs, methods, protocols" in err[-1]


def test_paper_subcommands_dispatch_and_usage_names_the_command():
    proc = sparsebench("paper", "cost", "paper_table4_dense_vit", "--tflops", "4")
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1].split()
    assert last[0] == "total" and int(last[1]) > 0 and float(last[3]) > 0
    helped = sparsebench("sweep", "-h")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: sparsebench sweep ")
    cost = sparsebench("paper", "cost", "-h")
    assert cost.stdout.startswith("usage: sparsebench paper cost ")
    # python -m sparsebench.X keeps its own name
    direct = subprocess.run([sys.executable, "-m", "sparsebench.sweep", "-h"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert direct.stdout.startswith("usage: python -m sparsebench.sweep ")


BROKEN_SET = "from sparsebench.methods import Method, register\n\nclass Set(Method)\n    name = 'set'\n"


def test_a_method_file_that_does_not_load_is_one_warning_line_at_start_up(tmp_path):
    folder = tmp_path / "methods"
    folder.mkdir()
    (folder / "dup.py").write_text(BROKEN_SET)  # meant to replace the built-in `set`
    env = {"SPARSEBENCH_METHODS_PATH": str(folder), "SPARSEBENCH_RESULTS": str(tmp_path / "r")}
    for args in (["list", "methods"], ["train", "fmnist_mlp", "method.name=set", "--print-config"]):
        proc = sparsebench(*args, env=env)
        assert proc.returncode == 0, proc.stderr
        [line] = proc.stderr.strip().splitlines()
        assert line.startswith(f"warning: method file {folder / 'dup.py'} did not load "
                               "(SyntaxError: ") and "(line 3)" in line
    assert "set" in proc.stdout  # the built-in one still runs, and the user was told


def test_resume_hint_is_the_command_as_typed(monkeypatch, tmp_path):
    monkeypatch.delenv("SPARSEBENCH_COMMAND", raising=False)
    args = resume_args(["fmnist_smoke", "--executor", "auto", "density=0.1", "--no-wait"], "local")
    assert args == ["fmnist_smoke", "density=0.1", "--executor", "local"]
    assert resume_args(["x", "--executor=auto"], "slurm") == ["x", "--executor", "slurm"]
    # python -m sparsebench.sweep: this python (by name only where the PATH finds this one)
    monkeypatch.setattr(sys, "argv", [str(REPO / "sparsebench" / "sweep.py")])
    monkeypatch.setenv("PATH", str(tmp_path))  # no python on it
    hint = cli.again("sweep", args)
    assert hint == (f"{shlex.quote(sys.executable)} -m sparsebench.sweep fmnist_smoke "
                    "density=0.1 --executor local")
    (tmp_path / "python").symlink_to(sys.executable)
    assert cli.again("sweep", args).startswith("python -m sparsebench.sweep ")
    # the sparsebench script: by name where the PATH finds it, else its path
    script = tmp_path / "bin" / "sparsebench"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(script)])
    assert cli.again("sweep", ["a b"]) == f"{script} sweep 'a b'"
    monkeypatch.setenv("PATH", str(script.parent))
    assert cli.again("sweep", ["a"]) == "sparsebench sweep a"
    # make sweep ...: the Makefile's line wins
    monkeypatch.setenv("SPARSEBENCH_COMMAND", "make sweep SWEEP='fmnist_smoke'")
    assert cli.again("sweep", ["a"]) == "make sweep SWEEP='fmnist_smoke'"


def test_makefile_passes_the_make_command_to_the_sweep():
    proc = subprocess.run(["make", "-n", "sweep", "SWEEP=fmnist_smoke", "ARGS=density=0.1"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert """SPARSEBENCH_COMMAND="make sweep SWEEP='fmnist_smoke' ARGS='density=0.1'\"""" in proc.stdout


def test_a_line_per_finished_run_counts_failures_and_gives_the_sweeps_eta():
    now = [100.0]
    lines = RunLines(5, {"a": "static sparsity 90% seed 0", "b": "rigl sparsity 95% seed 1"},
                     done=1, clock=lambda: now[0])
    now[0] = 110.0  # one run in 10 s, three left
    first = lines.line(Outcome("a", "completed"), {"final_test_acc": 81.234})
    assert first == "[2/5 runs, 0 failed, ETA 30 s] static sparsity 90% seed 0: completed, test_acc 81.23%"
    now[0] = 120.0
    second = lines.line(Outcome("b", "failed", "RuntimeError: boom\nmore"))
    assert second == "[3/5 runs, 1 failed, ETA 20 s] rigl sparsity 95% seed 1: failed: RuntimeError: boom"
    lines.line(Outcome("c", "completed"))
    assert lines.line(Outcome("d", "diverged")).startswith("[5/5 runs, 2 failed, all done] d: diverged")


def test_durations_are_honest_below_a_second():
    assert duration(0.3) == "<1 s" and duration(0) == "0 s" and duration(5) == "5 s"
    assert duration(600) == "10.0 min" and duration(3 * 3600) == "3.0 h"


def test_epoch_lines_of_runs_side_by_side_are_told_apart(write_sweep):
    path = write_sweep("apart", {"base": BASE, "overrides": {"epochs": 3},
                                 "grid": {"method.name": ["static"], "density": [0.1, 0.05],
                                          "seed": [0, 1]}})
    cells = sweep_spec.expand(str(path)).cells
    labels = run_labels(cells)
    assert len(set(labels.values())) == 4
    assert labels[cells[0].run_id] == "static sparsity 90% seed 0"
    lines = EpochLines(cells, labels)
    for cell in cells:
        folder = paths.run_dir("apart", cell.run_id)
        folder.mkdir(parents=True)
        atomic.write_jsonl(folder / paths.METRICS, [{"epoch": 1, "round": 0, "round_epoch": 1,
                                                     "test_acc": 50.0, "epoch_time_s": 0.2}])
    out = lines.poll()
    assert len(out) == 4 and len({l.split("]")[0] for l in out}) == 4
    assert out[0] == "[static sparsity 90% seed 0] epoch 1/3 test_acc 50.00%  <1 s/epoch, ETA <1 s"
    folder = paths.run_dir("apart", cells[0].run_id)
    atomic.write_jsonl(folder / paths.METRICS, [
        {"epoch": e, "round": 0, "round_epoch": e, "test_acc": 50.0, "epoch_time_s": 0.2}
        for e in (1, 2, 3)])
    assert lines.poll()[-1].endswith("epoch 3/3 test_acc 50.00%  <1 s/epoch, last epoch")
