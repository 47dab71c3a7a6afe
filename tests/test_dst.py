"""The shared dynamic-sparse-training schedule and the prune/grow compositions."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sparsebench.sparsity import SparsityEngine
from sparsebench.sparsity.dst import UpdateSchedule, grow_then_prune, prune_then_grow


def _schedule(**kw):
    p = dict(interval=10, start=0.0, end=0.75, drop_fraction=0.3, drop_schedule="cosine")
    p.update(kw)
    return UpdateSchedule.from_params(SimpleNamespace(**p), total_steps=100, steps_per_epoch=25)


def test_updates_every_interval_until_end_and_never_after_the_last_step():
    assert _schedule().update_steps() == [9, 19, 29, 39, 49, 59, 69]  # t = 10..70 <= 75
    assert _schedule(start=0.3).update_steps() == [29, 39, 49, 59, 69]
    # interval 0: after the last step of every epoch, except the final one (nothing would train it).
    assert _schedule(interval=0, end=1.0).update_steps() == [24, 49, 74]


def test_cosine_drop_fraction_and_constant():
    s = _schedule()
    for step in s.update_steps():
        t = step + 1
        assert s.fraction_at(step) == pytest.approx(0.3 / 2 * (1 + math.cos(math.pi * t / 75)))
    assert s.fraction_at(-1) == pytest.approx(0.3)          # t = 0: α
    assert s.fraction_at(74) == pytest.approx(0.0, abs=1e-12)  # t = T_end: 0
    assert s.fraction_at(80) == 0.0
    assert _schedule(drop_schedule="constant").fraction_at(49) == 0.3


def _layer_engine(density=0.3, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 5))
    engine = SparsityEngine.for_model(model, density, "uniform")
    engine.random_masks(torch.Generator().manual_seed(seed))
    engine.apply_masks()
    return model, engine


def test_prune_then_grow_drops_smallest_and_grows_largest_keeping_regrown_values():
    model, engine = _layer_engine()
    layer = engine.layers[0]
    n = 6
    drop_score = layer.weight.detach().abs()
    before_mask = layer.mask.clone()
    before_w = layer.weight.detach().clone()
    smallest = set(layer.smallest_active(n, drop_score).tolist())
    grow_score = torch.rand(layer.weight.shape)
    # Make two of the dropped connections the best growth candidates: they must stay.
    back = sorted(smallest)[:2]
    grow_score.view(-1)[back] = 10.0
    eligible = (~before_mask).flatten().clone()
    eligible[list(smallest)] = True
    expected_grown = set(torch.topk(grow_score.flatten().masked_fill(~eligible, -1), n).indices.tolist())
    prune_then_grow(engine, layer, n, drop_score=drop_score, grow_score=grow_score)
    after = layer.mask.flatten()
    assert layer.n_active() == layer.target_active
    now_active = set(after.nonzero().squeeze(1).tolist())
    was_active = set(before_mask.flatten().nonzero().squeeze(1).tolist())
    assert was_active - now_active == smallest - expected_grown
    assert now_active - was_active == expected_grown - smallest
    for i in back:  # a regrown just-dropped connection keeps its weight (RigL reinit_when_same=False)
        assert after[i] and layer.weight.view(-1)[i] == before_w.view(-1)[i]
    for i in now_active - was_active:
        assert layer.weight.view(-1)[i] == 0


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_grow_then_prune_protects_grown_and_returns_to_budget(scope):
    model, engine = _layer_engine()
    grown = {}
    for layer in engine.layers:
        inactive = (~layer.mask.flatten()).nonzero().squeeze(1)
        grown[layer.name] = inactive[:3]
    total = sum(layer.target_active for layer in engine.layers)
    keep = total if scope == "global" else {layer.name: layer.target_active for layer in engine.layers}
    values = {layer.name: layer.weight.detach().clone() for layer in engine.layers}
    pruned = grow_then_prune(engine, grown, keep)
    assert sum(layer.n_active() for layer in engine.layers) == total
    all_active_scores = []
    for layer in engine.layers:
        assert layer.mask.flatten()[grown[layer.name]].all()          # grown survive (w = 0)
        assert (layer.weight.view(-1)[grown[layer.name]] == 0).all()
        assert not layer.mask.flatten()[pruned[layer.name]].any()
        if scope == "layer":
            assert layer.n_active() == layer.target_active
            kept = values[layer.name].flatten()[layer.mask.flatten()].abs()
            kept = kept[~torch.isin(layer.mask.flatten().nonzero().squeeze(1), grown[layer.name])]
            assert kept.min() >= values[layer.name].flatten()[pruned[layer.name]].abs().max()
        all_active_scores.append(values[layer.name].flatten()[pruned[layer.name]].abs())
    if scope == "global":  # one bottom-k over every layer: nothing kept is smaller than a pruned one
        pruned_max = torch.cat(all_active_scores).max()
        kept_min = min(values[l.name].flatten()[l.mask.flatten()].abs()[
            ~torch.isin(l.mask.flatten().nonzero().squeeze(1), grown[l.name])].min() for l in engine.layers)
        assert kept_min >= pruned_max
