"""A data-parallel run on the local one-node SLURM cluster: a sweep's ``slurm: {tasks_per_node: 2}``
makes submitit start 2 tasks that train one run on 2 ranks (gloo), and a requeue of the job
resumes both ranks from rank 0's epoch checkpoint."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from sparsebench.storage import paths
from sparsebench.launch import spec as sweep_spec
from sparsebench.launch.slurm import read_records
from sparsebench.training import train

from .conftest import REPO, needs_fmnist
from .test_sweep_slurm import (LIMIT_S, HoldRelease, _cancel_leftover_jobs,  # noqa: F401 (fixtures)
                               _result, slurm_cluster)

pytestmark = [pytest.mark.slurm, needs_fmnist, pytest.mark.timeout(LIMIT_S)]


def _wait_for(predicate, timeout_s: float, what: str, launcher: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert launcher.poll() is None, f"the sweep ended while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_a_two_task_run_trains_on_two_ranks_and_a_requeue_resumes_it(
        slurm_cluster, write_sweep, tmp_path, monkeypatch):
    slurm_root = paths.results_root()
    overrides = {"data.train_subset": 4096, "method.name": "static", "density": 0.1}
    epochs = 30  # about a second each on 2 ranks here: the requeue comes after the first
    monkeypatch.setenv("SPARSEBENCH_RESULTS", str(slurm_root))
    path = write_sweep("ddp", {
        "base": "configs/fmnist_mlp.yaml", "overrides": overrides, "grid": {"epochs": [epochs]},
        "slurm": {"tasks_per_node": 2, "cpus_per_task": 1, "mem_gb": 2, "time_min": 10}})
    cell, = sweep_spec.expand(str(path)).cells
    run_dir = paths.run_dir("ddp", cell.run_id)
    env = {**os.environ, "SPARSEBENCH_RESULTS": str(slurm_root), "PYTHONUNBUFFERED": "1"}
    launcher = subprocess.Popen([sys.executable, "-m", "sparsebench.sweep", str(path),
                                 "--executor", "slurm", "--poll", "1"],
                                cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    release = None
    try:
        _wait_for(lambda: cell.run_id in read_records("ddp"), 120, "the submission", launcher)
        job_id = read_records("ddp")[cell.run_id]["job_id"]
        _wait_for(lambda: (run_dir / paths.METRICS).is_file(), 180, "the first epoch", launcher)
        requeue = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True,
                                 timeout=30)
        assert requeue.returncode == 0, requeue.stderr
        release = HoldRelease(job_id)
        release.start()
        stdout, stderr = launcher.communicate(timeout=LIMIT_S - 120)
    finally:
        if release is not None:
            release.stop.set()
            release.join()
        if launcher.poll() is None:
            launcher.kill()
            launcher.communicate()
    assert launcher.returncode == 0, stdout + stderr
    assert "each run data-parallel on 2 ranks" in stdout

    script, = paths.submitit_dir("ddp").glob("*_submission.sh")
    options = [l.split()[1] for l in script.read_text().splitlines() if l.startswith("#SBATCH")]
    assert {"--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1"} <= set(options), options

    result = _result("ddp", cell.run_id)
    assert result["status"] == "completed" and result["epochs_completed"] == epochs
    assert result["world_size"] == 2 and len(result["devices"]) == 2
    log = (run_dir / paths.LOG).read_text()
    resumed = [int(l.split("after epoch ")[1]) for l in log.splitlines() if "resumed from checkpoint" in l]
    assert resumed and all(0 < e < epochs for e in resumed), log

    # The same run on one process, uninterrupted.
    monkeypatch.setenv("SPARSEBENCH_RESULTS", str(tmp_path / "reference"))
    torch.set_num_threads(1)
    reference = train(cell.config)
    assert reference["mask_sha256"] == result["mask_sha256"]
    assert result["train_flops"] == reference["train_flops"] and result["steps"] == reference["steps"]
    curves = [json.loads(l)["train_loss"] for l in (run_dir / paths.METRICS).read_text().splitlines()]
    ref_dir = paths.run_dir("ddp", cell.run_id)
    ref_curves = [json.loads(l)["train_loss"] for l in (ref_dir / paths.METRICS).read_text().splitlines()]
    drift = [abs(a - b) / b for a, b in zip(curves, ref_curves)]
    print("relative train-loss difference per epoch, 2 ranks vs 1 process:", drift)
    # The first epochs agree to float precision; over tens of epochs float32 rounding (two
    # half-batch gradients averaged vs one batch's) drifts as it would between two machines.
    assert max(drift[:3]) < 1e-4, drift
    assert abs(result["final_test_acc"] - reference["final_test_acc"]) <= 1.0
