"""Layer-wise densities: uniform, ER and ERK add up to the global target, no layer above 1."""
from __future__ import annotations

import math

import pytest

from sparsebench.models import build_model
from sparsebench.sparsity import active_counts, layer_densities, prunable_modules

MODELS = [("mlp", (1, 28, 28)), ("lenet5", (1, 28, 28)), ("resnet20", (3, 32, 32)),
          ("vgg16", (3, 32, 32)), ("vit", (3, 32, 32))]


def _shapes(name, in_shape):
    model = build_model(name, num_classes=10, in_shape=in_shape)
    return {n: tuple(m.weight.shape) for n, m in prunable_modules(model)}


@pytest.mark.parametrize("kind", ["uniform", "er", "erk"])
@pytest.mark.parametrize("model, in_shape", MODELS)
@pytest.mark.parametrize("density", [0.5, 0.1, 0.02])
def test_densities_sum_to_target_and_stay_at_most_one(kind, model, in_shape, density):
    shapes = _shapes(model, in_shape)
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    dens = layer_densities(shapes, density, kind)
    assert all(0 < d <= 1 + 1e-12 for d in dens.values())
    total = sum(sizes.values())
    assert sum(dens[n] * sizes[n] for n in shapes) == pytest.approx(density * total, rel=1e-9)
    counts = active_counts(shapes, dens, total_density=density)
    assert sum(counts.values()) == round(density * total)
    assert all(1 <= counts[n] <= sizes[n] for n in shapes)


def test_erk_redistributes_layers_that_would_exceed_one():
    # The MLP's 100x10 classifier gets a raw ERK score far above the others: at 10 % density
    # it would need a density > 1, so it is made dense and the rest share the remaining budget.
    shapes = _shapes("mlp", (1, 28, 28))
    dens = layer_densities(shapes, 0.1, "erk")
    assert dens["net.5"] == 1.0
    assert dens["net.1"] < dens["net.3"] < 1.0


def test_er_and_erk_follow_their_formulas_on_linear_layers():
    shapes = {"a": (300, 784), "b": (100, 300)}
    dens = layer_densities(shapes, 0.2, "er")
    ratio = dens["a"] / dens["b"]
    assert ratio == pytest.approx(((300 + 784) / (300 * 784)) / ((100 + 300) / (100 * 300)))
    # For 2-D weights ERK equals ER; for convs ERK also counts the kernel.
    assert layer_densities(shapes, 0.2, "erk") == pytest.approx(dens)
    conv = {"c1": (16, 3, 3, 3), "c2": (32, 16, 3, 3)}
    erk, er = layer_densities(conv, 0.1, "erk"), layer_densities(conv, 0.1, "er")
    assert erk["c1"] / erk["c2"] == pytest.approx((25 / 432) / (54 / 4608))
    assert er["c1"] / er["c2"] == pytest.approx(((16 + 3) / 48) / ((32 + 16) / 512))


def test_uniform_is_uniform_and_bad_input_rejected():
    shapes = {"a": (10, 10), "b": (5, 7)}
    assert layer_densities(shapes, 0.3, "uniform") == {"a": 0.3, "b": 0.3}
    with pytest.raises(ValueError):
        layer_densities(shapes, 0.0, "erk")
    with pytest.raises(ValueError):
        layer_densities(shapes, 0.5, "random")
