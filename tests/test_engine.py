"""The masked engine: inactive weights stay exactly zero with zero optimizer state; primitives."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsebench.config.schema import OptimConfig
from sparsebench.training.schedules import build_optimizer
from sparsebench.sparsity import SparsityEngine


def _setup(opt_name: str, density=0.2, **opt):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    engine = SparsityEngine.for_model(model, density, "erk")
    engine.random_masks(torch.Generator().manual_seed(1))
    optimizer = build_optimizer(OptimConfig(name=opt_name, lr=0.05, weight_decay=0.1, **opt), model)
    engine.attach_optimizer(optimizer)
    return model, engine, optimizer


def _train_steps(model, engine, optimizer, steps=20):
    for _ in range(steps):
        x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        engine.mask_gradients()
        optimizer.step()


@pytest.mark.parametrize("opt_name, extra", [("sgd", {"momentum": 0.9}),
                                             ("sgd", {"momentum": 0.9, "nesterov": True}),
                                             ("adamw", {})])
def test_masked_weights_and_state_stay_zero(opt_name, extra):
    model, engine, optimizer = _setup(opt_name, **extra)
    _train_steps(model, engine, optimizer)
    for layer in engine.layers:
        inactive = ~layer.mask
        assert inactive.any()
        assert torch.count_nonzero(layer.weight[inactive]) == 0
        assert torch.count_nonzero(layer.weight[layer.mask]) == layer.n_active()  # active ones trained
        state = optimizer.state[layer.weight]
        tensors = [v for v in state.values() if torch.is_tensor(v) and v.shape == layer.weight.shape]
        assert tensors, "the optimizer keeps weight-shaped state"
        for t in tensors:
            assert torch.count_nonzero(t[inactive]) == 0


def test_random_masks_hit_exact_targets_and_global_density():
    model, engine, _ = _setup("sgd", density=0.1)
    for layer in engine.layers:
        assert layer.n_active() == layer.target_active
    assert engine.global_density() == pytest.approx(0.1, abs=1 / engine.num_prunable())
    assert engine.target_density() == engine.global_density()


def test_prune_and_grow_reset_weights_and_optimizer_state():
    model, engine, optimizer = _setup("sgd", momentum=0.9)
    _train_steps(model, engine, optimizer, steps=3)
    layer = engine.layers[1]
    weight = layer.weight.detach().abs()
    drop = layer.smallest_active(5, weight)
    active_scores = weight[layer.mask]
    assert torch.allclose(weight.view(-1)[drop].sort().values, active_scores.sort().values[:5])
    engine.prune(layer, drop)
    assert not layer.mask.view(-1)[drop].any()
    assert (layer.weight.view(-1)[drop] == 0).all()
    assert (optimizer.state[layer.weight]["momentum_buffer"].view(-1)[drop] == 0).all()

    score = torch.randn_like(layer.weight)
    grow = layer.largest_inactive(7, score)
    inactive_scores = score[~layer.mask]
    assert torch.allclose(score.view(-1)[grow].sort().values, inactive_scores.sort().values[-7:])
    engine.grow(layer, grow)
    assert layer.mask.view(-1)[grow].all()
    assert (layer.weight.view(-1)[grow] == 0).all()
    assert (optimizer.state[layer.weight]["momentum_buffer"].view(-1)[grow] == 0).all()
    assert layer.n_active() == layer.target_active + 2


def test_random_inactive_and_global_largest():
    model, engine, _ = _setup("sgd")
    layer = engine.layers[0]
    idx = layer.random_inactive(10, torch.Generator().manual_seed(0))
    assert idx.unique().numel() == 10 and not layer.mask.view(-1)[idx].any()
    scores = {"a": torch.tensor([1.0, 5.0, -float("inf")]), "b": torch.tensor([4.0, 2.0])}
    top = SparsityEngine.global_largest(scores, 3)
    assert sorted(top["a"].tolist()) == [1] and sorted(top["b"].tolist()) == [0, 1]
    top = SparsityEngine.global_largest(scores, 10)  # -inf entries are never chosen
    assert sorted(top["a"].tolist()) == [0, 1]


def test_dense_first_and_last_layers_are_not_prunable():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    engine = SparsityEngine.for_model(model, 0.5, "uniform", dense_first_layer=True,
                                      dense_last_layer=True)
    assert [layer.name for layer in engine.layers] == ["2"]


def test_state_dict_round_trip():
    _, engine, _ = _setup("sgd")
    state = engine.state_dict()
    _, other, _ = _setup("sgd")
    other.random_masks(torch.Generator().manual_seed(99))
    other.load_state_dict(state)
    for a, b in zip(engine.layers, other.layers):
        assert torch.equal(a.mask, b.mask)
