"""The compared methods under the real trainer on a Fashion-MNIST subset: every topology change
keeps the engine's invariants, runs complete at the target density, and resume is exact."""
from __future__ import annotations

import pytest
import torch

from sparsebench.storage import paths
from sparsebench import resolve
from sparsebench.config.schema import run_id
from sparsebench.training import Trainer, train

from .conftest import REPO, needs_fmnist

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")
SMALL = ["data.train_subset=1024", "data.batch_size=64", "epochs=2", "progress=false",
         "density=0.05"]
# Small intervals so that a 32-step run sees several updates.
METHODS = {
    "snip": ["method.name=snip", "method.batches=2"],
    "magnitude": ["method.name=magnitude", "method.frequency=3"],
    "magnitude-layer": ["method.name=magnitude", "method.frequency=3", "method.scope=layer"],
    "set": ["method.name=set"],
    "set-steps": ["method.name=set", "method.interval=6"],
    "rigl": ["method.name=rigl", "method.interval=5"],
    "gse-uniform": ["method.name=gse", "method.interval=5", "method.sampler=uniform"],
    "gse-grabo-layer": ["method.name=gse", "method.interval=5", "method.sampler=grabo",
                        "method.scope=layer"],
    "gse-graest": ["method.name=gse", "method.interval=5", "method.sampler=graest"],
    # The GSE paper's protocol: global updates, no regrowth, score batches, active-fan-in init.
    "set-paper": ["protocol=gse_paper", "method.name=set", "method.interval=5"],
    "rigl-paper": ["protocol=gse_paper", "method.name=rigl", "method.interval=5"],
    "gse-paper": ["protocol=gse_paper", "method.name=gse", "method.interval=5",
                  "method.sampler=grabo"],
    "magnitude-paper": ["protocol=gse_paper", "method.name=magnitude", "method.frequency=3"],
    "snip-paper": ["protocol=gse_paper", "method.name=snip"],
}


def _check_invariants(engine, optimizer, total_target, exact_layers=True):
    assert sum(layer.target_active for layer in engine.layers) == total_target
    for layer in engine.layers:
        if exact_layers:
            assert layer.n_active() == layer.target_active, layer.name
        inactive = ~layer.mask
        assert torch.count_nonzero(layer.weight.detach()[inactive]) == 0, layer.name
        for value in optimizer.state.get(layer.weight, {}).values():
            if torch.is_tensor(value) and value.shape == layer.weight.shape:
                assert torch.count_nonzero(value[inactive]) == 0, layer.name


@needs_fmnist
@pytest.mark.parametrize("key, extra", [
    ("snip", []), ("magnitude", []), ("set", []), ("rigl", []), ("gse-grabo-layer", []),
    # ER leaves LeNet's convs at least half dense (all candidates); uniform makes them sampled.
    ("gse-graest", ["sparsity.distribution=uniform"]),
    ("set-paper", []), ("rigl-paper", []), ("gse-paper", ["sparsity.distribution=uniform"]),
    ("magnitude-paper", [])])
def test_every_update_keeps_exact_counts_and_zero_inactive_state(key, extra, tmp_path):
    """LeNet-5 (conv and linear layers) through the trainer; checked after every hook that
    changed the topology."""
    cfg = resolve.load(BASE, SMALL + ["model.name=lenet5", "density=0.1"] + METHODS[key] + extra)
    trainer = Trainer(cfg, tmp_path)
    engine, method = trainer.engine, trainer.method
    total = sum(layer.target_active for layer in engine.layers)
    changes = []

    def watch(hook_name):
        original = getattr(method, hook_name)

        def hook(ctx):
            version = engine.mask_version
            original(ctx)
            if engine.mask_version != version:
                changes.append((hook_name, getattr(ctx, "step", None)))
                final = not key.startswith("magnitude") or ctx.step + 1 >= method.end_step
                _check_invariants(engine, trainer.optimizer, total, exact_layers=final)
        setattr(method, hook_name, hook)

    for name in ("init_masks", "before_forward", "after_backward", "after_step", "end_of_epoch"):
        watch(name)
    assert trainer.run() == "completed"
    assert changes, "the topology changed at least once"
    if not key.startswith("snip"):
        assert any(step is not None and step > 0 for _, step in changes)
    _check_invariants(engine, trainer.optimizer, total)
    assert engine.global_density() == pytest.approx(0.1, abs=1 / engine.num_prunable())


@needs_fmnist
@pytest.mark.parametrize("key", sorted(METHODS))
def test_short_run_completes_at_the_target_density(key):
    cfg = resolve.load(BASE, SMALL + METHODS[key])
    result = train(cfg)
    assert result["status"] == "completed"
    n = sum(result["layer_sizes"].values())
    assert abs(result["actual_density"] - 0.05) <= 1 / n
    assert result["train_flops"] > 0 and result["final_test_acc"] > 10


@needs_fmnist
@pytest.mark.parametrize("key", ["rigl", "gse-graest", "set-steps", "rigl-paper", "gse-paper"])
def test_resume_is_exact_for_dynamic_methods(key):
    overrides = SMALL + METHODS[key] + ["epochs=3"]
    whole = train(resolve.load(BASE, overrides + ["sweep=whole"]))
    cfg = resolve.load(BASE, overrides + ["sweep=pieces"])
    assert train(cfg, stop_after_epochs=1)["status"] == "interrupted"
    resumed = train(cfg)
    assert resumed["status"] == "completed"
    # mask_updates: the first session's count travels in the checkpoint (issue 32)
    assert whole["mask_updates"] > 0
    for k in ("final_test_acc", "final_train_loss", "actual_density", "train_flops",
              "layer_densities", "mask_updates"):
        assert resumed[k] == whole[k], k
    assert (paths.run_dir("pieces", run_id(cfg)) / paths.RESULT).is_file()
