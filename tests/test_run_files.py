"""A run folder's files as docs/results.md describes them: final.pt reproduces the run's
final_test_acc on the run's own test data, steps.jsonl and metrics.jsonl count epochs alike,
a rerun after a kill leaves each TensorBoard step once, and a SIGTERM leaves a line in the log."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import sparsebench
from sparsebench import resolve
from sparsebench.config.schema import run_id
from sparsebench.storage import atomic, paths
from sparsebench.storage.run_files import read_metrics, read_steps
from sparsebench.training import Callback, Trainer, train
from sparsebench.training.tracking_callbacks import Tracking

from .conftest import REPO, needs_fmnist

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")
# 16 steps an epoch, a row in steps.jsonl every 4 steps.
SMALL = ["data.train_subset=1024", "data.batch_size=64", "epochs=2", "progress=false",
         "method.name=rigl", "method.interval=4", "density=0.1", "tracking.step_interval=4"]


def test_the_package_exports_its_readers():
    assert {"load_results", "load_metrics", "load_model", "load_test_data"} <= set(sparsebench.__all__)
    for name in sparsebench.__all__:
        assert callable(getattr(sparsebench, name))


@needs_fmnist
def test_final_pt_reproduces_final_test_acc_on_the_runs_own_test_data():
    cfg = resolve.load(BASE, SMALL + ["tracking.tensorboard=false", "data.test_batch_size=500"])
    result = train(cfg)
    assert result["status"] == "completed"
    run_dir = paths.run_dir(cfg.sweep, run_id(cfg))
    final = sparsebench.load_model(run_dir)
    assert final.evaluate() == pytest.approx(result["final_test_acc"], abs=1e-9)
    # The loader alone, by hand: normalized images in the run's test batch size.
    loader = sparsebench.load_test_data(run_dir)
    correct = count = 0
    for x, y in loader:
        assert x.shape[1:] == (1, 28, 28) and x.shape[0] <= 500
        correct += int((final.model(x).argmax(1) == y).sum())
        count += len(y)
    assert count == 10000 and 100.0 * correct / count == pytest.approx(result["final_test_acc"])
    assert abs(float(x.mean())) < 1.5  # normalized, not raw 0..255 pixels
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        sparsebench.load_test_data(run_dir / "nothing")


@needs_fmnist
def test_steps_and_metrics_count_epochs_from_one():
    cfg = resolve.load(BASE, SMALL + ["tracking.tensorboard=false"])
    assert train(cfg)["status"] == "completed"
    run_dir = paths.run_dir(cfg.sweep, run_id(cfg))
    steps, epochs = read_steps(run_dir / paths.STEPS), read_metrics(run_dir / paths.METRICS)
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert [(r["step"], r["epoch"], r["round_epoch"]) for r in steps] == [
        (s, 1 + (s > 16), 1 + (s > 16)) for s in range(4, 33, 4)]
    # the last step row of epoch N is at the step of metrics.jsonl's row of epoch N
    for row in epochs:
        assert max(r["step"] for r in steps if r["epoch"] == row["epoch"]) == row["step"]


def test_steps_files_of_older_versions_read_with_epochs_from_one(tmp_path):
    path = tmp_path / "steps.jsonl"
    old = [{"step": 4, "epoch": 0, "round": 0}, {"step": 20, "epoch": 1, "round": 0},
           {"step": 36, "epoch": 0, "round": 1}]
    new = {"step": 40, "epoch": 3, "round": 1, "round_epoch": 1}
    path.write_text("".join(json.dumps(r) + "\n" for r in [*old, new]))
    rows = read_steps(path)
    assert [(r["epoch"], r["round_epoch"]) for r in rows] == [(1, 1), (2, 2), (None, 1), (3, 1)]


class KillAt(Callback):
    """Stops the run at a step, as a kill would, after the trackers saw the steps before."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, step):
        if step.step == self.step:
            raise KeyboardInterrupt


@needs_fmnist
def test_a_run_killed_and_rerun_has_each_tensorboard_step_once(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = resolve.load(BASE, SMALL)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(KeyboardInterrupt):  # killed in epoch 2, its checkpoint after epoch 1
        Trainer(cfg, run_dir, callbacks=[Tracking(cfg, run_dir), KillAt(28)]).run()
    assert "stopped (Ctrl-C) in epoch 2/2 at step 28" in (run_dir / paths.LOG).read_text()
    time.sleep(1.1)  # a new event file name (it holds the time in seconds)
    assert Trainer(cfg, run_dir, callbacks=[Tracking(cfg, run_dir)]).run() == "completed"
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2
    events = EventAccumulator(str(run_dir))
    events.Reload()
    for tag in ("train/train_loss", "epoch/test_acc", "topology/itop_rate"):
        logged = [e.step for e in events.Scalars(tag)]
        assert logged == sorted(set(logged)), (tag, logged)  # each step once, in order
    assert [e.step for e in events.Scalars("train/train_loss")] == list(range(4, 33, 4))
    assert [e.step for e in events.Scalars("epoch/test_acc")] == [16, 32]


@needs_fmnist
def test_sigterm_leaves_a_line_in_the_log_and_exit_143(tmp_path):
    env = {**os.environ, "SPARSEBENCH_RESULTS": str(tmp_path / "results"), "PYTHONPATH": str(REPO)}
    args = [BASE, "data.train_subset=1024", "epochs=500", "progress=false",
            "tracking.tensorboard=false"]
    folder = subprocess.run([sys.executable, "-m", "sparsebench.train", *args, "--print-config"],
                            env=env, capture_output=True, text=True, check=True).stdout.split()[-1]
    proc = subprocess.Popen([sys.executable, "-m", "sparsebench.train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "results" / "adhoc" / "runs").exists() or not any(
                (p / paths.CHECKPOINT).is_file() for p in (tmp_path / "results" / "adhoc" / "runs").iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr
    log = (tmp_path / "results" / "adhoc" / "runs" / os.path.basename(folder) / paths.LOG).read_text()
    last = log.strip().splitlines()[-1]
    assert "stopped (SIGTERM) in epoch " in last and "resumes from the checkpoint after epoch" in last
    assert atomic.read_json(tmp_path / "results" / "adhoc" / "runs" / os.path.basename(folder)
                            / paths.RESULT) is None  # interrupted, not failed: it resumes
