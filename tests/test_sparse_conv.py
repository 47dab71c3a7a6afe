"""The always-sparse convolution: its maths against nn.Conv2d, the engine swapping the CNNs'
convs, GSE's trajectory on both engines for a ResNet, SET on the sparse engine, methods that
need dense tensors refusing it, and no tensor of a conv weight's size in a ResNet-20 step."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparsebench import methods, resolve
from sparsebench.config.schema import ConfigError, OptimConfig
from sparsebench.flops import FlopModel
from sparsebench.methods import StepContext
from sparsebench.models import build_model
from sparsebench.training.schedules import build_optimizer
from sparsebench.sparsity.sparse_conv import SparseConv2d, _Im2colConvFunction
from sparsebench.sparsity.sparse_linear import CsrStructure
from sparsebench.sparsity import SparseLayer, build_engine
from sparsebench.training import training_step

from .conftest import REPO
from .test_sparse_engine import (_gse_run, assert_same_as_dense, largest_tensors_created,
                                 masked_at_random)

@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny shapes: a parallel region costs more than it saves, and on a shared CPU a stalled
    OpenMP barrier makes each of the many small sparse calls milliseconds slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


GEOMETRIES = [  # (C_in, out, kernel, stride, padding, dilation, bias)
    (3, 5, 3, 1, 1, 1, False),      # ResNet's 3×3
    (4, 6, 3, 2, 1, 1, True),       # a strided one
    (2, 3, 5, 1, 0, 1, True),       # LeNet's 5×5, no padding
    (3, 4, 3, 1, 2, 2, False),      # dilated
    (4, 4, 1, 2, 0, 1, False),      # a 1×1 projection with stride
    (3, 4, (3, 1), (1, 2), (1, 0), 1, False),   # rectangular kernel, unequal strides
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "x".join(map(str, g[:5])))
def test_conv_forward_and_gradients_equal_the_masked_dense_conv(geometry, kernels):
    cin, cout, k, stride, padding, dilation, bias = geometry
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, stride, padding, dilation, bias=bias).double()
    idx = masked_at_random(conv, conv.weight.numel() // 3)
    sparse = SparseConv2d(**SparseConv2d.geometry_of(conv), indices=idx,
                          values=conv.weight.detach().view(-1)[idx], bias=conv.bias)
    assert_same_as_dense(conv, sparse, idx, torch.randn(2, cin, 9, 8, dtype=torch.double))
    # Both formulations where both apply (stride 1), each against finite differences.
    variants = [(sparse.function, sparse.structure())]
    if sparse.geometry.shifted:
        variants.append((_Im2colConvFunction,
                         CsrStructure(idx, sparse.out_features, sparse.in_features)))
    for function, structure in variants:
        values = sparse.values.detach().clone().requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda a, v: function.apply(a, v, None, structure, sparse.geometry, cout),
            (torch.randn(1, cin, 6, 5, dtype=torch.double, requires_grad=True), values))


def test_conv_output_takes_an_in_place_relu_and_padding_same():
    conv = nn.Conv2d(3, 4, 5, padding="same")
    idx = torch.arange(0, conv.weight.numel(), 2)
    sparse = SparseConv2d(**SparseConv2d.geometry_of(conv), indices=idx,
                          values=conv.weight.detach().view(-1)[idx], bias=conv.bias)
    assert sparse.padding == (2, 2)
    x = torch.randn(2, 3, 7, 7, requires_grad=True)
    out = nn.ReLU(inplace=True)(sparse(x))      # LeNet: conv, then ReLU(inplace)
    out.sum().backward()
    assert out.shape == (2, 4, 7, 7) and x.grad is not None


CNNS = [("resnet20", (3, 8, 8), dict(width=0.25)), ("resnet56", (3, 8, 8), dict(width=0.25)),
        ("vgg16", (3, 32, 32), dict(width=0.0625)), ("lenet5", (1, 16, 16), {})]


CASES = [(*cnn, "gse") for cnn in CNNS] + [(*CNNS[0], "static"), (*CNNS[0], "set")]


@pytest.mark.parametrize("name, in_shape, kwargs, method_name", CASES,
                         ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_engine_swaps_every_conv_and_methods_train_on_the_cnns(name, in_shape, kwargs,
                                                               method_name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_shape=in_shape, **kwargs)
    reference = copy.deepcopy(model)
    engine = build_engine(model, 0.3, "er", engine="sparse")
    masked = build_engine(reference, 0.3, "er", engine="masked")
    assert all(isinstance(layer, SparseLayer) for layer in engine.layers)
    assert not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    for a, b in zip(masked.layers, engine.layers):
        assert (a.name, a.numel, a.out_features, a.fan_in) == (b.name, b.numel, b.out_features,
                                                               b.fan_in)
    for e in (engine, masked):
        e.random_masks(torch.Generator().manual_seed(2))
        e.apply_masks()
    x = torch.randn(4, *in_shape)
    model.eval(), reference.eval()
    torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-5)
    # Both engines count the same dense cost per layer (the sparse products report the dense
    # conv's FLOPs; sparsebench.flops scales them by density).
    assert FlopModel(model, engine, in_shape).layer == FlopModel(reference, masked, in_shape).layer
    model.train()
    cls = methods.get(method_name)
    params = {} if method_name == "static" else dict(interval=2, end=1.0)
    method = cls(cls.Params(**params), engine, total_steps=6, steps_per_epoch=6, seed=0)
    optimizer = build_optimizer(OptimConfig(name="sgd", lr=0.05), model)
    engine.attach_optimizer(optimizer)
    before = [layer.active_indices().clone() for layer in engine.layers]
    gen = torch.Generator().manual_seed(3)
    for step in range(4):
        xb, yb = torch.randn(8, *in_shape, generator=gen), torch.randint(0, 10, (8,), generator=gen)
        ctx = StepContext(step=step, epoch=0, total_steps=6, steps_per_epoch=6, model=model)
        _, loss = training_step(model, nn.functional.cross_entropy, optimizer, engine, method,
                                ctx, xb, yb)
        assert torch.isfinite(loss)
    moved = any(not torch.equal(b, layer.active_indices())
                for b, layer in zip(before, engine.layers))
    assert moved == (method_name != "static")
    assert sum(layer.n_active() for layer in engine.layers) == \
        sum(layer.target_active for layer in engine.layers)


@pytest.mark.parametrize("sampler, scope", [("uniform", "global"), ("grabo", "layer")])
def test_gse_follows_the_same_trajectory_on_both_engines_for_a_resnet(sampler, scope, kernels):
    # In float64: the engines sum in different orders (a dense masked conv against the sparse
    # kernels), and in float32 a ReLU or a BatchNorm can turn that rounding into a visible
    # difference within a few steps, depending on which candidates happen to be drawn. In
    # float64 they agree to rounding at every step, so the comparison can be tight.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        model = build_model("resnet20", num_classes=10, in_shape=(3, 8, 8), width=0.25)
        gen = torch.Generator().manual_seed(1)
        batches = [(torch.randn(16, 3, 8, 8, generator=gen),
                    torch.randint(0, 10, (16,), generator=gen)) for _ in range(3)]
        params = dict(sampler=sampler, scope=scope, interval=3, end=1.0, drop_fraction=0.3)
        masked, l1, t1 = _gse_run("masked", copy.deepcopy(model), params, 8, batches)
        sparse, l2, t2 = _gse_run("sparse", copy.deepcopy(model), params, 8, batches)
    finally:
        torch.set_default_dtype(previous)
    assert all(isinstance(layer, SparseLayer) for layer in sparse.layers)
    assert all(layer.active_values().dtype == torch.float64 for layer in sparse.layers)
    changed = 0
    for step, (a, b) in enumerate(zip(t1, t2)):
        for ia, ib in zip(a, b):
            assert torch.equal(ia, ib), f"topologies differ after step {step}"
        if step and any(not torch.equal(p, q) for p, q in zip(t1[step - 1], a)):
            changed += 1
    assert changed == 2  # updates after steps 2 and 5
    torch.testing.assert_close(torch.tensor(l2), torch.tensor(l1), rtol=1e-9, atol=1e-12)
    for a, b in zip(masked.layers, sparse.layers):
        torch.testing.assert_close(b.active_values(), a.active_values(), rtol=1e-8, atol=1e-10)


def test_set_on_the_sparse_engine_drops_the_smallest_and_grows_inactive_at_zero():
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10, in_shape=(3, 8, 8), width=0.25)
    engine = build_engine(model, 0.3, "er", engine="sparse")
    cls = methods.get("set")
    method = cls(cls.Params(drop_fraction=0.25, interval=1, end=1.0), engine, total_steps=4,
                 steps_per_epoch=4, seed=0)
    engine.random_masks(method.generator)
    engine.apply_masks()
    layer = engine.layers[3]
    before_idx = layer.active_indices().clone()
    before_mag = layer.magnitudes().clone()
    method.update(None, 0.25)
    after = layer.active_indices()
    assert after.numel() == before_idx.numel() == layer.target_active
    kept = torch.isin(before_idx, after)
    n_drop = int(0.25 * before_idx.numel())
    # Only the n smallest magnitudes were dropped (those drawn again stay).
    smallest = before_idx[torch.topk(before_mag, n_drop, largest=False).indices]
    assert 0 < (~kept).sum() <= n_drop
    assert torch.isin(before_idx[~kept], smallest).all()
    grown = ~torch.isin(after, before_idx)
    assert grown.sum() == (~kept).sum()
    assert not layer.active_values()[grown].any()


@pytest.mark.parametrize("method_name", ["rigl", "snip", "magnitude", "dense"])
def test_methods_that_need_dense_tensors_refuse_the_sparse_engine(method_name):
    base = str(REPO / "configs" / "fmnist_mlp.yaml")
    with pytest.raises(ConfigError) as err:
        resolve.load(base, [f"method.name={method_name}", "sparsity.engine=sparse"])
    assert err.value.field == "sparsity.engine" and "masked" in str(err.value)
    for ok in ("gse", "static", "set"):
        assert resolve.load(base, [f"method.name={ok}", "sparsity.engine=sparse"])
    assert methods.Method.engines == ("masked",)   # the default a new method file gets


def test_cli_exits_2_naming_sparsity_engine(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "sparsebench.train",
                           str(REPO / "configs" / "fmnist_mlp.yaml"), "method.name=rigl",
                           "sparsity.engine=sparse"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 2
    assert "sparsity.engine" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# ---- no tensor of a conv weight's size ---------------------------------------------------------

@pytest.mark.parametrize("method_name, sampler", [("gse", "uniform"), ("gse", "graest"),
                                                  ("set", None)])
def test_resnet20_steps_and_updates_never_create_a_tensor_of_a_conv_weights_size(method_name,
                                                                                  sampler):
    """ResNet-20 at width 8 (128/256/512 channels) on 4×4 inputs, batch 2: every residual-stage
    conv weight has at least 128·128·9 = 147,456 elements, while the activations (at most
    2·128·4·4) and the unfolded inputs (at most 2·16·1152) are smaller, so any tensor of a
    weight's size would stand out. The stem conv (128·27) and the head (512·10) are smaller
    than some activations by nature and are left out of the bound. At density 0.005 all layers'
    active connections together (86k, what a global top-k concatenates) are below it too."""
    with torch.device("meta"):
        model = build_model("resnet20", num_classes=10, in_shape=(3, 4, 4), width=8)
    engine = build_engine(model, 0.005, "er", engine="sparse")
    assert all(isinstance(layer, SparseLayer) for layer in engine.layers)
    bound = min(layer.numel for layer in engine.layers[1:-1])
    assert bound == 128 * 128 * 9
    cls = methods.get(method_name)
    params = dict(interval=2, end=1.0) | ({"sampler": sampler} if sampler else {})
    method = cls(cls.Params(**params), engine, total_steps=8, steps_per_epoch=8, seed=0)
    for largest in largest_tensors_created(model, engine, method, (2, 3, 4, 4)):
        assert largest[1] < bound, largest


def test_checkpoint_round_trip_of_a_resnet_with_moved_connections():
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10, in_shape=(3, 8, 8), width=0.25)
    engine = build_engine(model, 0.3, "er", engine="sparse")
    a, b = engine.layers[1], engine.layers[2]
    engine.prune(a, a.active_indices()[:5])
    engine.grow(b, b.random_inactive(5, torch.Generator().manual_seed(0)),
                torch.full((5,), 0.1))
    engine.adopt_current_counts()
    saved, engine_state = copy.deepcopy(model.state_dict()), copy.deepcopy(engine.state_dict())
    torch.manual_seed(1)
    fresh = build_model("resnet20", num_classes=10, in_shape=(3, 8, 8), width=0.25)
    engine2 = build_engine(fresh, 0.3, "er", engine="sparse")
    fresh.load_state_dict(saved)
    engine2.load_state_dict(engine_state)
    for l1, l2 in zip(engine.layers, engine2.layers):
        assert torch.equal(l1.active_indices(), l2.active_indices())
        assert l2.n_active() == l2.target_active
    x = torch.randn(2, 3, 8, 8)
    model.eval(), fresh.eval()
    torch.testing.assert_close(fresh(x), model(x))
