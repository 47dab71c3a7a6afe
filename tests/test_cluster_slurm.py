"""A GPU cluster's paths on the real one-node SLURM cluster (scripts/slurm_up.sh): submitting
without a GPU, the named sbatch fields, a requeue that holds when its `scontrol` is slow, and
several runs per task."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sparsebench.launch import spec as sweep_spec
from sparsebench.launch.slurm import read_records, squeue_states, is_active
from sparsebench.storage import atomic, paths
from sparsebench.sweep import main

from .conftest import REPO, needs_fmnist
from .test_sweep_slurm import (LIMIT_S, HoldRelease, _cancel_leftover_jobs,  # noqa: F401
                               _epochs_lasting, slurm_cluster)

pytestmark = [pytest.mark.slurm, needs_fmnist, pytest.mark.timeout(LIMIT_S)]


def _result(sweep: str, run_id: str) -> dict:
    return json.loads((paths.run_dir(sweep, run_id) / paths.RESULT).read_text())


def _sbatch_options(sweep: str) -> list[str]:
    options = []
    for script in paths.submitit_dir(sweep).glob("*_submission.sh"):
        options += [l.split(None, 1)[1] for l in script.read_text().splitlines()
                    if l.startswith("#SBATCH")]
    return options


def _wait(predicate, what: str, deadline_s: float = 240.0, every_s: float = 1.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_a_cuda_sweep_is_submitted_from_a_gpu_less_host_and_checked_on_the_node(
        slurm_cluster, write_sweep, capsys):
    assert main(["fmnist_smoke", "device=cuda", "--executor", "slurm", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "device: cuda: checked on the node where each run starts, not here" in out
    assert "dry run: nothing submitted" in out

    path = write_sweep("nocuda", {"base": "configs/fmnist_mlp.yaml",
                                  "overrides": {"epochs": 1, "device": "cuda"}, "grid": {"seed": [0]},
                                  "slurm": {"mem_gb": 2, "comment": "sparsebench-test"}})
    assert main([str(path), "--executor", "slurm", "--poll", "1"]) == 1
    out = capsys.readouterr().out
    cell, = sweep_spec.expand(str(path)).cells
    result = _result("nocuda", cell.run_id)
    assert result["status"] == "failed"
    assert result["error"].startswith("device: got 'cuda' but torch sees no CUDA device here")
    assert result["error"][:50] in out  # the sweep's table of failures shows the line
    log = (paths.run_dir("nocuda", cell.run_id) / paths.LOG).read_text()
    assert "failed: device: got 'cuda'" in log
    assert not (paths.run_dir("nocuda", cell.run_id) / paths.METRICS).exists()  # never trained
    assert "--comment=sparsebench-test" in _sbatch_options("nocuda")


def test_named_sbatch_fields_appear_in_the_dry_run_and_the_submission(slurm_cluster, capsys):
    assert main(["fmnist_smoke", "slurm.account=x", "slurm.qos=y", "--executor", "slurm",
                 "--dry-run"]) == 0
    line, = [l for l in capsys.readouterr().out.splitlines() if l.startswith("executor slurm")]
    assert "slurm_account=x" in line and "slurm_qos=y" in line
    with pytest.raises(SystemExit) as exit_:
        main(["fmnist_smoke", "slurm.account=two words", "--executor", "slurm", "--dry-run"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "slurm.account: got 'two words'" in err[0]


def _slow_scontrol(folder: Path, pause_s: float) -> Path:
    """An `scontrol` that lingers ``pause_s`` after a requeue, as a loaded node's does while
    it waits for its reply: the requeue's SIGTERM reaches it still running."""
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "scontrol"
    wrapper.write_text(f"#!/bin/sh\n{shutil.which('scontrol')} \"$@\"\nrc=$?\n"
                       f"[ \"$1\" = requeue ] && sleep {pause_s}\nexit $rc\n")
    wrapper.chmod(0o755)
    return folder


def test_a_requeue_holds_when_scontrol_is_still_running_as_the_job_is_stopped(
        slurm_cluster, write_sweep, tmp_path, monkeypatch, capsys):
    """The cause of the requeue that failed under load: `scontrol requeue`, run from inside the
    job, is itself sent the requeue's SIGTERM when it has not exited yet. Preemption (USR2 sent
    by hand, as a preempting scheduler does) makes the moment deterministic."""
    bin_dir = _slow_scontrol(tmp_path / "slowbin", 3)
    overrides = {"data.train_subset": 4096, "method.name": "static", "density": 0.1}
    slurm_root = paths.results_root()
    epochs = _epochs_lasting(40, overrides, tmp_path / "calibration", monkeypatch)
    monkeypatch.setenv("SPARSEBENCH_RESULTS", str(slurm_root))
    path = write_sweep("slowrq", {
        "base": "configs/fmnist_mlp.yaml", "overrides": overrides, "grid": {"epochs": [epochs]},
        "slurm": {"time_min": 30, "mem_gb": 2, "setup": [f"export PATH={bin_dir}:$PATH"]}})
    cell, = sweep_spec.expand(str(path)).cells
    assert main([str(path), "--executor", "slurm", "--no-wait"]) == 0
    capsys.readouterr()
    job_id = read_records("slowrq")[cell.run_id]["job_id"]
    metrics = paths.run_dir("slowrq", cell.run_id) / paths.METRICS
    _wait(lambda: metrics.is_file() and metrics.read_text().count("\n") >= 2, "two epochs")
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
    release = HoldRelease(job_id)
    release.start()
    try:
        assert main([str(path), "--executor", "slurm", "--poll", "1"]) == 0  # reattaches
    finally:
        release.stop.set()
        release.join()
    result = _result("slowrq", cell.run_id)
    assert result["status"] == "completed" and result["epochs_completed"] == epochs
    log = (paths.run_dir("slowrq", cell.run_id) / paths.LOG).read_text()
    assert "requeued; resumes from the last epoch checkpoint" in log and "failed" not in log
    assert "resumed from checkpoint" in log
    logs = "".join(p.read_text() for p in paths.submitit_dir("slowrq").glob("*_log.*"))
    assert "Requeued job" in logs and "CalledProcessError" not in logs  # after the 3 s pause


def _curves(sweep: str, run_id: str) -> list[dict]:
    rows = map(json.loads, (paths.run_dir(sweep, run_id) / paths.METRICS).read_text().splitlines())
    return [{k: r[k] for k in ("epoch", "step", "train_loss", "test_acc", "density")} for r in rows]


def test_two_runs_per_task_match_one_run_per_task_and_a_cancelled_task_resumes_both(
        slurm_cluster, write_sweep, tmp_path, monkeypatch, capsys):
    overrides = {"data.train_subset": 2048, "method.name": "static"}
    epochs = _epochs_lasting(25, overrides, tmp_path / "calibration", monkeypatch)
    spec = {"base": "configs/fmnist_mlp.yaml", "overrides": {**overrides, "epochs": epochs},
            "grid": {"density": [0.1, 0.05], "seed": [0, 1]},
            "slurm": {"mem_gb": 2, "cpus_per_task": 1}}
    one = write_sweep("packed", spec)
    two = write_sweep("packed", {**spec, "slurm": {"mem_gb": 2, "cpus_per_task": 2,
                                                   "runs_per_task": 2}})
    cells = sweep_spec.expand(str(one)).cells
    assert [c.run_id for c in cells] == [c.run_id for c in sweep_spec.expand(str(two)).cells]

    # One run per task: the reference.
    monkeypatch.setenv("SPARSEBENCH_RESULTS", str(tmp_path / "one"))
    assert main([str(one), "--executor", "slurm", "--poll", "1"]) == 0
    reference = {c.run_id: (_result("packed", c.run_id), _curves("packed", c.run_id)) for c in cells}

    # Two per task: 4 runs in 2 tasks; the first task cancelled while both its runs train.
    monkeypatch.setenv("SPARSEBENCH_RESULTS", str(tmp_path / "two"))
    assert main([str(two), "--executor", "slurm", "--dry-run"]) == 0
    assert "one SLURM array job of 2 tasks (4 runs, up to 2 side by side in each task)" in \
        capsys.readouterr().out
    assert main([str(two), "--executor", "slurm", "--no-wait"]) == 0
    records = read_records("packed")
    jobs = [records[c.run_id]["job_id"] for c in cells]
    assert len({j.split("_")[0] for j in jobs}) == 1 and jobs[0] == jobs[1] != jobs[2] == jobs[3]
    first = jobs[0]

    def both_trained_an_epoch():
        return all((paths.run_dir("packed", c.run_id) / paths.METRICS).is_file() for c in cells[:2])

    _wait(both_trained_an_epoch, "both runs of the first task to finish an epoch")
    subprocess.run(["scancel", first], check=True, timeout=30)
    _wait(lambda: not is_active(squeue_states([first]).get(first)), "the task to end")
    assert all(atomic.read_json(paths.run_dir("packed", c.run_id) / paths.RESULT) is None
               for c in cells[:2])  # stopped mid-run

    # The same command again: waits for the second task, resubmits the first task's two runs.
    assert main([str(two), "--executor", "slurm", "--poll", "1"]) == 0
    out = capsys.readouterr().out
    assert "submitted array job" in out
    for cell in cells[:2]:
        log = (paths.run_dir("packed", cell.run_id) / paths.LOG).read_text()
        assert "resumed from checkpoint" in log, log
    for cell in cells:
        result, curves = _result("packed", cell.run_id), _curves("packed", cell.run_id)
        ref_result, ref_curves = reference[cell.run_id]
        assert result["status"] == "completed"
        for key in ("final_test_acc", "best_test_acc", "final_train_loss", "actual_density",
                    "steps"):
            assert result[key] == ref_result[key], (cell.run_id, key)
        assert curves == ref_curves


def test_a_preempted_task_of_two_runs_requeues_and_both_resume(slurm_cluster, write_sweep,
                                                              tmp_path, monkeypatch, capsys):
    """Each run of a packed task keeps its own checkpoint across the task's requeue."""
    overrides = {"data.train_subset": 2048, "method.name": "static"}
    slurm_root = paths.results_root()
    epochs = _epochs_lasting(30, overrides, tmp_path / "calibration", monkeypatch)
    monkeypatch.setenv("SPARSEBENCH_RESULTS", str(slurm_root))
    path = write_sweep("packrq", {
        "base": "configs/fmnist_mlp.yaml", "overrides": {**overrides, "epochs": epochs},
        "grid": {"density": [0.1, 0.05]},
        "slurm": {"time_min": 30, "mem_gb": 2, "cpus_per_task": 2, "runs_per_task": 2}})
    cells = sweep_spec.expand(str(path)).cells
    assert main([str(path), "--executor", "slurm", "--no-wait"]) == 0
    job_id, = {read_records("packrq")[c.run_id]["job_id"] for c in cells}
    metrics = [paths.run_dir("packrq", c.run_id) / paths.METRICS for c in cells]
    _wait(lambda: all(m.is_file() and m.read_text().count("\n") >= 2 for m in metrics),
          "two epochs of both runs")
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
    release = HoldRelease(job_id)
    release.start()
    try:
        assert main([str(path), "--executor", "slurm", "--poll", "1"]) == 0
    finally:
        release.stop.set()
        release.join()
    for cell in cells:
        result = _result("packrq", cell.run_id)
        assert result["status"] == "completed" and result["epochs_completed"] == epochs
        log = (paths.run_dir("packrq", cell.run_id) / paths.LOG).read_text()
        assert "requeued with the runs sharing its task" in log and "resumed from checkpoint" in log
    assert read_records("packrq")[cells[0].run_id]["job_id"] == job_id  # the same job, requeued
