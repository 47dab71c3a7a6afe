"""Malformed sweep files and overrides: exit 2 naming the file, the cell and the field, before
anything is submitted or any result file is touched."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
import yaml

from sparsebench.storage import paths
from sparsebench.sweep import main

from .conftest import REPO

BASE = "configs/fmnist_mlp.yaml"
GOOD = {"base": BASE, "overrides": {"epochs": 1, "data.train_subset": 256},
        "grid": {"method.name": ["static"], "density": [0.1, 0.05]}}


def _with(**changes) -> dict:
    spec = yaml.safe_load(yaml.safe_dump(GOOD))
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return spec


# (id, sweep spec or raw YAML text, command-line overrides, text the one-line error must hold)
CASES = [
    ("unknown top-level key", _with(grdi={"seed": [0]}), [], "grdi: unknown field"),
    ("name differs from the file", {**GOOD, "name": "other"}, [], "name: got 'other'"),
    ("name missing", "base: configs/fmnist_mlp.yaml\ngrid: {seed: [0]}\n", [], "name: missing"),
    ("grid not a mapping", _with(grid=[0.1, 0.05]), [], "grid: expected a mapping"),
    ("grid value not a list", _with(grid={"density": 0.1}), [], "grid.density: expected a non-empty list"),
    ("empty grid list", _with(grid={"density": []}), [], "grid.density: expected a non-empty list"),
    ("no cells at all", _with(grid={}), [], "grid: the sweep has no cells"),
    ("unknown field in a cell", _with(grid={"densty": [0.1]}), [], "cell {densty: 0.1}: densty: unknown field"),
    ("density 0", _with(grid={"density": [0.1, 0]}), [], "cell {density: 0}: density: got 0"),
    ("density above 1", _with(grid={"density": [1.5]}), [], "density: got 1.5; allowed: a number in (0, 1]"),
    ("density of the wrong type", _with(grid={"density": ["dense"]}), [], "density: expected a number"),
    ("unknown method", _with(grid={"method.name": ["static", "nosuch"]}), [],
     "cell {method.name: nosuch}: method.name: unknown method 'nosuch'; allowed: "),
    ("unknown model", _with(grid={"model.name": ["resnet9000"]}), [], "model.name: got 'resnet9000'"),
    ("unknown data set", _with(grid={"data.name": ["svhn"]}), [], "data.name: got 'svhn'"),
    ("epochs of the wrong type", _with(overrides={"epochs": "ten"}), [],
     "epochs: expected an integer, got 'ten' (set in overrides)"),
    ("bad choice", _with(overrides={"optim.schedule": "linear"}), [], "optim.schedule: got 'linear'"),
    ("parameter of another method", _with(grid={"method": [{"name": "static", "interval": 100}]}), [],
     "method.interval: not a parameter of method 'static'"),
    ("method parameter out of range", _with(grid={"method": [{"name": "rigl", "drop_fraction": 2}]}), [],
     "method.drop_fraction: got 2"),
    ("unknown slurm option", _with(slurm={"partiton": "gpu"}), [], "slurm.partiton: unknown field"),
    ("slurm time not positive", _with(slurm={"time_min": 0}), [], "slurm.time_min: got 0"),
    ("slurm cpus of the wrong type", _with(slurm={"cpus_per_task": "two"}), [],
     "slurm.cpus_per_task: expected an integer"),
    ("slurm additional option that a field sets", _with(slurm={"additional": {"time": 5}}), [],
     "slurm.additional: got {'time': 5}"),
    ("slurm block not a mapping", _with(slurm="debug"), [], "slurm: expected a mapping"),
    ("include entry not a mapping", _with(include=[5]), [], "include[0]: expected a mapping"),
    ("include entry invalid", _with(include=[{"density": 2.0}]), [], "cell {density: 2.0}: density: got 2.0"),
    ("exclude matching nothing", _with(exclude=[{"density": 0.3}]), [], "exclude[0]: {density: 0.3} matches no grid cell"),
    ("sweep set per cell", _with(include=[{"sweep": "x"}]), [], "include[0].sweep: set from the sweep's name"),
    ("base file missing", _with(base="configs/nope.yaml"), [], "base: config file not found"),
    ("not YAML", "name: broken\ngrid: {density: [0.1\n", [], "not valid YAML"),
    ("override of an unknown key", GOOD, ["densty=0.1"],
     "densty: unknown field; allowed: amp, channels_last, compile, compile_backend, cudnn_benchmark, data, density, device, epochs, method, model, optim, progress, protocol, save_final, seed, sparsity, sweep, tf32, tracking (set on the command line: densty=0.1)"),
    ("override with a bad value", GOOD, ["epochs=0"], "epochs: got 0"),
    ("override without =", GOOD, ["epochs"], "epochs: an override must look like key=value"),
    ("override of the sweep name", GOOD, ["sweep=other"], "sweep: the sweep's name sets it"),
]


def _snapshot(root):
    """Every file under the results root with its content hash and mtime."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[p] = (hashlib.sha256(open(p, "rb").read()).hexdigest(), os.stat(p).st_mtime_ns)
    return out


@pytest.fixture
def existing_results(tmp_path):
    """A results tree holding an earlier run of each sweep name used below."""
    root = paths.results_root()
    for name in ("bad", "broken", "other"):
        run = root / name / "runs" / "0123456789ab"
        run.mkdir(parents=True)
        (run / "result.json").write_text('{"status": "completed", "final_test_acc": 80.0}\n')
    return root


@pytest.mark.parametrize("case,spec,overrides,expected", CASES, ids=[c[0] for c in CASES])
def test_malformed_sweep_exits_2_naming_file_cell_and_field(case, spec, overrides, expected,
                                                           write_sweep, existing_results, capsys):
    path = write_sweep("bad" if case != "not YAML" else "broken", spec)
    before = _snapshot(existing_results)
    with pytest.raises(SystemExit) as exit_info:
        main([str(path), *overrides, "--executor", "inline"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and path.name in err, err
    assert expected in err, err
    assert _snapshot(existing_results) == before  # nothing ran, nothing written


def test_at_least_twenty_cases():
    assert len(CASES) >= 20


def test_one_bad_cell_among_good_ones_stops_everything(write_sweep, existing_results, capsys):
    """Validation of every cell comes first: the good cells before the bad one do not run."""
    path = write_sweep("bad", _with(grid={"method.name": ["static", "dense", "rigl"],
                                          "density": [0.1, 0.05, 7]}))
    before = _snapshot(existing_results)
    with pytest.raises(SystemExit) as exit_info:
        main([str(path), "--executor", "inline"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "cell {method.name: static, density: 7}: density: got 7" in err
    assert _snapshot(existing_results) == before


def test_unknown_sweep_name_lists_the_available_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["no_such_sweep", "--dry-run"])
    assert exit_info.value.code == 2
    assert "available: " in capsys.readouterr().err


def test_malformed_sweep_through_the_command_line(write_sweep, existing_results):
    path = write_sweep("bad", _with(grid={"method.name": ["static", "nosuch"]}))
    before = _snapshot(existing_results)
    env = {**os.environ, "SPARSEBENCH_RESULTS": str(existing_results)}
    out = subprocess.run([sys.executable, "-m", "sparsebench.sweep", str(path), "--executor", "local"],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    line, = out.stderr.strip().splitlines()
    assert "bad.yaml: cell {method.name: nosuch}: method.name: unknown method 'nosuch'" in line
    assert "static" in line.split("allowed:")[1]
    assert _snapshot(existing_results) == before
