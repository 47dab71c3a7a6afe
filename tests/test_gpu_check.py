"""`make gpu-check` (scripts/gpu_check.py): one line and exit 2 without CUDA; on the CPU, with
``--device cpu``, one tiny cell, the sparse engine and the one-rank data-parallel run end to
end, the report written, and nothing imported that a GPU machine lacks (submitit)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from .conftest import REPO

SCRIPT = REPO / "scripts" / "gpu_check.py"
# Run the script with submitit made unimportable, as on the GPU machine.
WITHOUT_SUBMITIT = ("import runpy, sys; sys.modules['submitit'] = None; sys.argv = sys.argv[1:]; "
                    "runpy.run_path(sys.argv[0], run_name='__main__')")


def run(args, tmp_path, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(REPO), "SPARSEBENCH_RESULTS": str(tmp_path / "results"),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", WITHOUT_SUBMITIT, str(SCRIPT), *args],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=timeout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_without_cuda_it_exits_2_with_one_line(tmp_path):
    out = run([], tmp_path, timeout=120)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "no CUDA device" in out.stderr
    assert not (tmp_path / "results").exists()
    make = subprocess.run(["make", "-s", "gpu-check", f"PYTHON={sys.executable}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SPARSEBENCH_RESULTS": str(tmp_path / "results")})
    assert make.returncode != 0 and "no CUDA device" in make.stderr


def test_an_unknown_method_is_one_line_and_exit_2(tmp_path):
    out = run(["--device", "cpu", "--methods", "rigel"], tmp_path, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        out.stderr.strip()] and "'rigel'" in out.stderr


@pytest.mark.timeout(600)
def test_a_tiny_check_on_the_cpu_writes_the_report(tmp_path):
    out = run(["--device", "cpu", "--models", "simple_vit_tiny", "--width", "0.0625",
               "--methods", "static", "--amp", "bf16", "--train", "100", "--test", "50",
               "--batch", "50", "--no-benchmarks", "--compile-backend", "aot_eager"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    folder = tmp_path / "results" / "gpu_check"
    runs = json.loads((folder / "report.json").read_text())["runs"]
    assert [r["run"] for r in runs] == [
        "simple_vit_tiny static amp=bf16", "simple_vit_tiny static amp=bf16 compiled",
        "simple_vit_tiny static sparse engine", "ddp gloo 1 rank", "ddp gloo 1 rank compiled"]
    assert all(r["status"] == "completed" and r["epoch_time_s"] > 0 for r in runs)
    assert all(r["precision"]["amp"] == "bf16" and r["precision"]["channels_last"] for r in runs)
    assert [r["compiled"] for r in runs] == [False, True, False, False, True]
    assert runs[1]["compiled_graphs"] >= 1 and runs[4]["compiled_graphs"] >= 1
    table = (folder / "report.md").read_text()
    # the 5 runs, and the compiled ViT cell once more in the compiled-beside-eager table (the
    # DDP run is compiled too, but it is no compiled_cell: it has no eager twin at its amp)
    assert table.count("| completed |") == 6 and "NOT CIFAR" in table
    assert "Compiled cells" in table
    assert "| simple_vit_tiny static amp=bf16 compiled | completed |" in table
