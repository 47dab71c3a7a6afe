"""GraSP and SynFlow (issue 12): their scores against direct computation on models small
enough to do it by hand, the sets they keep, SynFlow avoiding layer collapse where SNIP does
not, their one-off FLOPs, and their parameter validation."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.func import functional_call

from sparsebench import methods
from sparsebench.flops import FlopModel
from sparsebench.data import TensorLoader
from sparsebench.methods import InitContext
from sparsebench.scoring import ScoreBatches
from sparsebench.sparsity import SparsityEngine

from .bad_config import assert_exits_2_naming
from .conftest import REPO

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")


def _method(name, model, density, **params):
    engine = SparsityEngine.for_model(model, density, "uniform")
    cls = methods.get(name)
    return engine, cls(cls.Params(**params), engine, total_steps=10, steps_per_epoch=5, seed=0)


def _ctx(model, batches):
    return InitContext(model, lambda: iter(batches), nn.functional.cross_entropy)


def test_defaults():
    assert dataclasses.asdict(methods.get("grasp").Params()) == {
        "batches": 1, "temperature": 200.0, "score_samples_per_class": 0}
    assert dataclasses.asdict(methods.get("synflow").Params()) == {"iterations": 100}
    for name in ("grasp", "synflow"):
        assert methods.get(name).default_distribution == "uniform"


# ---- GraSP ---------------------------------------------------------------------------------------

def test_grasp_score_is_minus_theta_times_hessian_gradient_and_keeps_the_smallest():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (6,))
    temperature = 2.0
    engine, grasp = _method("grasp", model, 0.4, temperature=temperature)
    scores = grasp.scores(_ctx(model, [(x, y)]))

    # Direct: the explicit Hessian of the loss w.r.t. both weight matrices, flattened.
    names = ["0.weight", "2.weight"]
    params = dict(model.named_parameters())
    sizes = [params[n].numel() for n in names]

    def loss_of(flat):
        parts = dict(zip(names, torch.split(flat, sizes)))
        weights = {n: parts[n].view_as(params[n]) for n in names}
        out = functional_call(model, {**{k: v.detach() for k, v in params.items()}, **weights}, (x,))
        return nn.functional.cross_entropy(out / temperature, y)

    theta = torch.cat([params[n].detach().flatten() for n in names])
    g = torch.autograd.functional.jacobian(loss_of, theta)
    hessian = torch.autograd.functional.hessian(loss_of, theta)
    expected = -theta * (hessian @ g)
    got = torch.cat([scores["0"].flatten(), scores["2"].flatten()])
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-12)
    assert expected.abs().max() > 0

    # The kept set: the target count with the smallest S (the paper removes the top scores).
    grasp.init_masks(_ctx(model, [(x, y)]))
    kept = torch.cat([engine.by_name[n].mask.flatten() for n in ("0", "2")])
    k = int(kept.sum())
    assert k == sum(layer.target_active for layer in engine.layers)
    assert set(kept.nonzero().squeeze(1).tolist()) == set(torch.topk(-expected, k).indices.tolist())


def test_grasp_leaves_buffers_and_counts_its_scoring_flops():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    engine, grasp = _method("grasp", model, 0.2, batches=2)
    batches = [(torch.randn(5, 8), torch.randint(0, 3, (5,))) for _ in range(3)]
    flops = FlopModel(model, engine, (8,))
    scoring = ScoreBatches(TensorLoader(torch.zeros(5, 1, 1, 8), torch.zeros(5, dtype=torch.long), 5,
                                        shuffle=False, drop_last=True),
                           model=model, samples_per_class=0, num_classes=3, seed=0, flop_model=flops,
                           loss_fn=nn.functional.cross_entropy)
    grasp.init_masks(InitContext(model, lambda: iter(batches), nn.functional.cross_entropy, scoring=scoring))
    engine.apply_masks()
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    assert engine.global_density() == pytest.approx(engine.target_density())
    assert scoring.take_flops() == 9.0 * flops.dense_forward() * 10  # two batches of 5


def test_grasp_scores_a_vit_whose_attention_kernel_has_no_double_backward():
    """The fused attention kernels have no derivative of their backward; GraSP's Hg needs
    one, so it scores with the math kernel (the miniature's ViT runs failed without)."""
    from sparsebench.models import build_model

    torch.manual_seed(0)
    model = build_model("simple_vit_tiny", num_classes=10, in_shape=(3, 32, 32), width=0.0625)
    engine, grasp = _method("grasp", model, 0.1)
    grasp.init_masks(_ctx(model, [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))]))
    engine.apply_masks()
    assert engine.global_density() == pytest.approx(engine.target_density(), abs=1e-3)


# ---- SynFlow -------------------------------------------------------------------------------------

def test_synflow_score_is_the_path_count_through_each_connection():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 2, bias=False))
    methods.discover()  # method files load as sparsebench_methods.<file>
    from sparsebench_methods.synflow import positive_linearized_copy, synaptic_saliency

    twin = positive_linearized_copy(model)
    modules = dict(twin.named_modules())
    scores = synaptic_saliency(twin, {"0": modules["0"].weight, "2": modules["2"].weight}, (3,))
    w1, w2 = model[0].weight.detach().abs().double(), model[2].weight.detach().abs().double()
    # By hand: every path i -> j -> k of an all-ones input carries |W1[j,i]|·|W2[k,j]|; a
    # connection's flow is the sum over the paths through it, R the sum over all paths.
    paths = w2[:, :, None] * w1[None, :, :]                # [k, j, i]: w2[k,j]·w1[j,i]
    total = paths.sum()
    assert torch.allclose(scores["0"], paths.sum(0) / total)   # through W1[j, i]: sum over k
    assert torch.allclose(scores["2"], paths.sum(2) / total)   # through W2[k, j]: sum over i
    assert model[0].weight.dtype == torch.float32 and (model[0].weight < 0).any()  # untouched


def _bottleneck():
    return nn.Sequential(nn.Linear(64, 1024), nn.ReLU(), nn.Linear(1024, 8), nn.ReLU(),
                         nn.Linear(8, 1024), nn.ReLU(), nn.Linear(1024, 10))


def test_synflow_keeps_every_layer_at_98_percent_sparsity_where_snip_collapses_one():
    g = torch.Generator().manual_seed(1)
    # Small-scale inputs: SNIP's first-layer scores |g·w| scale with them, SynFlow is data-free.
    batches = [(0.01 * torch.randn(64, 64, generator=g), torch.randint(0, 10, (64,), generator=g))]
    kept = {}
    for name in ("snip", "synflow"):
        torch.manual_seed(0)
        model = _bottleneck()
        initial = {n: p.detach().clone() for n, p in model.named_parameters()}
        engine, method = _method(name, model, 0.02)
        method.init_masks(_ctx(model, batches))
        engine.apply_masks()
        assert engine.global_density() == pytest.approx(0.02, abs=1e-4)
        kept[name] = {layer.name: layer.n_active() for layer in engine.layers}
        if name == "synflow":  # kept weights keep their initial values and signs
            for layer in engine.layers:
                w = layer.weight.detach()
                assert torch.equal(w[layer.mask], initial[f"{layer.name}.weight"][layer.mask])
    assert min(kept["synflow"].values()) > 0, kept
    assert min(kept["snip"].values()) == 0, kept


def test_synflow_schedule_and_flops():
    torch.manual_seed(0)
    model = _bottleneck()
    engine, synflow = _method("synflow", model, 0.02, iterations=10)
    flops = FlopModel(model, engine, (64,))
    synflow.init_masks(_ctx(model, [(torch.randn(4, 64), torch.zeros(4, dtype=torch.long))]))
    # Iteration k scores at density d^((k-1)/10): the first at full density.
    densities = [sum(d[n] * engine.by_name[n].numel for n in d) / engine.num_prunable()
                 for d in synflow.scored_densities]
    assert densities == pytest.approx([0.02 ** (k / 10) for k in range(10)], abs=1e-4)
    expected = sum(3.0 * flops.forward_at(d) for d in synflow.scored_densities)
    assert synflow.init_flops(flops) == pytest.approx(expected)
    assert 3.0 * flops.dense_forward() < expected < 10 * 3.0 * flops.dense_forward()


@pytest.mark.parametrize("overrides, field", [
    (["method.name=grasp", "method.batches=0"], "method.batches"),
    (["method.name=grasp", "method.temperature=0"], "method.temperature"),
    (["method.name=grasp", "sparsity.engine=sparse"], "sparsity.engine"),
    (["method.name=synflow", "method.iterations=0"], "method.iterations"),
    (["method.name=synflow", "method.scope=layer"], "method.scope"),
])
def test_bad_values_exit_2_naming_the_field(overrides, field, capsys):
    assert_exits_2_naming(BASE, overrides, field, capsys)
