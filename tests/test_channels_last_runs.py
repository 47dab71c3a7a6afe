"""Every registered method on every CNN trained channels-last on the CPU (``channels_last: true``
applies on any device), end to end through the trainer: at least two topology updates, a
kill-and-resume from the checkpoint (the resumed run ends exactly where the uninterrupted one
does) and a written result.json; the always-sparse engine for the methods that allow it; and
SimpleViT-tiny under bf16 autocast on the CPU. On CUDA the trainer converts every CNN to
channels-last by default, so this is what a GPU run goes through. Data: generated
CIFAR-100-format images; tiny widths, 4 steps an epoch."""
from __future__ import annotations

import json

import pytest

from sparsebench import methods, resolve
from sparsebench.storage import paths
from sparsebench.training import Callback, lifecycle, run_folder, train

from .conftest import REPO
from .synthetic_cifar import use_synthetic_cifar100

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")
CNNS = {"lenet5": 1.0, "resnet20": 0.25, "vgg16_small": 0.125}
# Updates every 2 steps of 8 (Top-KAST: refreshes every step for half an epoch, then every 2);
# Lottery prunes between rounds: 1 epoch a round, 3 rounds after the dense one.
PARAMS = {
    "rigl": ["method.interval=2", "method.end=1.0"], "set": ["method.interval=2", "method.end=1.0"],
    "gse": ["method.interval=2", "method.end=1.0"],
    "magnitude": ["method.frequency=2", "method.start=0.0", "method.end=1.0"],
    "topkast": ["method.explore_epochs=0.5", "method.interval=2"],
    "synflow": ["method.iterations=3"], "lottery": ["method.rounds=3", "epochs=1"],
}
UPDATING = ("rigl", "set", "gse", "magnitude", "topkast", "lottery")


class TopologyChanges(Callback):
    """Counts the steps after which the masks differ from the step before (one session)."""

    changes = 0

    def on_run_start(self, trainer):
        self.last = None

    def on_step_end(self, trainer, step):
        version = trainer.engine.mask_version
        if self.last is not None and version != self.last:
            TopologyChanges.changes += 1
        self.last = version


@pytest.fixture
def counted(monkeypatch):
    """train() with a TopologyChanges callback on every Trainer it builds."""
    base = lifecycle.Trainer

    class Counted(base):
        def __init__(self, cfg, run_dir, callbacks=None):
            super().__init__(cfg, run_dir, [*(callbacks or []), TopologyChanges()])

    monkeypatch.setattr(lifecycle, "Trainer", Counted)
    TopologyChanges.changes = 0
    return TopologyChanges


def config(model, width, method, engine="masked", *extra):
    return resolve.load(BASE, [f"method.name={method}", *PARAMS.get(method, []), "density=0.2",
                               "data.name=cifar100", f"model.name={model}", f"model.width={width}",
                               "epochs=2", "data.batch_size=25", "data.test_batch_size=50",
                               "optim.lr=0.05", "channels_last=true", f"sparsity.engine={engine}",
                               "progress=false", *extra])


def kill_and_resume(cfg, counted, tmp_path, monkeypatch, compare=True):
    """Stopped after one epoch and resumed; with ``compare``, the same run uninterrupted
    elsewhere must end exactly where the resumed one did."""
    first = train(cfg, stop_after_epochs=1)
    assert first["status"] == "interrupted"
    run_dir = run_folder(cfg)
    assert (run_dir / paths.CHECKPOINT).is_file() and not (run_dir / paths.RESULT).exists()
    resumed = train(cfg)
    changes = counted.changes
    written = json.loads((run_dir / paths.RESULT).read_text())
    assert written["status"] == resumed["status"] == "completed"
    assert written["precision"]["channels_last"] is True
    assert "resumed from checkpoint after epoch 1" in (run_dir / paths.LOG).read_text()
    if compare:
        monkeypatch.setenv("SPARSEBENCH_RESULTS", str(tmp_path / "uninterrupted"))
        whole = train(cfg)
        for key in ("mask_sha256", "final_train_loss", "final_test_acc", "train_flops", "steps"):
            assert resumed[key] == whole[key], key
    return resumed, changes


CASES = [(model, method) for model in CNNS for method in methods.available()]


@pytest.mark.slow
@pytest.mark.parametrize("model, method", CASES, ids=[f"{m}-{n}" for m, n in CASES])
def test_every_method_on_every_cnn_channels_last(model, method, tmp_path, monkeypatch, counted):
    use_synthetic_cifar100(tmp_path / "data", monkeypatch, train=100, test=50)
    # The uninterrupted twin on LeNet-5 only (the CPU time of the matrix).
    result, changes = kill_and_resume(config(model, CNNS[model], method), counted, tmp_path,
                                      monkeypatch, compare=model == "lenet5")
    if method in UPDATING:
        assert changes >= 2, f"{method}: {changes} topology updates"
    if method != "dense":
        assert result["actual_density"] < 1


SPARSE = [(model, method) for model in CNNS for method in methods.available()
          if "sparse" in methods.get(method).engines]


@pytest.mark.slow
@pytest.mark.parametrize("model, method", SPARSE, ids=[f"{m}-{n}" for m, n in SPARSE])
def test_the_sparse_engine_channels_last(model, method, tmp_path, monkeypatch, counted):
    use_synthetic_cifar100(tmp_path / "data", monkeypatch, train=100, test=50)
    result, changes = kill_and_resume(config(model, CNNS[model], method, "sparse"), counted,
                                      tmp_path, monkeypatch, compare=model == "lenet5")
    assert result["engine"] == "sparse"
    if method in UPDATING:
        assert changes >= 2


def test_the_sparse_engine_reaches_methods_that_allow_it():
    assert {"static", "gse", "set"} <= {method for _, method in SPARSE}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rigl", "topkast"])
def test_simple_vit_under_bf16_autocast_on_the_cpu(method, tmp_path, monkeypatch, counted):
    use_synthetic_cifar100(tmp_path / "data", monkeypatch, train=100, test=50)
    cfg = config("simple_vit_tiny", 0.0625, method, "masked", "amp=bf16")
    result, changes = kill_and_resume(cfg, counted, tmp_path, monkeypatch)
    assert result["precision"]["amp"] == "bf16" and result["precision"]["autocast_device"] == "cpu"
    if method in UPDATING:
        assert changes >= 2
