"""A plug-in fails alone: a method file that does not import, or that registers a name another
file already has, stops only the runs that ask for it, with one line naming the file and the
cause (exit 2); every other method still runs."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import REPO

BROKEN = "from sparsebench.methods import Method\n\nclass Broken(Method)\n    name = 'broken'\n"
CLASHING = '''from sparsebench.methods import Method, register


@register
class NotRigL(Method):
    name = "rigl"


@register
class Fine(Method):
    name = "fine_plugin"
'''


@pytest.fixture
def plugin_env(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "broken.py").write_text(BROKEN)
    (folder / "clashing.py").write_text(CLASHING)
    return {**os.environ, "SPARSEBENCH_METHODS_PATH": str(folder),
            "SPARSEBENCH_RESULTS": str(tmp_path / "results")}, folder


def train(env: dict, *overrides: str) -> subprocess.CompletedProcess:
    # The config by name: found among the configs folders (here the built-in one).
    return subprocess.run([sys.executable, "-m", "sparsebench.train", "fmnist_mlp", *overrides,
                           "--print-config"], capture_output=True, text=True, env=env, timeout=300,
                          cwd=REPO)


def test_other_methods_run_beside_a_broken_and_a_clashing_file(plugin_env):
    env, _ = plugin_env
    for name in ("static", "set", "fine_plugin"):
        proc = train(env, f"method.name={name}")
        assert proc.returncode == 0, proc.stderr
        assert f"name: {name}" in proc.stdout
        # Nothing is silent: one warning line per file that did not load or clashes.
        broken, clash = proc.stderr.strip().splitlines()
        assert broken.startswith("warning: method file ") and "broken.py did not load" in broken
        assert clash.startswith("warning: method 'rigl' is registered by more than one file")


def test_asking_for_a_name_claimed_twice_is_one_line(plugin_env):
    env, folder = plugin_env
    proc = train(env, "method.name=rigl")
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()  # the error alone: no warning repeats it
    assert "method.name" in line and "'rigl' is registered by more than one file" in line
    assert str(folder / "clashing.py") in line and "rigl.py" in line


def test_asking_for_the_broken_files_method_names_the_file_and_cause(plugin_env):
    env, folder = plugin_env
    proc = train(env, "method.name=broken")
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()  # the error alone: no warning repeats it
    assert "unknown method 'broken'" in line and "static" in line  # the allowed names
    assert f"{folder / 'broken.py'} did not load (SyntaxError: " in line and "(line 3)" in line
    assert "rigl" not in line.split("allowed: ")[1].split(";")[0].split(", ")


def test_a_sweep_over_a_clashing_name_stops_before_submitting(plugin_env, write_sweep, tmp_path):
    env, _ = plugin_env
    path = write_sweep("clash", {"base": str(REPO / "configs" / "fmnist_mlp.yaml"),
                                 "grid": {"method.name": ["static", "rigl"]}})
    proc = subprocess.run([sys.executable, "-m", "sparsebench.sweep", str(path), "--executor",
                           "inline"], capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()  # the error alone: no warning repeats it
    assert "'rigl' is registered by more than one file" in line
    assert not (tmp_path / "results" / "clash" / "runs").exists()
