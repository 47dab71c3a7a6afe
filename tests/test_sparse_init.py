"""``sparsity.init: active_fan_in``: the GSE authors' U(±√(3 / active fan-in)) per output unit,
on a conv and a linear layer, on both engines, and where in initialization it is applied."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsebench import methods
from sparsebench.methods import InitContext
from sparsebench.sparsity import SparsityEngine
from sparsebench.sparsity.init import active_fan_in, apply_init
from sparsebench.sparsity.engine import build_engine

from .conftest import needs_fmnist


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(16, 64, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(64 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 10))


def _rows(engine, layer):
    """Per output unit: its active weights (flat-index order)."""
    idx = layer.active_indices().cpu()
    values = layer.active_values().cpu().double()
    rows = torch.div(idx, layer.fan_in, rounding_mode="floor")
    return [values[rows == i] for i in range(layer.out_features)]


@pytest.mark.parametrize("engine_kind", ["masked", "sparse"])
def test_active_fan_in_gives_unit_variance_times_fan_in_per_output_unit(engine_kind):
    model = _model()
    engine = build_engine(model, 0.3, "uniform", engine=engine_kind)
    engine.random_masks(torch.Generator().manual_seed(1))
    engine.apply_masks()
    apply_init("active_fan_in", engine, seed=3)
    for layer in engine.layers[:2]:            # the conv (masked on both engines) and a linear
        fan = active_fan_in(layer)
        rows = _rows(engine, layer)
        scaled = []
        for i, w in enumerate(rows):
            c = int(fan[i])
            assert w.numel() == c
            bound = (3.0 / c) ** 0.5
            assert w.abs().max() <= bound + 1e-6          # U(±√(3/c)) exactly
            scaled.append(w * c ** 0.5)                    # Var(w)·c = 1  <=>  Var(w·√c) = 1
        pooled = torch.cat(scaled)
        assert pooled.var().item() == pytest.approx(1.0, abs=0.05), layer.name
        # per unit too (each has ~100+ active inputs here: a loose bound per unit)
        per_unit = torch.stack([s.var() for s in scaled])
        assert per_unit.mean().item() == pytest.approx(1.0, abs=0.05)
        assert (per_unit > 0.6).all() and (per_unit < 1.5).all()
        bias = layer.module.bias.detach().cpu().double()
        assert (bias.abs() <= (3.0 / fan.clamp_min(1).double()).sqrt() + 1e-6).all()
    if engine_kind == "masked":
        for layer in engine.layers:                       # inactive weights stay exactly zero
            assert torch.count_nonzero(layer.weight.detach()[~layer.mask]) == 0


def test_model_init_is_left_alone_and_the_rule_is_reproducible():
    model = _model()
    engine = SparsityEngine.for_model(model, 0.3, "uniform")
    engine.random_masks(torch.Generator().manual_seed(1))
    engine.apply_masks()
    before = [layer.weight.detach().clone() for layer in engine.layers]
    apply_init("model", engine, seed=3)
    assert all(torch.equal(b, layer.weight) for b, layer in zip(before, engine.layers))
    apply_init("active_fan_in", engine, seed=3)
    first = [layer.weight.detach().clone() for layer in engine.layers]
    apply_init("active_fan_in", engine, seed=3)
    assert all(torch.equal(a, layer.weight) for a, layer in zip(first, engine.layers))
    assert not torch.equal(first[0], before[0])


def test_the_variance_no_longer_shrinks_with_density():
    """A unit's pre-activation variance for unit-variance inputs: ≈ density under the model's
    own init rescaled, ≈ 1 under active_fan_in at every density (the point of the rule)."""
    x = torch.randn(4096, 784, generator=torch.Generator().manual_seed(0))
    for density in (0.5, 0.05):
        model = nn.Sequential(nn.Linear(784, 300))
        engine = SparsityEngine.for_model(model, density, "uniform")
        engine.random_masks(torch.Generator().manual_seed(1))
        engine.apply_masks()
        apply_init("active_fan_in", engine, seed=0)
        with torch.no_grad():
            out = x @ model[0].weight.t()
        assert out.var().item() == pytest.approx(1.0, abs=0.1)


@needs_fmnist
def test_pruning_methods_get_the_rule_at_full_fan_in_before_they_score(tmp_path):
    """SNIP scores the weights it starts from: the trainer draws them at full fan-in first
    (the authors prune a dense model drawn by the same rule), then keeps the survivors."""
    from sparsebench import resolve
    from sparsebench.training import Trainer

    assert methods.get("snip").scores_initial_weights and methods.get("magnitude").scores_initial_weights
    assert not methods.get("static").scores_initial_weights

    seen = {}
    snip = methods.get("snip")
    original = snip.init_masks

    def spy(self, ctx: InitContext):
        seen["weights"] = [layer.weight.detach().clone() for layer in self.engine.layers]
        return original(self, ctx)

    snip.init_masks = spy
    try:
        cfg = resolve.load(None, ["method.name=snip", "sparsity.init=active_fan_in", "density=0.1",
                                  "data.train_subset=512", "epochs=1", "progress=false"])
        trainer = Trainer(cfg, tmp_path)
        trainer.init_masks()
    finally:
        snip.init_masks = original
    for layer, w0 in zip(trainer.engine.layers, seen["weights"]):
        bound = (3.0 / layer.fan_in) ** 0.5                          # full fan-in
        assert w0.abs().max() <= bound + 1e-6 and w0.abs().max() > 0.9 * bound
        kept = layer.mask
        assert torch.equal(layer.weight.detach()[kept], w0[kept])   # survivors keep their values

