"""The package as a user installs it: a wheel built from the repository, installed into a fresh
virtual environment with no checkout on the path, runs a one-cell sweep and its report from an
empty folder through the ``sparsebench`` command (the built-in methods, sweeps and configs come
from inside the package, through importlib.resources); ``sparsebench --version``, ``list`` and
``paper cost`` work there, and figure 8 is drawn (its benchmark ships in the package).

To keep it fast and offline, the fresh environment installs only the wheel (``--no-deps``) and
sees the test environment's own site-packages (torch, pandas, ...) through a ``.pth`` path
line. Such a line adds the folder to ``sys.path`` without running that folder's own ``.pth``
files, so an editable install of the checkout there stays inactive; the test checks that
``sparsebench`` is imported from the fresh environment.
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from .conftest import REPO, needs_fmnist

pytestmark = pytest.mark.slow


def copy_checkout(target: Path) -> Path:
    """The repository's files (tracked or new, not ignored), so building leaves it untouched."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=False)
    if listed.returncode == 0 and listed.stdout:
        for name in filter(None, listed.stdout.decode().split("\0")):
            source = REPO / name
            if source.is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)
    else:  # not a git checkout (an unpacked sdist)
        shutil.copytree(REPO, target, ignore=shutil.ignore_patterns(
            ".venv*", "results", "build", "dist", "*.egg-info", "__pycache__", ".git"))
    return target


def fresh_venv(where: Path) -> Path:
    """A new venv (no system site-packages) whose sys.path ends with this one's site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    Path(site, "zz_test_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    return python


def clean_env(**extra: str) -> dict:
    """No checkout on the path and no user folders: only what the wheel installed."""
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and not k.startswith("SPARSEBENCH_")}
    return {**env, **extra}


@needs_fmnist
def test_wheel_runs_a_sweep_and_its_report_from_an_empty_folder(tmp_path):
    source = copy_checkout(tmp_path / "src")
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(dist), str(source)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    [wheel] = dist.glob("sparsebench-*.whl")

    python = fresh_venv(tmp_path / "venv")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                              "--no-deps", "-q", str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    command = tmp_path / "venv" / "bin" / "sparsebench"
    assert command.is_file()

    empty = tmp_path / "empty"
    empty.mkdir()
    env = clean_env(SPARSEBENCH_STRICT="0")
    where = subprocess.run([str(python), "-c", "import sparsebench, sparsebench.storage.paths as p; "
                            "print(sparsebench.__file__); print(p.builtin_dir('sweeps'))"],
                           cwd=empty, env=env, capture_output=True, text=True, check=True)
    module, sweeps_folder = where.stdout.split()
    assert Path(module).is_relative_to(tmp_path / "venv"), module
    assert Path(sweeps_folder).is_relative_to(tmp_path / "venv") and "_builtin" in sweeps_folder

    # One cell: static at density 0.1 on a small subset, one epoch.
    sweep = subprocess.run([str(command), "sweep", "fmnist_smoke", "method.name=static", "density=0.1",
                            "data.train_subset=2048", "--executor", "local", "--workers", "1"],
                           cwd=empty, env=env, capture_output=True, text=True, timeout=600)
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    assert "Traceback" not in sweep.stderr
    report = subprocess.run([str(command), "report", "fmnist_smoke"], cwd=empty, env=env,
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr
    assert "== fmnist_smoke: 1 runs (1 completed)" in report.stdout
    with open(empty / "results" / "fmnist_smoke" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["status"]) for r in rows] == [("static", "completed")]
    tables = empty / "results" / "fmnist_smoke" / "tables"
    assert (tables / "main.md").is_file() and "static" in (tables / "main.md").read_text()

    # The rest of the command: --version, list, paper cost, usage lines by the command's name.
    def run(*args, timeout=600):
        proc = subprocess.run([str(command), *args], cwd=empty, env=env, capture_output=True,
                              text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr and "warning" not in proc.stderr, proc.stderr
        return proc.stdout

    import sparsebench
    assert run("--version") == f"sparsebench {sparsebench.__version__}\n"
    listed = run("list")
    builtin = Path(sweeps_folder).parent
    for kind, name in (("sweeps", "fmnist_smoke.yaml"), ("configs", "fmnist_mlp.yaml"),
                       ("methods", "rigl.py"), ("protocols", "gse_paper.yaml")):
        assert str(builtin / kind / name) in listed, (kind, listed)
    cost = run("paper", "cost", "paper_table4_dense_vit").strip().splitlines()
    assert cost[-1].split()[:2] == ["total", "12"], cost
    assert run("sweep", "-h").startswith("usage: sparsebench sweep ")
    # Figure 8 from the installed package: its benchmark (tiny products), then the paper report.
    run("paper", "kernels", "--widths", "64", "128", "--sparsities", "0.9", "0.99", "--extra",
        "--variants", "dense", "csr", "--reps", "1", "--budget-s", "0.01",
        "--out", "results/paper/kernels/sparse_layer_cpu.csv")
    run("report", "--paper")
    fig8 = empty / "results" / "paper" / "fig8.png"
    assert fig8.is_file() and fig8.stat().st_size > 0
    index = (empty / "results" / "paper" / "index.md").read_text()
    assert "- state: complete" in index.split("## fig8\n", 1)[1].split("\n## ", 1)[0]

    # `python -m sparsebench.*` still works there, and the methods are the built-in ones.
    listed = subprocess.run([str(python), "-m", "sparsebench.train", "fmnist_mlp", "method.name=rigl",
                             "--print-config"], cwd=empty, env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "name: rigl" in listed.stdout
    assert sorted(os.listdir(empty)) == ["results"]  # nothing else written in the user's folder
