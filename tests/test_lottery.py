"""Lottery Ticket (issue 12): the method's prune-and-rewind moves on a small model, and the
trainer's rounds end to end on real Fashion-MNIST (metrics per round, result keys, costs over
all rounds, resume in a later round with the uninterrupted result)."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from sparsebench import methods, resolve
from sparsebench.storage import paths
from sparsebench.config.schema import run_id
from sparsebench.methods import InitContext, StepContext
from sparsebench.sparsity import SparsityEngine
from sparsebench.training import train

from .bad_config import assert_exits_2_naming
from .conftest import REPO, needs_fmnist

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")
TINY = ["data.train_subset=1024", "data.batch_size=128", "progress=false", "epochs=2",
        "method.name=lottery", "method.rounds=2", "density=0.1"]


def _lottery(density=0.02, rounds=5, scope="global", rewind_epoch=0, distribution="uniform",
             round_densities=()):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 40), nn.ReLU(), nn.Linear(40, 30), nn.ReLU(),
                          nn.Linear(30, 5))
    engine = SparsityEngine.for_model(model, density, distribution)
    cls = methods.get("lottery")
    method = cls(cls.Params(rounds=rounds, scope=scope, rewind_epoch=rewind_epoch,
                            round_densities=list(round_densities)), engine,
                 total_steps=10, steps_per_epoch=5, seed=0)
    method.init_masks(InitContext(model, lambda: iter(()), nn.functional.cross_entropy))
    engine.apply_masks()
    return model, engine, method


def test_defaults_and_rounds():
    cls = methods.get("lottery")
    assert dataclasses.asdict(cls.Params()) == {"rounds": 5, "rewind_epoch": 0, "scope": "global",
                                              "round_densities": []}
    assert cls.default_distribution == "uniform"
    _, engine, method = _lottery(rounds=3)
    assert method.rounds() == 4  # one dense round, then three pruned ones
    assert engine.global_density() == 1.0


def test_densities_go_geometrically_to_exactly_the_run_density():
    model, engine, method = _lottery(density=0.02, rounds=5)
    densities = []
    for r in range(1, 6):
        with torch.no_grad():  # "training" between rounds: new magnitudes
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        method.start_round(r, model)
        densities.append(engine.global_density())
    expected = [0.02 ** (r / 5) for r in range(1, 6)]
    assert densities == pytest.approx(expected, abs=2e-3)
    assert densities[-1] == engine.target_density()  # exactly the run's target
    assert densities[:4] == pytest.approx([0.457, 0.209, 0.0956, 0.0437], abs=2e-3)


@pytest.mark.parametrize("density, expected", [
    (0.02, [0.5, 0.25, 0.1, 0.05, 0.02]),      # the GSE authors' sparsities 50 ... 98 %
    (0.1, [0.5, 0.25, 0.1]),                   # a run at 10 % stops at its own density
    (0.07, [0.5, 0.25, 0.1, 0.07]),            # and ends at it where the list skips it
])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_round_densities_fix_each_round_s_density(density, expected, scope):
    authors = [0.5, 0.25, 0.1, 0.05, 0.02]
    model, engine, method = _lottery(density=density, round_densities=authors, scope=scope,
                                     distribution="er")
    assert method.rounds() == len(expected) + 1
    got = []
    for r in range(1, method.rounds()):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        method.start_round(r, model)
        got.append(engine.global_density())
    assert got[-1] == pytest.approx(engine.target_density(), abs=1e-9)
    if scope == "global":
        assert got == pytest.approx(expected, abs=2e-3)
    else:   # each layer on its own way to its ER target, the same fraction of the way
        assert all(a > b for a, b in zip(got, got[1:])) and got[0] < 1


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_prunes_trained_magnitudes_and_rewinds_survivors_to_init(scope):
    model, engine, method = _lottery(density=0.1, rounds=2, scope=scope)
    initial = {n: t.clone() for n, t in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    trained = {layer.name: layer.weight.detach().clone() for layer in engine.layers}
    keep = {layer.name: layer.numel for layer in engine.layers}
    method.start_round(1, model)
    for layer in engine.layers:
        mask = layer.mask
        # The survivors are the largest trained magnitudes (globally or in their layer) ...
        survivors = trained[layer.name].abs()[mask]
        pruned = trained[layer.name].abs()[~mask]
        if scope == "layer":
            assert survivors.min() >= pruned.max()
            assert layer.n_active() == round(keep[layer.name] * 0.1 ** 0.5)
        # ... and are back at their initial values; the pruned ones are zero.
        w = layer.weight.detach()
        assert torch.equal(w[mask], initial[f"{layer.name}.weight"][mask])
        assert torch.count_nonzero(w[~mask]) == 0
    if scope == "global":
        all_kept = torch.cat([trained[l.name].abs()[l.mask] for l in engine.layers])
        all_pruned = torch.cat([trained[l.name].abs()[~l.mask] for l in engine.layers])
        assert all_kept.min() >= all_pruned.max()
    biases = [n for n in initial if n.endswith("bias")]
    assert all(torch.equal(model.state_dict()[n], initial[n]) for n in biases)


def test_rewind_epoch_remembers_the_weights_after_that_epoch_of_round_zero():
    model, engine, method = _lottery(density=0.1, rounds=2, rewind_epoch=1)
    assert method.rewind_state is None
    with torch.no_grad():
        model[0].weight.add_(1.0)
    after_epoch_1 = model[0].weight.detach().clone()
    ctx = StepContext(step=4, epoch=0, total_steps=10, steps_per_epoch=5, model=model)
    method.end_of_epoch(ctx)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    method.end_of_epoch(StepContext(step=9, epoch=1, total_steps=10, steps_per_epoch=5, model=model))
    method.end_of_epoch(StepContext(step=4, epoch=0, total_steps=10, steps_per_epoch=5, model=model,
                                    round=1))  # later rounds never overwrite θ_k
    assert torch.equal(method.rewind_state["0.weight"], after_epoch_1)


@pytest.mark.parametrize("overrides, field", [
    (["method.rounds=0"], "method.rounds"),
    (["method.rewind_epoch=2", "epochs=2"], "method.rewind_epoch"),
    (["method.rewind_epoch=-1"], "method.rewind_epoch"),
    (["method.scope=row"], "method.scope"),
    (["sparsity.engine=sparse"], "sparsity.engine"),
    (["method.round_densities=[0.5, 0.7]"], "method.round_densities"),
    (["method.round_densities=[1.0, 0.5]"], "method.round_densities"),
])
def test_bad_values_exit_2_naming_the_field(overrides, field, capsys):
    assert_exits_2_naming(BASE, ["method.name=lottery", *overrides], field, capsys)


# ---- the trainer's rounds on real data -----------------------------------------------------------

def _metrics(sweep, cfg):
    text = (paths.run_dir(sweep, run_id(cfg)) / paths.METRICS).read_text()
    return [json.loads(line) for line in text.splitlines()]


@needs_fmnist
def test_rounds_through_the_trainer_and_resume_in_a_later_round():
    whole_cfg = resolve.load(BASE, TINY + ["sweep=whole"])
    whole = train(whole_cfg)
    assert whole["status"] == "completed"
    assert whole["rounds"] == 3 and len(whole["round_final_test_acc"]) == 3
    steps_per_round = 1024 // 128 * 2
    assert whole["steps"] == 3 * steps_per_round
    assert whole["epochs_completed"] == 6
    assert whole["actual_density"] == pytest.approx(0.1, abs=1e-4)
    densities = [r["density"] for r in whole["round_results"]]
    assert densities[0] == 1.0 and densities[1] == pytest.approx(0.1 ** 0.5, abs=1e-3)
    # All three rounds' FLOPs against one dense round: 1 + 0.316 + 0.1.
    assert whole["train_flops_rel_dense"] == pytest.approx(1 + 0.1 ** 0.5 + 0.1, rel=0.02)
    rows = _metrics("whole", whole_cfg)
    assert [r["round"] for r in rows] == [0, 0, 1, 1, 2, 2]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows][-1] == whole["steps"]
    assert whole["round_final_test_acc"] == [rows[1]["test_acc"], rows[3]["test_acc"],
                                             rows[5]["test_acc"]]
    # Interrupted after 3 epochs (in the second round), then once more, then to the end.
    cfg = resolve.load(BASE, TINY + ["sweep=pieces"])
    assert train(cfg, stop_after_epochs=3)["status"] == "interrupted"
    assert [r["round"] for r in _metrics("pieces", cfg)] == [0, 0, 1]
    assert train(cfg, stop_after_epochs=1)["status"] == "interrupted"  # stops at a round's end
    resumed = train(cfg)
    for key in ("final_test_acc", "best_test_acc", "final_train_loss", "actual_density",
                "train_flops", "steps", "round_final_test_acc", "layer_densities"):
        assert resumed[key] == whole[key], key
    assert [r["train_loss"] for r in _metrics("pieces", cfg)] == [r["train_loss"] for r in rows]
