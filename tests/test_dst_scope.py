"""GSE's schedule for its baselines: ``scope: global`` and ``regrow_dropped`` for SET and RigL
(sparsebench.sparsity.dst.replace_smallest), and magnitude pruning's cosine ramp."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sparsebench import methods
from sparsebench.methods import StepContext
from sparsebench.sparsity import SparsityEngine
from sparsebench.sparsity.dst import replace_smallest


def _engine(seed=0, density=0.3):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 20), nn.Linear(20, 6))
    engine = SparsityEngine.for_model(model, density, "er_flat")
    engine.random_masks(torch.Generator().manual_seed(seed))
    engine.apply_masks()
    return model, engine


def _flat_active(engine):
    return {(layer.name, int(i)) for layer in engine.layers
            for i in layer.mask.flatten().nonzero().squeeze(1)}


def _global_order(engine, scores, pick, largest):
    entries = [(float(scores[layer.name].flatten()[i]), layer.name, i) for layer in engine.layers
               for i in range(layer.numel) if pick(layer, i)]
    entries.sort(key=lambda e: e[0], reverse=largest)
    return entries


@pytest.mark.parametrize("regrow", [True, False])
def test_global_scope_prunes_and_grows_by_one_global_top_k(regrow):
    model, engine = _engine()
    total = sum(layer.n_active() for layer in engine.layers)
    before = _flat_active(engine)
    weights = {layer.name: layer.weight.detach().abs().clone() for layer in engine.layers}
    gen = torch.Generator().manual_seed(5)
    grow = {layer.name: torch.rand(layer.weight.shape, generator=gen) for layer in engine.layers}
    n = int(0.25 * total)
    # the n smallest |w| over all layers' active connections, computed here by sorting
    drop = _global_order(engine, weights, lambda l, i: bool(l.mask.flatten()[i]), largest=False)[:n]
    dropped = {(name, i) for _, name, i in drop}
    eligible = lambda l, i: (not bool(l.mask.flatten()[i])) or (regrow and (l.name, i) in dropped)  # noqa: E731
    grown = {(name, i) for _, name, i in _global_order(engine, grow, eligible, largest=True)[:n]}
    replace_smallest(engine, 0.25, scope="global", regrow_dropped=regrow, grow_scores=grow)
    after = _flat_active(engine)
    assert after == (before - dropped) | grown
    assert len(after) == total                                       # the total is exact
    assert sum(layer.target_active for layer in engine.layers) == total
    assert all(layer.target_active == layer.n_active() for layer in engine.layers)
    # shares moved between layers (one ranking, not per-layer quotas)
    assert any(sum(1 for k in after if k[0] == layer.name) != sum(1 for k in before if k[0] == layer.name)
               for layer in engine.layers)
    for name, i in grown - before:                                   # new ones start at zero
        assert engine.by_name[name].weight.view(-1)[i] == 0


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("random_growth", [True, False])
def test_regrow_dropped_false_never_grows_a_connection_dropped_in_the_same_update(scope, random_growth):
    for seed in range(5):
        model, engine = _engine(seed)
        before = _flat_active(engine)
        # the grow score is highest exactly on the active connections, so a rule that lets the
        # dropped ones compete would pick them first
        grow = None if random_growth else {layer.name: layer.mask.float() + 0.01 * torch.rand(layer.weight.shape)
                                           for layer in engine.layers}
        totals = {layer.name: layer.n_active() for layer in engine.layers}
        replace_smallest(engine, 0.3, scope=scope, regrow_dropped=False, grow_scores=grow,
                         generator=torch.Generator().manual_seed(seed))
        after = _flat_active(engine)
        dropped = before - after
        assert dropped, "nothing was dropped"
        assert not (dropped & after)
        assert len(after) == len(before)
        if scope == "layer":
            assert {layer.name: layer.n_active() for layer in engine.layers} == totals
    # with regrow_dropped the same scores bring every dropped connection back: nothing changes
    model, engine = _engine(0)
    before = _flat_active(engine)
    grow = {layer.name: layer.mask.float() + 0.01 * torch.rand(layer.weight.shape) for layer in engine.layers}
    replace_smallest(engine, 0.3, scope=scope, regrow_dropped=True, grow_scores=grow)
    assert _flat_active(engine) == before


@pytest.mark.parametrize("name", ["set", "rigl"])
def test_set_and_rigl_take_scope_and_regrow_dropped(name):
    model, engine = _engine()
    cls = methods.get(name)
    params = cls.Params(scope="global", regrow_dropped=False, interval=2, drop_fraction=0.3)
    method = cls(params, engine, total_steps=10, steps_per_epoch=5, seed=0)
    before = _flat_active(engine)
    x, y = torch.randn(8, 3, 6, 6), torch.randint(0, 6, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    ctx = StepContext(step=1, epoch=0, total_steps=10, steps_per_epoch=5, model=model, batch=(x, y))
    method.update(ctx, 0.3)
    after = _flat_active(engine)
    assert len(after) == len(before) and not ((before - after) & after)
    assert len(before - after) == int(0.3 * len(before))


def test_magnitude_cosine_ramp():
    """The GSE paper's gradual pruning: from dense, count_t = target + round((N − target) ·
    ½(1 + cos(π p))), p = t / t_end, every Δt steps until t_end, where it is exactly the target."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 40), nn.ReLU(), nn.Linear(40, 5))
    engine = SparsityEngine.for_model(model, 0.1, "uniform")
    cls = methods.get("magnitude")
    method = cls(cls.Params(start=0.0, end=0.6, frequency=10, ramp="cosine"), engine,
                 total_steps=100, steps_per_epoch=10, seed=0)
    method.init_masks(None)
    engine.apply_masks()
    total, target = engine.num_prunable(), sum(layer.target_active for layer in engine.layers)
    seen = {}
    for step in range(100):
        ctx = StepContext(step=step, epoch=step // 10, total_steps=100, steps_per_epoch=10, model=model)
        method.after_step(ctx)
        seen[step + 1] = sum(layer.n_active() for layer in engine.layers)
    for t in range(0, 61, 10):
        expected = target + round((total - target) * 0.5 * (1 + math.cos(math.pi * t / 60)))
        assert seen.get(t, total) == expected, t
    assert seen[60] == target and seen[100] == target
    assert seen[30] == target + round((total - target) / 2)          # half-way at p = 1/2
    cubic = cls(cls.Params(start=0.0, end=0.6, frequency=10), engine, total_steps=100,
                steps_per_epoch=10, seed=0)
    assert cubic.remaining(30) == pytest.approx(0.125) and method.remaining(30) == pytest.approx(0.5)
