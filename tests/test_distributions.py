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


@pytest.mark.parametrize("kind", ["uniform", "er", "er_flat", "erk"])
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


# ---- er_flat: the GSE authors' Erdős–Rényi of the flattened (out, fan_in) weight --------------

def _er_flat_by_formula(shapes, density):
    """ε·(out + fan_in)/(out·fan_in) with fan_in = C_in·k_h·k_w, written out from the formula;
    a layer that would pass 1 is made dense and ε solved again over the rest."""
    size = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: (s[0] + math.prod(s[1:])) / (s[0] * math.prod(s[1:])) for n, s in shapes.items()}
    dense = set()
    while True:
        rest = [n for n in shapes if n not in dense]
        eps = (density * sum(size.values()) - sum(size[n] for n in dense)) / sum(raw[n] * size[n] for n in rest)
        over = [n for n in rest if eps * raw[n] > 1]
        if not over:
            return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}
        dense.add(max(over, key=lambda n: raw[n]))


def test_er_flat_on_resnet56_cifar100_gives_the_classifier_its_share():
    model = build_model("resnet56", num_classes=100, in_shape=(3, 32, 32))
    shapes = {n: tuple(m.weight.shape) for n, m in prunable_modules(model)}
    classifier = list(shapes)[-1]
    assert shapes[classifier] == (100, 64)
    expected = _er_flat_by_formula(shapes, 0.02)
    dens = layer_densities(shapes, 0.02, "er_flat")
    for n in shapes:
        assert dens[n] == pytest.approx(expected[n], rel=1e-12), n
        assert dens[n] <= 1
    counts = active_counts(shapes, dens, total_density=0.02)
    total = sum(math.prod(s) for s in shapes.values())
    assert sum(counts.values()) == round(0.02 * total)          # the total is exact
    assert counts[classifier] >= 100                             # every class can have an input
    # RigL's `er` counts only a conv's channels and starves the classifier (about 78).
    er = active_counts(shapes, layer_densities(shapes, 0.02, "er"), total_density=0.02)
    assert er[classifier] < 100 < counts[classifier]


def test_er_flat_redistributes_and_equals_er_on_linear_layers():
    shapes = _shapes("mlp", (1, 28, 28))
    for density in (0.5, 0.1, 0.02):
        assert layer_densities(shapes, density, "er_flat") == layer_densities(shapes, density, "er")
    # at 50 % the 100x10 classifier would pass 1: it is made dense, the rest share what is left
    dens = layer_densities(shapes, 0.5, "er_flat")
    assert dens == pytest.approx(_er_flat_by_formula(shapes, 0.5))
    assert max(dens.values()) == 1.0
