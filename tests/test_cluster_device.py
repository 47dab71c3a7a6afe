"""A GPU cluster from a GPU-less login node: where the device is checked, and the sbatch fields.

No cluster needed: the SLURM half (the same checks on the node) is in test_cluster_slurm.py.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from sparsebench import resolve
from sparsebench.config.schema import ConfigError
from sparsebench.launch.executors import RunJob
from sparsebench.launch.slurm_spec import SlurmSpec
from sparsebench.storage import atomic, paths
from sparsebench.sweep import main as sweep_main
from sparsebench.training import run_folder
from sparsebench.training.device import check_device, slurm_gpu_allocation

from .conftest import REPO, needs_fmnist

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")

GPU_VARIABLES = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_GPUS",
                 "SLURM_GPUS_PER_NODE", "SLURM_GPUS_PER_TASK")


@pytest.fixture
def no_gpu_job(monkeypatch):
    for name in GPU_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("variable,value,allocated", [
    ("SLURM_JOB_GPUS", "0", True), ("SLURM_STEP_GPUS", "2,3", True),
    ("SLURM_GPUS_ON_NODE", "1", True), ("SLURM_GPUS_ON_NODE", "0", False),
    ("SLURM_GPUS_PER_NODE", "a100:2", True), ("SLURM_GPUS_PER_NODE", "a100:0", False),
    ("SLURM_JOB_GPUS", "", False), ("SLURM_GPUS", "N/A", False)])
def test_a_slurm_gpu_allocation_is_read_from_slurms_variables(no_gpu_job, monkeypatch, variable,
                                                              value, allocated):
    monkeypatch.setenv(variable, value)
    assert (slurm_gpu_allocation() == f"{variable}={value}") is allocated


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda"])
def test_in_a_gpu_job_without_cuda_every_device_is_refused_naming_the_allocation(
        no_gpu_job, monkeypatch, device):
    check_device(device) if device != "cuda" else None  # outside a GPU job: only cuda is refused
    monkeypatch.setenv("SLURM_JOB_GPUS", "0")
    with pytest.raises(ConfigError) as err:
        check_device(device)
    text = str(err.value)
    assert text.startswith(f"device: got '{device}' in a SLURM job that was allocated GPUs")
    assert "SLURM_JOB_GPUS=0" in text and "torch sees no CUDA device" in text
    assert "\n" not in text


@needs_fmnist
def test_a_run_with_slurm_job_gpus_and_no_cuda_exits_2_before_training(no_gpu_job, tmp_path):
    env = {**os.environ, "SLURM_JOB_GPUS": "0", "PYTHONPATH": str(REPO),
           "SPARSEBENCH_RESULTS": str(tmp_path / "results")}
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "sparsebench.train", "fmnist_mlp"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - t0
    assert out.returncode == 2, out.stderr
    line, = out.stderr.strip().splitlines()
    assert "device: got 'auto' in a SLURM job that was allocated GPUs (SLURM_JOB_GPUS=0)" in line
    assert not (tmp_path / "results").exists()  # nothing trained, nothing written
    assert took < 120, f"took {took:.0f} s"  # start-up only (generous for a loaded machine)


@needs_fmnist
def test_the_job_side_records_the_missing_gpu_in_result_json_and_log(no_gpu_job, monkeypatch):
    """What a SLURM task runs (RunJob): the run fails before loading data, with one line."""
    cfg = resolve.load(REPO / "configs" / "fmnist_mlp.yaml", ["epochs=1", "device=cuda"])
    with pytest.raises(ConfigError):
        RunJob()(cfg)
    result = atomic.read_json(run_folder(cfg) / paths.RESULT)
    assert result["status"] == "failed"
    assert result["error"].startswith("device: got 'cuda' but torch sees no CUDA device here")
    log = (run_folder(cfg) / paths.LOG).read_text()
    assert log.count("failed: device: got 'cuda'") == 1 and "Traceback" not in log
    assert not (run_folder(cfg) / paths.METRICS).exists()

    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "1")  # the same for `auto` inside a GPU job
    cfg = resolve.load(REPO / "configs" / "fmnist_mlp.yaml", ["epochs=1"])
    with pytest.raises(ConfigError):
        RunJob()(cfg)
    assert "SLURM_GPUS_ON_NODE=1" in atomic.read_json(run_folder(cfg) / paths.RESULT)["error"]


@needs_fmnist
def test_local_and_inline_sweeps_still_check_cuda_here(capsys):
    for executor in ("local", "inline"):
        with pytest.raises(SystemExit) as exit_:
            sweep_main(["fmnist_smoke", "device=cuda", "--executor", executor, "--dry-run"])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "device: got 'cuda' but torch sees no CUDA device here" in err[0]


# ---- the slurm: block's named sbatch fields ------------------------------------------------

def test_named_sbatch_fields_become_submitit_parameters():
    spec = SlurmSpec().overridden([
        ("slurm.account", "proj"), ("slurm.qos", "high"), ("slurm.constraint", "a100|h100"),
        ("slurm.exclude", "node[01-03]"), ("slurm.nodelist", "node07"),
        ("slurm.reservation", "talk"), ("slurm.gres", "gpu:a100:1"),
        ("slurm.mail_user", "me@example.org"), ("slurm.mail_type", "end"),
        ("slurm.comment", "rerun"), ("slurm.exclusive", True)])
    params = spec.submitit_parameters()
    assert {k: params[k] for k in ("slurm_account", "slurm_qos", "slurm_constraint",
                                   "slurm_exclude", "slurm_nodelist", "slurm_gres",
                                   "slurm_mail_user", "slurm_mail_type", "slurm_comment",
                                   "slurm_exclusive")} == {
        "slurm_account": "proj", "slurm_qos": "high", "slurm_constraint": "a100|h100",
        "slurm_exclude": "node[01-03]", "slurm_nodelist": "node07", "slurm_gres": "gpu:a100:1",
        "slurm_mail_user": "me@example.org", "slurm_mail_type": "END", "slurm_comment": "rerun",
        "slurm_exclusive": True}
    assert params["slurm_additional_parameters"] == {"reservation": "talk"}
    assert "slurm_account" not in SlurmSpec().submitit_parameters()  # unset: not given


@pytest.mark.parametrize("key,value,field", [
    ("slurm.account", "my project", "slurm.account"),
    ("slurm.qos", "a\n#SBATCH --x", "slurm.qos"),
    ("slurm.mail_type", "SOMETIMES", "slurm.mail_type"),
    ("slurm.runs_per_task", "0", "slurm.runs_per_task"),
    ("slurm.additional", {"account": "x"}, "slurm.additional"),
    ("slurm.acount", "x", "slurm.acount")])
def test_a_bad_sbatch_field_names_itself(key, value, field):
    with pytest.raises(ConfigError) as err:
        SlurmSpec().overridden([(key, value)])
    assert str(err.value).startswith(f"{field}:") and "\n" not in str(err.value)


def test_packing_is_refused_for_data_parallel_runs():
    with pytest.raises(ConfigError) as err:
        SlurmSpec().overridden([("slurm.runs_per_task", 2), ("slurm.tasks_per_node", 2)])
    assert str(err.value).startswith("slurm.runs_per_task: got 2; allowed: 1 for data-parallel")


def test_paper_cost_shows_gpu_hours_with_runs_sharing_a_gpu():
    from sparsebench.paper import cost

    alone, = cost.estimate(["paper_table3_epochs"])
    assert alone["runs_per_gpu"] == 1 and alone["gpu_hours_packed"] == alone["gpu_hours"] > 0
    packed, = cost.estimate(["paper_table3_epochs"], runs_per_gpu=4)
    assert packed["gpu_hours_packed"] == pytest.approx(alone["gpu_hours"] / 4)


# ---- the requeue at the time limit (sparsebench.launch.requeue) ---------------------------

class _Trainer:
    def __init__(self, epoch, epochs=10):
        from types import SimpleNamespace

        self.progress = SimpleNamespace(epoch=epoch, round=0)
        self.cfg, self.rounds = SimpleNamespace(epochs=epochs), 1


def test_a_preemption_requeues_at_once_a_time_limit_warning_at_the_last_epoch_boundary():
    import signal

    from sparsebench.launch.requeue import RequeueAtDeadline

    calls = []
    now = time.time()
    preempted = RequeueAtDeadline(lambda *a: calls.append("now"), 20, end_time=now + 3600)
    preempted.on_signal(signal.SIGUSR2, None)
    assert calls == ["now"] and preempted.deadline is None

    calls.clear()
    try:
        warned = RequeueAtDeadline(lambda *a: calls.append("requeue"), 20, end_time=now + 45)
        warned.on_signal(signal.SIGUSR2, None)  # 45 s left: the warning, 10 s margin
        assert calls == [] and warned.deadline == pytest.approx(now + 35)
        assert 30 < signal.getitimer(signal.ITIMER_REAL)[0] <= 35  # the deadline's alarm
        warned.last_epoch_end, warned.epoch_s = time.time() - 2, 0
        warned.on_epoch_end(_Trainer(3), {})  # 2 s epochs, 33 s left: train on
        assert calls == []
        warned.deadline = time.time() + 2.5  # the next epoch would not end in time
        warned.on_epoch_end(_Trainer(4), {})
        assert calls == ["requeue"] and signal.getitimer(signal.ITIMER_REAL)[0] == 0
        calls.clear()
        warned.on_epoch_end(_Trainer(10), {})  # the last epoch: the run ends, no requeue
        assert calls == []
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
