"""The user's folders come before the built-in ones, and a name found in both says which file
won; the `sparsebench` command dispatches to the same parsers as `python -m sparsebench.*`."""
from __future__ import annotations

import os
import subprocess
import sys

import yaml

from sparsebench.storage import paths

from .conftest import REPO


def sparsebench(*args: str, cwd, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sparsebench", *args], cwd=cwd, env=env or os.environ,
                          capture_output=True, text=True, timeout=300)


def own_smoke(folder, seed: int):
    """A changed copy of the built-in fmnist_smoke in ``folder``: one seed, static only."""
    spec = yaml.safe_load((paths.builtin_dir("sweeps") / "fmnist_smoke.yaml").read_text())
    spec["grid"] = {"method.name": ["static"], "density": [0.1], "seed": [seed]}
    folder.mkdir(parents=True)
    (folder / "fmnist_smoke.yaml").write_text(yaml.safe_dump(spec))
    return folder / "fmnist_smoke.yaml"


def test_a_sweep_in_the_current_folder_wins_and_says_so(tmp_path):
    mine = own_smoke(tmp_path / "sweeps", seed=7)
    proc = sparsebench("sweep", "fmnist_smoke", "--dry-run", "--skip-data-check", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1 cells -> 1 runs" in proc.stdout and "seed: 7" in proc.stdout  # not the built-in 3 runs
    [note] = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert note == (f"note: sweep 'fmnist_smoke': using {mine}; not "
                    f"{paths.builtin_dir('sweeps') / 'fmnist_smoke.yaml'}")


def test_the_path_variable_comes_before_the_current_folder(tmp_path):
    own_smoke(tmp_path / "sweeps", seed=7)
    first = own_smoke(tmp_path / "elsewhere", seed=8)
    env = {**os.environ, "SPARSEBENCH_SWEEPS_PATH": str(tmp_path / "elsewhere")}
    proc = sparsebench("sweep", "fmnist_smoke", "--dry-run", "--skip-data-check", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"using {first}; not {tmp_path / 'sweeps' / 'fmnist_smoke.yaml'}" in proc.stderr


def test_an_identical_copy_is_not_a_conflict(tmp_path):
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "fmnist_smoke.yaml").write_bytes(
        (paths.builtin_dir("sweeps") / "fmnist_smoke.yaml").read_bytes())
    proc = sparsebench("sweep", "fmnist_smoke", "--dry-run", "--skip-data-check", cwd=tmp_path)
    assert proc.returncode == 0 and "note:" not in proc.stderr, proc.stderr


def test_a_config_by_name_from_a_user_folder(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny.yaml").write_text("model:\n  name: mlp\n  width: 0.5\n")
    proc = sparsebench("train", "tiny", "--print-config", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "width: 0.5" in proc.stdout
    missing = sparsebench("train", "nosuchconfig", "--print-config", cwd=tmp_path)
    assert missing.returncode == 2 and "config file not found: nosuchconfig" in missing.stderr


def test_the_command_lists_its_subcommands_and_rejects_others(tmp_path):
    bare = sparsebench(cwd=tmp_path)
    assert bare.returncode == 2 and all(c in bare.stderr for c in ("train", "sweep", "report", "paper"))
    unknown = sparsebench("swep", "fmnist_smoke", cwd=tmp_path)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "error: unknown command 'swep'; allowed: train, sweep, report, paper, list"
    helped = sparsebench("report", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "--paper" in helped.stdout  # sparsebench.report's own parser
