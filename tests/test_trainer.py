"""The common trainer end to end on real Fashion-MNIST: result files, resume, divergence, failure."""
from __future__ import annotations

import json
import math

import pytest
import torch

from sparsebench.storage import paths
from sparsebench import resolve
from sparsebench.config.schema import ConfigError, run_id
from sparsebench.training import train

from .conftest import REPO, needs_fmnist

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")
SMALL = ["data.train_subset=2048", "data.batch_size=64", "epochs=3", "progress=false"]

# The keys design.md promises in every result.json.
RESULT_KEYS = {"run_id", "sweep", "method", "method_params", "model", "dataset", "density",
               "actual_density", "seed", "epochs", "status", "error", "final_test_acc",
               "best_test_acc", "final_train_loss", "train_flops", "train_flops_rel_dense",
               "inference_flops", "inference_flops_rel_dense", "wall_clock_s", "step_time_ms",
               "git_sha", "torch_version", "device", "started_at", "finished_at"}


@needs_fmnist
def test_run_writes_its_files_and_result_keys():
    cfg = resolve.load(BASE, SMALL + ["density=0.1"])
    result = train(cfg)
    folder = paths.run_dir("adhoc", run_id(cfg))
    for name in (paths.CONFIG, paths.RESULT, paths.METRICS, paths.LOG):
        assert (folder / name).is_file(), name
    assert not (folder / paths.CHECKPOINT).exists()  # removed once completed
    assert RESULT_KEYS <= set(result)
    assert result["status"] == "completed" and result["error"] is None
    assert result["actual_density"] == pytest.approx(0.1, abs=1e-5)
    assert 10 < result["final_test_acc"] <= 100
    lines = (folder / paths.METRICS).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert json.loads((folder / paths.RESULT).read_text())["run_id"] == run_id(cfg)
    # A completed run is not trained again.
    again = train(cfg)
    assert again["finished_at"] == result["finished_at"]


@needs_fmnist
@pytest.mark.parametrize("method", ["static", "dense"])
def test_resume_after_interruption_gives_identical_result(method):
    overrides = SMALL + [f"method.name={method}", "density=0.2", "optim.schedule=step",
                         "optim.warmup_epochs=0.5"]
    whole = train(resolve.load(BASE, overrides + ["sweep=whole"]))
    cfg = resolve.load(BASE, overrides + ["sweep=pieces"])
    assert train(cfg, stop_after_epochs=1)["status"] == "interrupted"
    folder = paths.run_dir("pieces", run_id(cfg))
    assert (folder / paths.CHECKPOINT).is_file()
    assert not (folder / paths.RESULT).exists()
    assert train(cfg, stop_after_epochs=1)["status"] == "interrupted"
    resumed = train(cfg)
    assert resumed["status"] == "completed"
    for key in ("final_test_acc", "best_test_acc", "final_train_loss", "actual_density",
                "train_flops", "steps"):
        assert resumed[key] == whole[key], key
    metrics = [json.loads(x) for x in (folder / paths.METRICS).read_text().splitlines()]
    whole_metrics = [json.loads(x) for x in
                     (paths.run_dir("whole", run_id(cfg)) / paths.METRICS).read_text().splitlines()]
    assert [m["train_loss"] for m in metrics] == [m["train_loss"] for m in whole_metrics]


@needs_fmnist
def test_diverging_run_is_recorded_not_crashed():
    cfg = resolve.load(BASE, SMALL + ["optim.lr=1e8", "optim.momentum=0.99", "epochs=2"])
    result = train(cfg)
    assert result["status"] == "diverged"
    assert "non-finite" in result["error"]
    saved = json.loads((paths.run_dir("adhoc", run_id(cfg)) / paths.RESULT).read_text())
    assert saved["status"] == "diverged"


def test_failing_run_is_recorded_with_its_error(tmp_path):
    # What a sweep job meets when its launcher skipped the data check: the preflight's line.
    cfg = resolve.load(BASE, SMALL + [f"data.root={tmp_path / 'nowhere'}"])
    with pytest.raises(ConfigError):
        train(cfg)
    saved = json.loads((paths.run_dir("adhoc", run_id(cfg)) / paths.RESULT).read_text())
    assert saved["status"] == "failed"
    assert saved["error"].startswith(f"data.root: {tmp_path / 'nowhere'} does not exist")
    assert "\n" not in saved["error"]


@needs_fmnist
@pytest.mark.slow
@pytest.mark.parametrize("method, density, floor", [("dense", 1.0, 88.0), ("static", 0.1, 84.0)])
def test_fashion_mnist_accuracy_targets(method, density, floor):
    """Issue 3's bar: MLP, 10 epochs on CPU; dense >= 88 %, static at density 0.1 >= 84 %."""
    cfg = resolve.load(BASE, [f"method.name={method}", f"density={density}", "progress=false"])
    result = train(cfg)
    assert result["status"] == "completed"
    assert result["final_test_acc"] >= floor
