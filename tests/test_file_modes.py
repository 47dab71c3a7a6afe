"""Every file a run and a sweep write follows the umask: under umask 022 a labmate on shared
scratch can read them (group and others r), under 077 nobody else can."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, needs_fmnist

SMALL = ["data.train_subset=1024", "data.batch_size=128", "epochs=1", "progress=false"]


def with_umask(mask: int, args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=600, preexec_fn=lambda: os.umask(mask))


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
            for p in root.rglob("*") if p.is_file()}


@needs_fmnist
@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o077, 0o600)])
def test_run_and_sweep_files_follow_the_umask(tmp_path, mask, expected):
    results = tmp_path / "results"
    env = {**os.environ, "SPARSEBENCH_RESULTS": str(results)}
    run = with_umask(mask, ["-m", "sparsebench.train", "configs/fmnist_mlp.yaml", "method.name=set",
                            "sweep=single", *SMALL], env)
    assert run.returncode == 0, run.stderr
    sweep = with_umask(mask, ["-m", "sparsebench.sweep", "fmnist_smoke", "method.name=static", "density=0.1",
                              *SMALL, "--executor", "local", "--workers", "1"], env)  # one run
    assert sweep.returncode == 0, sweep.stderr
    report = with_umask(mask, ["-m", "sparsebench.report", "fmnist_smoke"], env)
    assert report.returncode == 0, report.stderr

    found = modes(results)
    names = {Path(name).name for name in found}
    # What a run, a sweep and its report leave (checkpoints and lock files are removed at the end).
    assert {"config.yaml", "result.json", "metrics.jsonl", "log", "summary.csv", "main.md",
            "layer_sparsity.png"} <= names, sorted(names)
    assert any(name.startswith("single/runs/") for name in found)
    wrong = {name: oct(mode) for name, mode in found.items() if mode != expected}
    assert not wrong, f"expected {oct(expected)} under umask {oct(mask)}: {wrong}"
