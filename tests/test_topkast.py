"""Top-KAST (issue 12) through the trainer's own step (``trainer.training_step``): the forward
set is the top-D after every refresh, weights outside the backward set never change, the
exploration penalty's gradient is the formula's, weight decay is left to the penalty, FLOPs
count forward at D and backward at D_b, and a run resumes to the uninterrupted result."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from sparsebench import methods, resolve
from sparsebench.config.schema import OptimConfig
from sparsebench.flops import FlopModel
from sparsebench.methods import InitContext, StepContext
from sparsebench.training.schedules import build_optimizer
from sparsebench.sparsity import SparsityEngine
from sparsebench.training import train, training_step

from .bad_config import assert_exits_2_naming
from .conftest import REPO, needs_fmnist

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")
WEIGHT_DECAY = 0.01


def _setup(density=0.2, weight_decay=WEIGHT_DECAY, **params):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 30), nn.ReLU(), nn.Linear(30, 20), nn.ReLU(),
                          nn.Linear(20, 4))
    engine = SparsityEngine.for_model(model, density, "uniform")
    cls = methods.get("topkast")
    method = cls(cls.Params(**params), engine, total_steps=40, steps_per_epoch=10, seed=0)
    optimizer = build_optimizer(OptimConfig(lr=0.05, momentum=0.9, weight_decay=weight_decay),
                                model, method.regularized_parameters(weight_decay))
    engine.attach_optimizer(optimizer)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(16, 12, generator=g), torch.randint(0, 4, (16,), generator=g))
               for _ in range(4)]
    method.init_masks(InitContext(model, lambda: iter(batches), nn.functional.cross_entropy))
    engine.apply_masks()
    return model, engine, method, optimizer, batches


def _step(model, engine, method, optimizer, batch, step):
    ctx = StepContext(step=step, epoch=step // 10, total_steps=40, steps_per_epoch=10, model=model)
    training_step(model, nn.functional.cross_entropy, optimizer, engine, method, ctx, *batch)


def test_defaults():
    cls = methods.get("topkast")
    assert dataclasses.asdict(cls.Params()) == {"backward_density": 0.0, "explore_epochs": 20.0,
                                                "interval": 1000, "penalty": "squared",
                                                "entering_weight": "theta",
                                                "keep_momentum_outside_b": False, "sets": "topk"}
    assert cls.default_distribution == "uniform"


def test_forward_set_is_the_top_d_by_magnitude_after_every_refresh():
    model, engine, method, opt, batches = _setup(explore_epochs=1, interval=7)
    for step in range(30):
        _step(model, engine, method, opt, batches[step % 4], step)
        for layer in engine.layers:
            # A is the forward weight's support and exactly the layer's target count
            assert layer.n_active() == layer.target_active
            assert torch.count_nonzero(layer.weight.detach()[~layer.mask]) == 0
            assert int(layer.trainable.sum()) == round(2 * layer.target_active)
            assert bool((layer.trainable | ~layer.mask).all())  # B ⊇ A
    refreshes = [s for s in range(30) if method.is_refresh(s)]
    assert refreshes == list(range(1, 10)) + [14, 21, 28]  # every step in epoch 0, then ΔT = 7
    # Right after a refresh, A and B are the top-D and top-D_b of |θ|.
    method.before_forward(StepContext(step=1, epoch=0, total_steps=40, steps_per_epoch=10,
                                      model=model))
    for layer in engine.layers:
        magnitude = method.theta(layer).abs().flatten()
        order = magnitude.argsort(descending=True)
        assert set(layer.mask.flatten().nonzero().squeeze(1).tolist()) == \
            set(order[:layer.target_active].tolist())
        assert magnitude[layer.mask.flatten()].min() >= magnitude[~layer.mask.flatten()].max()
        b = layer.trainable.flatten()
        assert magnitude[b].min() >= magnitude[~b].max()


def test_weights_outside_the_backward_set_never_change_and_b_minus_a_trains():
    model, engine, method, opt, batches = _setup(explore_epochs=0, interval=1000)  # no refresh
    before = {layer.name: method.theta(layer).clone() for layer in engine.layers}
    for step in range(12):
        _step(model, engine, method, opt, batches[step % 4], step)
    for layer in engine.layers:
        theta = method.theta(layer)
        outside_b = ~layer.trainable
        just_b = layer.trainable & ~layer.mask
        assert torch.equal(theta[outside_b], before[layer.name][outside_b])
        assert not torch.equal(theta[just_b], before[layer.name][just_b])  # trained, off A
        assert not torch.equal(theta[layer.mask], before[layer.name][layer.mask])
        for state in opt.state[layer.weight].values():
            assert torch.count_nonzero(state[outside_b]) == 0


@pytest.mark.parametrize("form", ["squared", "norm"])
def test_penalty_gradient_matches_the_formula(form):
    model, engine, method, opt, batches = _setup(density=0.25, explore_epochs=0, penalty=form)
    x, y = batches[0]
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    task = {layer.name: layer.weight.grad.clone() for layer in engine.layers}
    method.after_backward(StepContext(step=0, epoch=0, total_steps=40, steps_per_epoch=10,
                                      model=model))
    for layer in engine.layers:
        # squared: λ/2 · (Σ_A θ² + Σ_{B\A} θ² / D); norm (the GSE authors'): λ · (‖θ_A‖₂ +
        # ‖θ_{B\A}‖₂ / D); differentiated by autograd on a free copy of θ
        theta = method.theta(layer).clone().requires_grad_(True)
        density = layer.target_active / layer.numel
        a, just_b = layer.mask, layer.trainable & ~layer.mask
        if form == "squared":
            penalty = WEIGHT_DECAY / 2 * ((theta[a] ** 2).sum() + (theta[just_b] ** 2).sum() / density)
        else:
            penalty = WEIGHT_DECAY * (theta[a].norm() + theta[just_b].norm() / density)
        (expected,) = torch.autograd.grad(penalty, theta)
        added = layer.weight.grad - task[layer.name]
        b = layer.trainable
        assert torch.allclose(added[b], expected[b], atol=1e-7)
        assert expected[just_b].abs().sum() > 0
    assert float(method.penalty_value()) > 0
    expected_value = sum(
        WEIGHT_DECAY / 2 * ((t[l.mask] ** 2).sum() + (t[l.trainable & ~l.mask] ** 2).sum() * l.numel / l.target_active)
        if form == "squared" else
        WEIGHT_DECAY * (t[l.mask].norm() + t[l.trainable & ~l.mask].norm() * l.numel / l.target_active)
        for l, t in ((l, method.theta(l)) for l in engine.layers))
    assert float(method.penalty_value()) == pytest.approx(float(expected_value), rel=1e-6)


def test_weight_decay_is_left_to_the_penalty_only_for_prunable_weights():
    model, engine, method, opt, _ = _setup()
    prunable = {id(layer.weight) for layer in engine.layers}
    for group in opt.param_groups:
        for p in group["params"]:
            if id(p) in prunable:
                assert group["weight_decay"] == 0.0
            else:  # biases keep the configured decay
                assert group["weight_decay"] == WEIGHT_DECAY
    assert method.penalty == WEIGHT_DECAY


def test_flops_forward_at_d_backward_at_d_b():
    model, engine, method, opt, batches = _setup(density=0.2, backward_density=0.5)
    fm = FlopModel(model, engine, (12,))
    assert all(int(layer.trainable.sum()) == round(0.5 * layer.numel) for layer in engine.layers)
    at_b = fm.forward_at({layer.name: 0.5 for layer in engine.layers})
    ctx = StepContext(step=0, epoch=0, total_steps=40, steps_per_epoch=10, model=model)
    assert method.step_flops(ctx, fm) == pytest.approx(fm.sparse_forward() + 2 * at_b)
    assert engine.global_density() == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize("overrides, field", [
    (["method.backward_density=0.05", "density=0.1"], "method.backward_density"),
    (["method.backward_density=1.5"], "method.backward_density"),
    (["method.explore_epochs=-1"], "method.explore_epochs"),
    (["method.interval=-2"], "method.interval"),
    (["method.penalty=l1"], "method.penalty"),
    (["sparsity.engine=sparse"], "sparsity.engine"),
])
def test_bad_values_exit_2_naming_the_field(overrides, field, capsys):
    assert_exits_2_naming(BASE, ["method.name=topkast", *overrides], field, capsys)


@needs_fmnist
def test_resume_gives_the_uninterrupted_result():
    overrides = ["data.train_subset=1024", "progress=false", "epochs=2", "method.name=topkast",
                 "method.interval=3", "method.explore_epochs=1", "density=0.1"]
    whole = train(resolve.load(BASE, overrides + ["sweep=whole"]))
    cfg = resolve.load(BASE, overrides + ["sweep=pieces"])
    assert train(cfg, stop_after_epochs=1)["status"] == "interrupted"
    resumed = train(cfg)
    for key in ("final_test_acc", "final_train_loss", "actual_density", "train_flops", "steps"):
        assert resumed[key] == whole[key], key
    assert whole["actual_density"] == pytest.approx(0.1, abs=1e-4)
    # Forward at D, backward at 2D: 3·f_S-relative cost between D and 2D.
    assert 0.1 < whole["train_flops_rel_dense"] < 0.2
