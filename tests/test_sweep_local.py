"""The local executor: fmnist_smoke in a pool of processes, same results as in-process runs;
a worker that dies fails its run without holding up the others; Ctrl-C stops cleanly."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from sparsebench.launch import local_pool, spec as sweep_spec
from sparsebench.storage import paths
from sparsebench.launch.executors import run_inline
from sparsebench.launch.local_pool import run_local
from sparsebench.sweep import main

from .conftest import REPO, needs_fmnist

# pytest-timeout: only a hang gets near this
pytestmark = [needs_fmnist, pytest.mark.timeout(180)]



def test_local_executor_runs_fmnist_smoke_on_every_core_one_thread_each(capsys, tmp_path,
                                                                       monkeypatch):
    seen = []
    real = local_pool.run_local

    def spy(*args, **kwargs):
        for outcome in real(*args, **kwargs):
            seen.append(outcome)
            yield outcome

    monkeypatch.setattr(local_pool, "run_local", spy)
    assert main(["fmnist_smoke", "--executor", "local"]) == 0  # --workers: every core by default
    out = capsys.readouterr().out
    cores = len(os.sched_getaffinity(0))
    procs = min(cores, 3)
    assert (f"3 runs in {procs} local processes at once, one torch thread each" if procs > 1
            else "3 runs one after another in a local process, one torch thread") in out
    assert "3 runs: 3 completed" in out
    assert len(seen) == 3 and all(o.threads == 1 for o in seen), seen
    assert "time: 3 runs took " in out and "their training alone adds up to" in out
    sweep = sweep_spec.expand("fmnist_smoke")
    local = {c.run_id: json.loads((paths.run_dir("fmnist_smoke", c.run_id) / paths.RESULT).read_text())
             for c in sweep.cells}
    assert all(r["status"] == "completed" for r in local.values())

    # The same run in this process, one thread like a worker: the same numbers, bit for bit.
    monkeypatch.setenv("SPARSEBENCH_RESULTS", str(tmp_path / "inline"))
    torch.set_num_threads(1)
    cell = next(c for c in sweep.cells if c.config.method.name == "static")
    outcome, = run_inline([cell])
    assert outcome.status == "completed"
    inline = json.loads((paths.run_dir("fmnist_smoke", cell.run_id) / paths.RESULT).read_text())
    for key in ("final_test_acc", "final_train_loss", "actual_density", "train_flops"):
        assert inline[key] == local[cell.run_id][key], key


def test_a_worker_that_dies_fails_its_run_and_the_others_go_on(write_sweep):
    # The first run is long (it is killed within a second of starting), the second one short.
    path = write_sweep("die", {"base": "configs/fmnist_mlp.yaml",
                               "overrides": {"data.train_subset": 2048},
                               "grid": {"epochs": [200, 1]}})
    first, second = sweep_spec.expand(str(path)).cells
    started = paths.run_dir("die", first.run_id) / paths.CONFIG  # train() writes it first
    killed = []

    def kill_the_worker_once_the_first_run_trains():
        if not killed and started.is_file():
            for proc in multiprocessing.active_children():
                os.kill(proc.pid, signal.SIGKILL)
                killed.append(proc.pid)

    t0 = time.monotonic()
    outcomes = {o.run_id: o for o in run_local([first, second], workers=1, tick_s=0.1,
                                               on_tick=kill_the_worker_once_the_first_run_trains)}
    assert len(killed) == 1
    assert outcomes[first.run_id].status == "failed"
    assert "worker process died (exit code -9" in outcomes[first.run_id].error
    assert outcomes[second.run_id].status == "completed"  # on the replacement worker
    assert outcomes[second.run_id].threads == 1
    assert not (paths.run_dir("die", first.run_id) / paths.RESULT).exists()
    assert multiprocessing.active_children() == []  # no worker left behind
    assert time.monotonic() - t0 < 90  # not the 200 epochs of the killed run


def _children(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read().lower()
    except FileNotFoundError:
        return False


def test_ctrl_c_stops_the_local_workers_and_keeps_their_checkpoints(write_sweep):
    path = write_sweep("stop", {"base": "configs/fmnist_mlp.yaml",
                                "overrides": {"data.train_subset": 2048, "epochs": 500},
                                "grid": {"seed": [0, 1]}})
    cells = sweep_spec.expand(str(path)).cells
    env = {**os.environ, "SPARSEBENCH_RESULTS": str(paths.results_root()), "PYTHONUNBUFFERED": "1"}
    launcher = subprocess.Popen([sys.executable, "-m", "sparsebench.sweep", str(path),
                                 "--executor", "local", "--workers", "2"], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Wait for the checkpoints themselves: metrics.jsonl is written just before the
        # checkpoint, so its presence alone leaves a window in which Ctrl-C lands mid-save.
        checkpoints = [paths.run_dir("stop", c.run_id) / paths.CHECKPOINT for c in cells]
        deadline = time.monotonic() + 120
        while not all(c.is_file() for c in checkpoints):  # both runs have an epoch checkpoint
            assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()
            time.sleep(0.2)
        workers = _children(launcher.pid)
        assert len(workers) >= 2
        launcher.send_signal(signal.SIGINT)
        stdout, stderr = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 130, stderr
    assert "interrupted: runs in progress stopped; each resumes from its last epoch checkpoint" in stderr
    assert f"sparsebench.sweep {path}" in stderr  # how to go on: this python, this executor
    hint = stderr.split("when you run again: ", 1)[1].strip().splitlines()[0]
    assert hint.endswith(f"-m sparsebench.sweep {path} --workers 2 --executor local"), hint
    assert hint.split(" -m ")[0] in ("python", "python3", sys.executable), hint
    assert "Traceback" not in stderr
    # The workers (and multiprocessing's resource tracker) end with the launcher; nothing
    # keeps training on its own.
    deadline = time.monotonic() + 15
    while [p for p in workers if _alive(p)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in workers if _alive(p)]
    for cell in cells:
        run = paths.run_dir("stop", cell.run_id)
        assert not (run / paths.RESULT).exists()  # neither failed nor completed
        assert (run / paths.CHECKPOINT).is_file()
        assert not [p for p in run.iterdir() if p.name.startswith(".") or "tmp" in p.name]
