"""Sweeps on a real SLURM cluster (the one-node cluster of scripts/slurm_up.sh under `make test`).

Skipped only where SLURM cannot be had: no usable cluster and slurm_up.sh reporting that apt or
root are unusable (its exit code 3).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from sparsebench.storage import atomic, paths
from sparsebench import resolve
from sparsebench.launch import spec as sweep_spec
from sparsebench.launch.slurm import is_active, read_records, squeue_states
from sparsebench.sweep import main
from sparsebench.training import train

from .conftest import REPO, STRICT, needs_fmnist

LIMIT_S = 420  # per test: the requeue test takes one to three minutes, the others seconds
pytestmark = [pytest.mark.slurm, needs_fmnist, pytest.mark.timeout(LIMIT_S)]



def _node_usable() -> bool:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return any(s in ("idle", "mixed", "allocated", "completing") for s in out.stdout.split())


@pytest.fixture(scope="module")
def slurm_cluster():
    if shutil.which("sbatch") is None or not _node_usable():
        up = subprocess.run(["bash", str(REPO / "scripts" / "slurm_up.sh")], capture_output=True,
                            text=True, timeout=900)
        if up.returncode == 3 and not STRICT:
            pytest.skip("no SLURM here: scripts/slurm_up.sh could not install or start it "
                        f"({(up.stderr or up.stdout).strip().splitlines()[-1]})")
        assert up.returncode == 0 and _node_usable(), up.stdout + up.stderr
    return True


@pytest.fixture(autouse=True)
def _cancel_leftover_jobs():
    """A test that fails half-way leaves no job of its own running on the cluster."""
    root = paths.results_root()  # (a test may point SPARSEBENCH_RESULTS elsewhere for a while)
    yield
    ids = set()
    for records in root.glob("*/jobs/submitted.json"):
        ids |= {r["job_id"].split("_")[0] for r in (atomic.read_json(records) or {}).values()}
    if ids:
        subprocess.run(["scancel", *sorted(ids)], capture_output=True, timeout=30)


def _result(sweep: str, run_id: str) -> dict:
    return json.loads((paths.run_dir(sweep, run_id) / paths.RESULT).read_text())


def test_fmnist_smoke_is_one_array_job_and_a_second_launch_submits_nothing(slurm_cluster, capsys):
    # `auto` picks slurm where sbatch is on the PATH: what `make sweep SWEEP=fmnist_smoke` runs.
    assert main(["fmnist_smoke", "--executor", "auto", "--poll", "1"]) == 0
    out = capsys.readouterr().out
    assert "executor slurm: one SLURM array job of 3 tasks" in out
    sweep = sweep_spec.expand("fmnist_smoke")
    records = read_records("fmnist_smoke")
    assert set(records) == {c.run_id for c in sweep.cells}
    arrays = {r["job_id"].split("_")[0] for r in records.values()}
    assert len(arrays) == 1 and f"submitted array job {arrays.pop()}: 3 runs" in out
    assert {r["job_id"].split("_")[1] for r in records.values()} == {"0", "1", "2"}
    for cell in sweep.cells:
        result = _result("fmnist_smoke", cell.run_id)
        assert result["status"] == "completed" and result["final_test_acc"] > 20  # learnt something
    assert "3 runs: 3 completed" in out and "time: 3 runs took" in out

    t0 = time.monotonic()
    assert main(["fmnist_smoke", "--poll", "1"]) == 0
    took = time.monotonic() - t0
    out = capsys.readouterr().out
    assert "completed 3," in out and "nothing to submit" in out and "submitted" not in out
    assert read_records("fmnist_smoke") == records
    assert took < 20, f"a launch with nothing to do took {took:.1f} s"


def test_failed_runs_on_slurm_are_reported_then_retried_only_with_retry_failed(
        slurm_cluster, write_sweep, capsys):
    # data.root pointing nowhere: with --skip-data-check (data visible only on the compute
    # nodes) the launcher submits it and the job fails as soon as it starts
    path = write_sweep("sfail", {"base": "configs/fmnist_mlp.yaml",
                                 "overrides": {"epochs": 1, "data.train_subset": 256},
                                 "grid": {"data.root": [None, "/nonexistent/fmnist"]},
                                 "slurm": {"array_parallelism": 1, "mem_gb": 2}})
    good, bad = sweep_spec.expand(str(path)).cells

    assert main([str(path), "--skip-data-check", "--dry-run", "--executor", "slurm"]) == 0
    out = capsys.readouterr().out
    assert "one SLURM array job of 2 tasks" in out and "dry run: nothing submitted" in out
    assert not paths.results_root().exists() or not list(paths.results_root().rglob("*.json"))

    assert main([str(path), "--skip-data-check", "--executor", "slurm", "--poll", "1"]) == 1
    out = capsys.readouterr().out
    assert "submitted array job" in out and "1 run not completed" in out
    script, = paths.submitit_dir("sfail").glob("*_submission.sh")
    options = [l.split()[1] for l in script.read_text().splitlines() if l.startswith("#SBATCH")]
    assert {"--array=0-1%1", "--mem=2GB", "--time=60", "--cpus-per-task=1",
            "--signal=USR2@90"} <= set(options), options
    assert not [o for o in options if o.startswith("--gpus")], options  # none asked for
    assert _result("sfail", good.run_id)["status"] == "completed"
    failed = _result("sfail", bad.run_id)
    assert failed["status"] == "failed" and failed["error"]
    row, = [line for line in out.splitlines() if line.strip().startswith(bad.run_id)]
    assert failed["error"][:50] in row
    records = read_records("sfail")

    # Not retried: nothing submitted, the failure reported again.
    assert main([str(path), "--skip-data-check", "--poll", "1"]) == 1
    out = capsys.readouterr().out
    assert "failed or diverged (not retried) 1" in out and "nothing to submit" in out
    assert "submitted" not in out and bad.run_id in out.split("not completed")[1]
    assert read_records("sfail") == records

    assert main([str(path), "--skip-data-check", "--dry-run", "--retry-failed"]) == 0
    out = capsys.readouterr().out
    line, = [l for l in out.splitlines() if l.strip().startswith(bad.run_id)]
    assert line.split()[1] == "retry"
    assert "one SLURM array job of 1 task," in out

    log = paths.run_dir("sfail", bad.run_id) / paths.LOG
    attempts = log.read_text().count("failed:")
    good_result = _result("sfail", good.run_id)
    assert main([str(path), "--skip-data-check", "--retry-failed", "--poll", "1"]) == 1
    out = capsys.readouterr().out
    assert "to run 1" in out and "submitted array job" in out and ": 1 run (logs in" in out
    again = read_records("sfail")
    assert again[good.run_id] == records[good.run_id]
    assert again[bad.run_id]["job_id"] != records[bad.run_id]["job_id"]
    assert log.read_text().count("failed:") == attempts + 1  # it really ran again
    assert _result("sfail", good.run_id) == good_result


class HoldRelease(threading.Thread):
    """After a requeue SLURM holds the job for AuthInfo's cred_expire (120 s by default, 30 s
    under slurm_up.sh) before it may start again; shortening that hold only saves the test
    time: the requeue, the restart and the resume are SLURM's and the job's own. The hold is
    there so that the job's previous instance is gone from the node first (a job restarted at
    once can fail to launch), so it is shortened to ``WAIT_S`` and only while the node is no
    longer completing the previous instance."""

    WAIT_S = 8.0

    def __init__(self, job_id: str):
        super().__init__(daemon=True)
        self.job_id, self.stop, self.released = job_id, threading.Event(), 0
        self.held_since: float | None = None

    def run(self) -> None:
        while not self.stop.wait(1.0):
            out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", self.job_id.split("_")[0]],
                                 capture_output=True, text=True, timeout=30)
            held = any(line.split("|") == [self.job_id, "PENDING", "BeginTime"]
                       for line in out.stdout.split())
            if not held:
                self.held_since = None
                continue
            self.held_since = self.held_since or time.monotonic()
            nodes = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                                   timeout=30).stdout
            if time.monotonic() - self.held_since >= self.WAIT_S and "completing" not in nodes:
                subprocess.run(["scontrol", "update", f"jobid={self.job_id}", "starttime=now"],
                               capture_output=True, timeout=30)
                self.released += 1
                self.held_since = None


def _epochs_lasting(seconds: float, overrides: dict, scratch, monkeypatch) -> int:
    """Epochs of the run that train for about ``seconds`` on one thread here, from a 3-epoch
    run's wall_clock_s (its training time, without start-up)."""
    monkeypatch.setenv("SPARSEBENCH_RESULTS", str(scratch))
    torch.set_num_threads(1)
    cfg = resolve.load(REPO / "configs" / "fmnist_mlp.yaml",
                       [f"{k}={v}" for k, v in overrides.items()] + ["epochs=3", "progress=false"])
    result = train(cfg)
    assert result["status"] == "completed"
    per_epoch = result["wall_clock_s"] / 3
    return max(20, min(1000, math.ceil(seconds / per_epoch)))


@pytest.mark.timeout(600)  # at least two 1-minute allocations, and a reference run beside them
def test_a_run_longer_than_its_time_limit_is_requeued_and_resumes(slurm_cluster, write_sweep,
                                                                 tmp_path, monkeypatch):
    """A run of about 80 s under a 1-minute SLURM limit with USR2 20 s before it (longer than one
    allocation: the run trains on after the warning, so a shorter one could finish in it): SLURM checks
    time limits every 30 s, so the signal comes 10 to 40 s after the job starts, on a loaded
    node often during its start-up; the run trains on and requeues at its last epoch boundary
    before the limit (sparsebench.launch.requeue), and resumes from that epoch's checkpoint
    until done, with the numbers of an uninterrupted run. Ctrl-C of the launcher on
    the way leaves the job running and says how to reattach; the next launch reattaches to the
    job instead of submitting it again."""
    slurm_root = paths.results_root()
    overrides = {"data.train_subset": 8192, "method.name": "static", "density": 0.1}
    epochs = _epochs_lasting(80, overrides, tmp_path / "calibration", monkeypatch)
    monkeypatch.setenv("SPARSEBENCH_RESULTS", str(slurm_root))
    path = write_sweep("requeue", {
        "base": "configs/fmnist_mlp.yaml",
        "overrides": overrides,
        "grid": {"epochs": [epochs]},
        "slurm": {"time_min": 1, "signal_delay_s": 20, "max_timeouts": 30, "mem_gb": 2}})
    env = {**os.environ, "SPARSEBENCH_RESULTS": str(slurm_root), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "sparsebench.sweep", str(path), "--executor", "slurm",
               "--poll", "1"]
    launcher = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        for line in launcher.stdout:
            if line.startswith("submitted array job"):
                break
        launcher.send_signal(signal.SIGINT)  # Ctrl-C while it waits
        stdout, stderr = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 130, stderr
    assert "keep running" in stderr and "reattach" in stderr and str(path) in stderr
    cell, = sweep_spec.expand(str(path)).cells
    job_id = read_records("requeue")[cell.run_id]["job_id"]
    assert f"scancel {job_id.split('_')[0]}" in stderr
    assert is_active(squeue_states([job_id]).get(job_id))  # Ctrl-C left it queued or running

    release = HoldRelease(job_id)
    release.start()
    reattached = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
    try:
        # Meanwhile the reference: the same config uninterrupted in this process, one thread
        # like the SLURM job (cpus_per_task 1).
        monkeypatch.setenv("SPARSEBENCH_RESULTS", str(tmp_path / "reference"))
        torch.set_num_threads(1)
        reference = train(cell.config)
        assert reference["status"] == "completed"
        reference_metrics = (paths.run_dir("requeue", cell.run_id) / paths.METRICS).read_text()
        monkeypatch.setenv("SPARSEBENCH_RESULTS", str(slurm_root))
        stdout, stderr = reattached.communicate(timeout=LIMIT_S - 60)
    finally:
        release.stop.set()
        release.join()
        if reattached.poll() is None:
            reattached.kill()
    assert reattached.returncode == 0, stdout + stderr
    assert "running on SLURM 1, to run 0" in stdout and "submitted" not in stdout
    assert read_records("requeue")[cell.run_id]["job_id"] == job_id  # reattached, not resubmitted

    result = _result("requeue", cell.run_id)
    assert result["status"] == "completed" and result["epochs_completed"] == epochs
    log = (paths.run_dir("requeue", cell.run_id) / paths.LOG).read_text()
    assert log.count("requeued; resumes from the last epoch checkpoint") >= 1, log
    resumed = [int(l.split("after epoch ")[1]) for l in log.splitlines() if "resumed from checkpoint" in l]
    assert resumed and all(0 < e < epochs for e in resumed), log
    for key in ("final_test_acc", "best_test_acc", "final_train_loss", "actual_density",
                "train_flops", "steps"):
        assert result[key] == reference[key], key

    def curves(text):
        return [{k: row[k] for k in ("epoch", "step", "train_loss", "train_acc", "test_loss",
                                     "test_acc", "lr", "density")}
                for row in map(json.loads, text.splitlines())]

    metrics = (paths.run_dir("requeue", cell.run_id) / paths.METRICS).read_text()
    assert curves(metrics) == curves(reference_metrics)
