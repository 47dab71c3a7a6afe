"""torch and torchvision together: the pairs are named in one place, `make setup VISION=1` reads
them, and preflight stops an ImageNet run or sweep before anything is submitted when torchvision
is missing or does not import beside the installed torch, naming the pair to install."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from sparsebench.training import preflight
from sparsebench import resolve, torch_versions
from sparsebench.config.schema import ConfigError

from .conftest import REPO

SCRIPT = REPO / "sparsebench" / "torch_versions.py"


def test_each_torch_release_has_its_torchvision():
    assert torch_versions.torchvision_for("2.13.0+cpu") == "0.28"
    assert torch_versions.torchvision_for("2.14.1") == "0.29"
    assert torch_versions.torchvision_for("2.99.0") is None
    assert torch_versions.install_line("2.13.0") == "pip install torch==2.13.0 torchvision==0.28.*"
    assert torch_versions.install_line("2.13.0+cpu").endswith(f"--index-url {torch_versions.CPU_INDEX}")
    assert torch_versions.pair_problem("2.14.1", "0.29.1+cu130") is None
    assert "0.28.0" in torch_versions.pair_problem("2.14.1", "0.28.0")
    # The tested pair is one of the pairs.
    tested = dict(part.split("==") for part in torch_versions.TESTED.split())
    assert torch_versions.torchvision_for(tested["torch"]) == torch_versions.release(tested["torchvision"])


def test_the_makefile_helper_runs_on_the_standard_library_alone(tmp_path):
    # As `make setup VISION=1` runs it: a plain interpreter, before anything is installed
    # (-S: no site-packages at all, so no torch).
    def script(*args):
        return subprocess.run([sys.executable, "-S", str(SCRIPT), *args], capture_output=True,
                              text=True, cwd=tmp_path)

    ok = script("torchvision-for", "torch==2.13.0 --index-url https://example.invalid")
    assert ok.returncode == 0 and ok.stdout.strip() == "torchvision==0.28.*"
    assert script("tested").stdout.strip() == torch_versions.TESTED
    bad = script("torchvision-for", "torch>=2.1")
    assert bad.returncode == 2 and "names no torch release" in bad.stderr


def test_preflight_rejects_imagenet_without_torchvision(monkeypatch):
    cfg = resolve.load(REPO / "configs" / "imagenet_resnet50.yaml")
    monkeypatch.setitem(sys.modules, "torchvision", None)  # unimportable, installed or not
    torch_versions.vision_problem.cache_clear()
    try:
        with pytest.raises(ConfigError) as err:
            preflight.check(cfg)
    finally:
        torch_versions.vision_problem.cache_clear()
    assert err.value.field == "data.name"
    assert f"beside torch {torch.__version__}" in str(err.value)
    assert torch_versions.install_line(torch.__version__) in str(err.value)


def test_a_broken_torchvision_stops_an_imagenet_sweep_before_submitting(tmp_path):
    fake = tmp_path / "fake" / "torchvision"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    env = {**os.environ, "SPARSEBENCH_RESULTS": str(tmp_path / "results"),
           "PYTHONPATH": os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "sparsebench", "sweep", "imagenet_resnet50",
                           "--executor", "local"], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "data.name: got 'imagenet', which needs torchvision" in line
    assert "fails to import beside torch" in line and "operator torchvision::nms" in line
    assert torch_versions.install_line(torch.__version__) in line
    assert not (tmp_path / "results").exists()
