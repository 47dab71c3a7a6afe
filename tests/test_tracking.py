"""Tracking: TensorBoard event files, W&B and MLflow read back, per-step rows, the topology
statistics against the masks, and final.pt with load_model."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from torch import nn

from sparsebench import load_model, resolve
from sparsebench.storage import paths
from sparsebench.config.schema import ConfigError, run_id
from sparsebench.storage.run_files import read_metrics
from sparsebench.sparsity.engine import SparsityEngine
from sparsebench.training import Callback, Trainer, train
from sparsebench.training.final import save_final
from sparsebench.training.topology import EverActive, TopologyTracker
from sparsebench.training.tracking_callbacks import Tracking

from .conftest import REPO, STRICT, needs_fmnist

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")
# 16 steps an epoch; RigL updates every 4 steps until 3/4 of training.
RIGL = ["data.train_subset=1024", "data.batch_size=64", "epochs=2", "progress=false",
        "method.name=rigl", "method.interval=4", "density=0.1", "tracking.step_interval=4"]


def needs(package: str):
    """Skip without an optional tracker, except under SPARSEBENCH_STRICT (CI installs them)."""
    if importlib.util.find_spec(package) is None:
        if STRICT:
            pytest.fail(f"{package} is not installed (pip install -e '.[dev]' installs it)")
        pytest.skip(f"{package} not installed (an optional tracker: sparsebench[tracking])")


def _run_dir(cfg):
    return paths.run_dir(cfg.sweep, run_id(cfg))


# ---- topology statistics -------------------------------------------------------------------

class MaskRecorder(Callback):
    """Keeps the active set of every layer whenever the topology changed (for the check)."""

    def on_run_start(self, trainer):
        self.version = trainer.engine.mask_version
        self.snapshots = [self.take(trainer, 0)]

    def take(self, trainer, step):
        return step, {layer.name: set(layer.active_indices().tolist())
                      for layer in trainer.engine.layers}

    def on_step_end(self, trainer, step):
        if trainer.engine.mask_version != self.version:
            self.version = trainer.engine.mask_version
            self.snapshots.append(self.take(trainer, step.step))


@needs_fmnist
def test_topology_statistics_of_a_rigl_run_match_its_masks(tmp_path):
    cfg = resolve.load(BASE, RIGL + ["tracking.tensorboard=false"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    recorder = MaskRecorder()
    trainer = Trainer(cfg, run_dir, callbacks=[Tracking(cfg, run_dir), recorder])
    assert trainer.run() == "completed"
    rows = read_metrics(run_dir / paths.TOPOLOGY)
    snaps = recorder.snapshots
    assert len(snaps) >= 3  # RigL changed the topology several times
    assert sorted({r["update"] for r in rows}) == list(range(1, len(snaps)))
    numel = {layer.name: layer.numel for layer in trainer.engine.layers}
    ever = {name: set(active) for name, active in snaps[0][1].items()}
    grown_before: dict[str, set] = {}
    for update, ((_, before), (step, after)) in enumerate(zip(snaps, snaps[1:]), 1):
        by_layer = {r["layer"]: r for r in rows if r["update"] == update}
        assert {r["step"] for r in by_layer.values()} == {step}
        for name in numel:
            row = by_layer[name]
            grown = after[name] - before[name]
            assert row["pruned"] == len(before[name] - after[name])
            assert row["grown"] == len(grown)
            assert row["active"] == len(after[name])
            if grown_before.get(name):
                assert row["grown_survival"] == pytest.approx(
                    len(grown_before[name] & after[name]) / len(grown_before[name]))
            else:
                assert row["grown_survival"] is None
            ever[name] |= after[name]
            assert row["ever_active"] == len(ever[name])
            assert row["itop_rate"] == pytest.approx(len(ever[name]) / numel[name])
            grown_before[name] = grown
        total = by_layer["all"]
        assert total["pruned"] == sum(by_layer[n]["pruned"] for n in numel)
        assert total["itop_rate"] == pytest.approx(sum(len(e) for e in ever.values())
                                                   / sum(numel.values()))
    assert sum(r["grown"] for r in rows if r["layer"] == "all") > 0
    # Exploration only adds: the rate never falls, and it ends above the density.
    rates = [r["itop_rate"] for r in rows if r["layer"] == "all"]
    assert rates == sorted(rates) and rates[-1] > 0.1


def test_ever_active_set_turns_into_a_bitmap_with_the_same_counts():
    sparse, dense = EverActive(1000, torch.tensor([3, 7])), EverActive(16, torch.tensor([1, 2, 5]))
    assert sparse.bitmap is None and dense.bitmap is not None  # 2*8 <= 1000; 3*8 > 16
    for batch in ([7, 9, 500], [1, 999], [3]):
        sparse.add(torch.tensor(batch))
    assert sparse.count() == len({3, 7, 9, 500, 1, 999}) and sparse.bitmap is None
    sparse.add(torch.arange(0, 1000, 5))  # now over 1/8 of the layer
    assert sparse.bitmap is not None
    assert sparse.count() == len({3, 7, 9, 500, 1, 999} | set(range(0, 1000, 5)))
    assert sparse.nbytes() == 1000
    dense.add(torch.tensor([5, 15]))
    assert dense.count() == 4


def test_tracker_sees_prune_and_grow_through_the_engine_api():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 4))
    engine = SparsityEngine.for_model(model, 0.5, "uniform")
    engine.random_masks(torch.Generator().manual_seed(0))
    tracker = TopologyTracker(engine)
    assert tracker.observe(1) == []  # nothing changed
    layer = engine.layers[0]
    active = layer.active_indices()
    inactive = layer.inactive_indices()
    engine.prune(layer, active[:3])
    engine.grow(layer, inactive[:3])
    rows = {r["layer"]: r for r in tracker.observe(2)}
    assert (rows[layer.name]["pruned"], rows[layer.name]["grown"]) == (3, 3)
    assert rows[engine.layers[1].name]["grown"] == 0
    assert rows[layer.name]["ever_active"] == active.numel() + 3
    # The next change: two of the three grown connections are pruned again.
    engine.prune(layer, inactive[:2])
    engine.grow(layer, active[:2])  # two pruned before come back
    rows = {r["layer"]: r for r in tracker.observe(3)}
    assert rows[layer.name]["grown_survival"] == pytest.approx(1 / 3)
    assert rows[layer.name]["ever_active"] == active.numel() + 3  # nothing new was ever active


# ---- TensorBoard, per-step rows, resume ----------------------------------------------------

@needs_fmnist
def test_tensorboard_events_and_step_rows_read_back(tmp_path):
    needs("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = resolve.load(BASE, RIGL)
    assert train(cfg)["status"] == "completed"
    run_dir = _run_dir(cfg)
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    epochs = read_metrics(run_dir / paths.METRICS)
    test_acc = events.Scalars("epoch/test_acc")
    assert [e.step for e in test_acc] == [r["step"] for r in epochs]
    assert [e.value for e in test_acc] == pytest.approx([r["test_acc"] for r in epochs])
    layers = {f"density/{name}" for name in epochs and _layer_names(run_dir)}
    assert layers <= tags
    steps = read_metrics(run_dir / paths.STEPS)
    assert [r["step"] for r in steps] == list(range(4, 33, 4))
    assert all(r["step_time_ms"] > 0 and 0 <= r["train_acc"] <= 100 for r in steps)
    loss = events.Scalars("train/train_loss")
    assert [e.value for e in loss] == pytest.approx([r["train_loss"] for r in steps])
    itop = [e.value for e in events.Scalars("topology/itop_rate")]
    assert itop and itop == sorted(itop)
    assert {"train/lr", "train/step_time_ms", "topology/pruned", "topology/grown"} <= tags


def _layer_names(run_dir):
    return list(load_model(run_dir).numel)


@needs_fmnist
def test_resumed_run_drops_rows_after_its_checkpoint(tmp_path):
    cfg = resolve.load(BASE, RIGL + ["tracking.tensorboard=false"])
    assert train(cfg, stop_after_epochs=1)["status"] == "interrupted"
    run_dir = _run_dir(cfg)
    # As if the job died in epoch 2 after writing rows the checkpoint does not cover:
    with open(run_dir / paths.STEPS, "a") as f:
        f.write(json.dumps({"step": 20, "train_loss": 9.0}) + "\n")
    assert train(cfg)["status"] == "completed"
    steps = [r["step"] for r in read_metrics(run_dir / paths.STEPS)]
    assert steps == list(range(4, 33, 4))  # each step once, in order
    assert 9.0 not in [r["train_loss"] for r in read_metrics(run_dir / paths.STEPS)]
    updates = [r["update"] for r in read_metrics(run_dir / paths.TOPOLOGY) if r["layer"] == "all"]
    assert updates == sorted(updates)


def test_a_tracker_that_is_not_installed_is_a_config_error(monkeypatch):
    from sparsebench.training import preflight
    from sparsebench.training import tracking

    cfg = resolve.load(BASE, ["tracking.mlflow.tracking_uri=/tmp/mlruns"])
    real = importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match="tracking.mlflow.tracking_uri: needs the mlflow"):
        preflight.check(cfg, data=False)
    with pytest.raises(ConfigError, match="tracking.wandb.mode"):
        resolve.load(BASE, ["tracking.wandb.mode=sometimes"])
    with pytest.raises(ConfigError, match="tracking.step_interval"):
        resolve.load(BASE, ["tracking.step_interval=-1"])


def test_tracking_settings_leave_the_run_id_alone():
    a = resolve.load(BASE, [])
    b = resolve.load(BASE, ["tracking.step_interval=7", "tracking.tensorboard=false",
                            "save_final=false"])
    assert run_id(a) == run_id(b)


# ---- W&B and MLflow ------------------------------------------------------------------------

@needs_fmnist
def test_wandb_offline_run_and_mlflow_file_store_read_back(tmp_path, monkeypatch):
    needs("wandb")
    needs("mlflow")
    from mlflow.tracking import MlflowClient

    from .wandb_records import history

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    store = tmp_path / "mlruns"
    cfg = resolve.load(BASE, RIGL + ["tracking.wandb.project=sparsebench-test",
                                     "tracking.wandb.mode=offline",
                                     f"tracking.mlflow.tracking_uri={store}",
                                     "tracking.mlflow.experiment=tests"])
    assert train(cfg)["status"] == "completed"
    run_dir = _run_dir(cfg)
    epochs = read_metrics(run_dir / paths.METRICS)

    files = list((run_dir / "wandb").glob(f"offline-run-*-{run_id(cfg)}/run-{run_id(cfg)}.wandb"))
    assert len(files) == 1
    rows = history(files[0])
    logged = [r["epoch/test_acc"] for r in rows if "epoch/test_acc" in r]
    assert logged == pytest.approx([r["test_acc"] for r in epochs])
    assert any("topology/itop_rate" in r for r in rows)

    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    experiment = client.get_experiment_by_name("tests")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["sparsebench_run_id"] == run_id(cfg)
    assert run.data.params["method.name"] == "rigl"
    assert run.info.status == "FINISHED"
    acc = client.get_metric_history(run.info.run_id, "epoch.test_acc")
    assert [(m.step, m.value) for m in acc] == [(r["step"], pytest.approx(r["test_acc"]))
                                                for r in epochs]
    steps = client.get_metric_history(run.info.run_id, "train.train_loss")
    assert sorted(m.step for m in steps) == list(range(4, 33, 4))


# ---- final.pt ------------------------------------------------------------------------------

@needs_fmnist
@pytest.mark.parametrize("engine,method", [("masked", "rigl"), ("sparse", "set")])
def test_final_model_round_trip(tmp_path, engine, method):
    cfg = resolve.load(BASE, RIGL + ["epochs=1", f"sparsity.engine={engine}",
                                     f"method.name={method}", "tracking.tensorboard=false"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    trainer = Trainer(cfg, run_dir)
    assert trainer.run() == "completed"
    save_final(trainer)
    loaded = load_model(run_dir)
    x = torch.randn(5, 1, 28, 28)
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(loaded.model(x), trainer.model(x))
    for layer in trainer.engine.layers:
        assert torch.equal(loaded.active[layer.name], layer.active_indices().cpu())
        (same,) = [l for l in loaded.engine.layers if l.name == layer.name]
        assert torch.equal(same.active_indices(), loaded.active[layer.name])
    assert loaded.density() == pytest.approx(trainer.engine.global_density())
    assert loaded.config["method"]["name"] == method


@needs_fmnist
def test_completed_run_keeps_final_pt_unless_told_not_to():
    cfg = resolve.load(BASE, RIGL + ["epochs=1", "tracking.tensorboard=false"])
    assert train(cfg)["status"] == "completed"
    assert load_model(_run_dir(cfg)).density() == pytest.approx(0.1, abs=1e-3)
    skip = resolve.load(BASE, RIGL + ["epochs=1", "save_final=false", "sweep=nofinal",
                                      "tracking.tensorboard=false"])
    assert train(skip)["status"] == "completed"
    assert not (_run_dir(skip) / paths.FINAL).exists()
    with pytest.raises(FileNotFoundError, match="save_final: false"):
        load_model(_run_dir(skip))
