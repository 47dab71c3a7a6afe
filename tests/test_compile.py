"""``compile: true``: every method trains under torch.compile, mask updates never recompile,
and compiled and eager runs resume from each other's checkpoints and load alike.

Compiling on a CPU is slow, so the behaviour tests use the ``aot_eager`` backend (Dynamo's
tracing and guards, AOTAutograd's forward/backward split: everything a mask update could
disturb) on 16-step runs; one test compiles with inductor."""
from __future__ import annotations

import logging
import shutil

import pytest
import torch

from sparsebench import load_model, resolve
from sparsebench.config.schema import run_id
from sparsebench.storage import paths
from sparsebench.training import compile as compiling
from sparsebench.training import train
from sparsebench.training.callbacks import Callback
from sparsebench.training.loop import Trainer

from .conftest import REPO, needs_fmnist

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")
# 8 steps per epoch, 2 epochs.
SMALL = ["data.train_subset=512", "data.batch_size=64", "epochs=2", "progress=false",
         "density=0.1", "compile_backend=aot_eager"]
# Per method: overrides giving >= 3 mask updates in 16 steps.
DYNAMIC = {
    "magnitude": ["method.frequency=3"],
    "set": ["method.interval=3"],
    "rigl": ["method.interval=3"],
    "gse": ["method.interval=3"],
    "topkast": ["method.interval=3", "method.explore_epochs=0"],
    "lottery": ["method.round_densities=[0.5,0.3,0.2]", "epochs=1"],
}
ONE_SHOT = ["dense", "static", "snip", "grasp", "synflow"]


@pytest.fixture(autouse=True)
def _no_compile_trace():
    """torch's structured compile trace logs at DEBUG; pytest's log capture would make it
    serialize every graph."""
    trace = logging.getLogger("torch.__trace")
    level = trace.level
    trace.setLevel(logging.INFO)
    yield
    trace.setLevel(level)


class GraphsAtUpdates(Callback):
    """After every step that changed the topology: how many graphs had been compiled."""

    def __init__(self):
        self.version, self.graphs = 0, []

    def on_run_start(self, trainer):
        self.version = trainer.engine.mask_version

    def on_step_end(self, trainer, step):
        if trainer.engine.mask_version != self.version:
            self.version = trainer.engine.mask_version
            self.graphs.append(graphs(trainer))


def graphs(trainer: Trainer) -> int:
    stats = compiling.stats_of(trainer.step_model)
    assert stats is not None, trainer.compile.note
    return stats.graphs


def compiled_run(tmp_path, overrides: list[str]) -> tuple[Trainer, list[int]]:
    """Train ``overrides`` compiled to the end: the trainer, and the number of graphs compiled
    by the end of each step that updated the masks."""
    cfg = resolve.load(BASE, SMALL + ["compile=true"] + overrides)
    at_updates = GraphsAtUpdates()
    folder = tmp_path / run_id(cfg)
    folder.mkdir()
    trainer = Trainer(cfg, folder, callbacks=[at_updates])
    assert trainer.run() == "completed"
    return trainer, at_updates.graphs


@needs_fmnist
@pytest.mark.parametrize("model", ["mlp", "lenet5"])
@pytest.mark.parametrize("method", list(DYNAMIC))
def test_mask_updates_never_recompile(tmp_path, method, model):
    """The graphs compiled by the end of the first update step (an armed capture's included)
    are all there ever are: a run with 1 update compiles as many as one with 3 or more."""
    trainer, at_updates = compiled_run(tmp_path, [f"method.name={method}", f"model.name={model}"]
                                       + DYNAMIC[method])
    assert len(at_updates) >= 3
    assert at_updates[0] >= 1
    assert at_updates == [graphs(trainer)] * len(at_updates)


@needs_fmnist
@pytest.mark.parametrize("model", ["mlp", "lenet5"])
@pytest.mark.parametrize("method", ONE_SHOT)
def test_one_shot_methods_train_compiled(tmp_path, method, model):
    trainer, at_updates = compiled_run(tmp_path, [f"method.name={method}", f"model.name={model}"])
    assert at_updates == [] and graphs(trainer) >= 1


def _resume_across(first: list[str], then: list[str]) -> None:
    """Train one epoch under ``first``, resume the checkpoint under ``then``; compare with an
    uninterrupted run under ``first`` and load both final models."""
    base = SMALL + ["method.name=rigl", "method.interval=3"]
    whole = train(resolve.load(BASE, base + first + ["sweep=whole"]))
    start = resolve.load(BASE, base + first + ["sweep=pieces"])
    assert train(start, stop_after_epochs=1)["status"] == "interrupted"
    finish = resolve.load(BASE, base + then + ["sweep=pieces"])
    assert run_id(finish) != run_id(start)   # compiled runs have their own ids
    target = paths.run_dir("pieces", run_id(finish))
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(paths.run_dir("pieces", run_id(start)) / paths.CHECKPOINT, target / paths.CHECKPOINT)
    resumed = train(finish)
    assert resumed["status"] == "completed" and resumed["steps"] == whole["steps"]
    assert resumed["compiled"] == ("compile=true" in then)
    for key in ("final_test_acc", "final_train_loss", "actual_density"):
        assert resumed[key] == pytest.approx(whole[key], rel=1e-4, abs=1e-4), key
    for folder in (target, paths.run_dir("whole", run_id(start))):
        state = torch.load(folder / paths.FINAL, weights_only=True)
        assert not any("_orig_mod" in key for key in state["model"])
        assert load_model(folder) is not None
    a = load_model(target).model.state_dict()
    b = load_model(paths.run_dir("whole", run_id(start))).model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-4)


@needs_fmnist
def test_compiled_run_resumes_an_eager_checkpoint():
    _resume_across(["compile=false"], ["compile=true"])


@needs_fmnist
def test_eager_run_resumes_a_compiled_checkpoint():
    _resume_across(["compile=true"], ["compile=false"])


@needs_fmnist
def test_inductor_compiles_and_matches_eager():
    """The one inductor test (tens of seconds on a CPU): C++ code generated and run."""
    base = ["data.train_subset=256", "data.batch_size=64", "epochs=1", "progress=false",
            "method.name=static", "density=0.1", "sweep=inductor"]
    eager = train(resolve.load(BASE, base + ["compile=false"]))
    compiled = train(resolve.load(BASE, base + ["compile=true", "compile_backend=inductor"]))
    assert compiled["compiled"] and not eager["compiled"]
    assert compiled["compiled_graphs"] >= 1 and compiled["compile_time_s"] > 0
    assert compiled["final_train_loss"] == pytest.approx(eager["final_train_loss"], rel=1e-4)
    assert compiled["final_test_acc"] == pytest.approx(eager["final_test_acc"], abs=0.5)


def test_sparse_engine_says_why_it_runs_eager():
    decision = compiling.decide(True, device=torch.device("cpu"), total_steps=10, engine="sparse")
    assert not decision.enabled and "ctypes" in decision.note


@pytest.mark.parametrize("device, steps, enabled", [
    ("cpu", 10 ** 7, False), ("cuda", compiling.AUTO_MIN_STEPS - 1, False),
    ("cuda", compiling.AUTO_MIN_STEPS, True)])
def test_auto_compiles_long_cuda_runs_only(device, steps, enabled):
    decision = compiling.decide("auto", device=torch.device(device), total_steps=steps,
                                engine="masked")
    assert decision.enabled is enabled, decision.note


def test_compile_setting_keeps_earlier_run_ids():
    """``compile: false`` (the default) leaves a run's id as it was before the field existed;
    a compiled run gets its own."""
    eager = resolve.load(BASE, ["compile=false"])
    assert run_id(eager) == "e924fe9c0ff9"   # configs/fmnist_mlp.yaml's id before compile existed
    assert run_id(resolve.load(BASE, ["compile=true"])) != run_id(eager)
