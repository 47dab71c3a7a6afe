"""The always-sparse execution engine: the layer's maths, the engine's primitives and optimizer
state, GSE following the same trajectory on both engines, and no dense tensor ever."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from sparsebench import methods
from sparsebench.config.schema import OptimConfig
from sparsebench.flops import FlopModel
from sparsebench.methods import InitContext, StepContext
from sparsebench.models import build_model
from sparsebench.training.schedules import build_optimizer
from sparsebench.sparsity import MaskedLayer, SparseLayer, build_engine
from sparsebench.sparsity.sparse_layer import sample_distinct
from sparsebench.sparsity.sparse_linear import KERNELS, SparseLinear, _SparseLinearFunction
from sparsebench.training import training_step

from .conftest import REPO, needs_fmnist


def _mlp(hidden=(48, 32), seed=0):
    torch.manual_seed(seed)
    return build_model("mlp", num_classes=10, in_shape=(1, 8, 8), hidden=hidden)


def _pair(model, density=0.25, distribution="er", seed=3):
    """The same model under both engines, from the same initial topology and weights."""
    engines = []
    for kind, m in (("masked", model), ("sparse", copy.deepcopy(model))):
        engine = build_engine(m, density, distribution, engine=kind)
        engine.random_masks(torch.Generator().manual_seed(seed))
        engine.apply_masks()
        engines.append((m, engine))
    return engines


# ---- the layer ---------------------------------------------------------------------------------

def masked_at_random(dense: nn.Module, n_active: int) -> torch.Tensor:
    """Zero all but ``n_active`` random weights of ``dense``; their flat indices, ascending."""
    numel = dense.weight.numel()
    idx = sample_distinct(numel, n_active, torch.Generator().manual_seed(1))
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[idx] = True
    with torch.no_grad():
        dense.weight.mul_(mask.view_as(dense.weight))
    return idx


def assert_same_as_dense(dense: nn.Module, sparse: nn.Module, idx: torch.Tensor, x: torch.Tensor):
    """Output, input gradient, and the active values' gradient (the dense weight gradient at
    the active positions) of a sparse layer equal those of its masked dense twin."""
    x = x.detach().clone().requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = dense(x), sparse(x2)
    assert y2.shape == y.shape
    torch.testing.assert_close(y2, y)
    dy = torch.randn_like(y)
    y.backward(dy)
    y2.backward(dy)
    torch.testing.assert_close(x2.grad, x.grad)
    torch.testing.assert_close(sparse.values.grad, dense.weight.grad.view(-1)[idx])
    if dense.bias is not None:
        torch.testing.assert_close(sparse.bias.grad, dense.bias.grad)
    torch.testing.assert_close(sparse.to_dense(), dense.weight.detach())


@pytest.mark.parametrize("lead", [(7,), (3, 5)])
def test_layer_forward_and_backward_equal_the_masked_dense_layer(lead, kernels):
    torch.manual_seed(0)
    dense = nn.Linear(13, 9).double()
    idx = masked_at_random(dense, 40)
    sparse = SparseLinear(13, 9, idx, dense.weight.detach().view(-1)[idx], dense.bias)
    x = torch.randn(*lead, 13, dtype=torch.double)
    assert_same_as_dense(dense, sparse, idx, x)
    structure = sparse.structure()
    values = dense.weight.detach().view(-1)[idx].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, v: _SparseLinearFunction.apply(a, v, None, structure, 9),
        (x.detach().clone().requires_grad_(True), values))


def test_sample_distinct_is_distinct_sorted_excluding_and_uniform():
    gen = torch.Generator().manual_seed(0)
    huge = sample_distinct(10**12, 1000, gen)          # a dense mask here would be 1 TB
    assert huge.numel() == 1000 and torch.equal(huge, torch.unique(huge))
    assert 0 <= int(huge.min()) and int(huge.max()) < 10**12
    exclude = torch.tensor([0, 3, 4, 9])
    counts = torch.zeros(12)
    for _ in range(3000):
        s = sample_distinct(12, 4, gen, exclude=exclude)
        assert s.numel() == 4 and torch.equal(s, torch.unique(s))
        assert not torch.isin(s, exclude).any()
        counts[s] += 1
    free = counts[[i for i in range(12) if i not in exclude.tolist()]] / 3000
    assert counts[exclude].sum() == 0
    torch.testing.assert_close(free, torch.full_like(free, 4 / 8), atol=0.05, rtol=0)
    with pytest.raises(ValueError):
        sample_distinct(12, 9, gen, exclude=exclude)


# ---- the engine --------------------------------------------------------------------------------

def test_random_global_growth_is_uniform_over_all_layers_eligible_connections():
    """SET's global random growth on always-sparse layers: each layer offers k candidates with
    the top-k order statistics of as many uniform scores as it has eligible connections, so one
    top-k over layers of very different sizes is a uniform k-subset of all eligible ones."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 10), nn.Linear(100, 40))    # 100 and 4000 weights
    engine = build_engine(model, 0.5, "uniform", engine="sparse")
    small, big = engine.layers
    eligible = {layer.name: layer.numel - layer.n_active() for layer in engine.layers}
    gen, k, picks = torch.Generator().manual_seed(1), 30, {small.name: 0, big.name: 0}
    trials = 400
    for _ in range(trials):
        cands = {layer.name: layer.grow_candidates(k, None, gen) for layer in engine.layers}
        top = engine.global_largest({n: c.scores for n, c in cands.items()}, k)
        for name, pos in top.items():
            idx = cands[name].at(pos)
            assert not engine.by_name[name].is_active(idx).any()
            assert torch.unique(idx).numel() == idx.numel()
            picks[name] += pos.numel()
    share = picks[small.name] / (k * trials)
    expected = eligible[small.name] / sum(eligible.values())    # 50 of 2050: 2.4 %
    assert abs(share - expected) < 4 * (expected * (1 - expected) / (k * trials)) ** 0.5
    with pytest.raises(NotImplementedError):    # a dense grow score does not exist here
        big.grow_candidates(k, torch.rand(big.numel), gen)


def test_engine_replaces_linears_and_matches_the_masked_engine_at_init():
    (m1, masked), (m2, sparse) = _pair(_mlp())
    assert all(isinstance(layer, SparseLayer) for layer in sparse.layers)
    assert not any(isinstance(m, nn.Linear) for m in m2.modules())
    assert [layer.name for layer in sparse.layers] == [layer.name for layer in masked.layers]
    for a, b in zip(masked.layers, sparse.layers):
        assert b.n_active() == b.target_active == a.target_active == a.n_active()
        assert (b.numel, b.out_features, b.fan_in) == (a.numel, a.out_features, a.fan_in)
        assert torch.equal(a.active_indices(), b.active_indices())
        assert torch.equal(a.active_values(), b.active_values())
    assert sparse.layer_densities() == pytest.approx(masked.layer_densities())
    assert sparse.global_density() == pytest.approx(masked.global_density())
    x = torch.randn(6, 1, 8, 8)
    torch.testing.assert_close(m2(x), m1(x))
    # Methods that need dense weights are told to use the masked engine.
    with pytest.raises(AttributeError, match="engine: masked"):
        sparse.layers[0].weight


def test_primitives_agree_with_the_masked_engine():
    (_, masked), (_, sparse) = _pair(_mlp())
    gen = torch.Generator().manual_seed(5)
    a, b = masked.layers[1], sparse.layers[1]
    query = torch.randint(0, a.numel, (50,), generator=gen)
    assert torch.equal(a.is_active(query), b.is_active(query))
    assert torch.equal(a.inactive_indices(), b.inactive_indices())
    score = a.active_values().abs()
    assert set(a.smallest_active(7, a.weight.abs()).tolist()) == \
        set(b.smallest_active(7, score).tolist())
    with pytest.raises(ValueError, match="one entry per active connection"):
        b.smallest_active(7, torch.rand(b.out_features, b.fan_in))
    with pytest.raises(NotImplementedError):
        b.largest_inactive(3, torch.rand(b.numel))
    drawn = b.random_inactive(20, gen)
    assert drawn.numel() == 20 and not b.is_active(drawn).any()
    with pytest.raises(ValueError, match="inactive and distinct"):
        sparse.grow(b, b.active_indices()[:2])


@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_prune_and_grow_remap_values_and_optimizer_state_like_the_masked_engine(opt):
    (m1, masked), (m2, sparse) = _pair(_mlp())
    cfg = OptimConfig(name=opt, lr=0.05, nesterov=opt == "sgd", weight_decay=1e-2)
    optimizers = []
    for m, engine in ((m1, masked), (m2, sparse)):
        optimizers.append(build_optimizer(cfg, m))
        engine.attach_optimizer(optimizers[-1])
    param_before = sparse.layers[0].values
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8, generator=gen), torch.randint(0, 10, (16,), generator=gen)

    def step():
        for m, engine, o in ((m1, masked, optimizers[0]), (m2, sparse, optimizers[1])):
            o.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(m(x), y).backward()
            engine.mask_gradients()
            o.step()

    step()
    step()
    for a, b in zip(masked.layers, sparse.layers):
        active = a.active_indices()
        drop = active[torch.randperm(active.numel(), generator=gen)[:5]]
        grow = b.random_inactive(4, gen)
        for engine, layer in ((masked, a), (sparse, b)):
            engine.prune(layer, drop)
            engine.grow(layer, grow)
        assert torch.equal(a.active_indices(), b.active_indices())
        assert b.n_active() == a.n_active() == a.target_active - 1
        # Grown weights and their state start at zero; kept ones keep theirs.
        assert not b.active_values()[torch.isin(b.active_indices(), grow)].any()
        state_a, state_b = optimizers[0].state[a.weight], optimizers[1].state[b.values]
        for key, value in state_b.items():
            if value.dim() == 1:
                assert value.shape == b.values.shape
                torch.testing.assert_close(value, state_a[key].view(-1)[a.active_indices()])
    # The optimizer follows the new values Parameters (and forgot the old ones).
    params = [p for g in optimizers[1].param_groups for p in g["params"]]
    assert all(any(b.values is p for p in params) for b in sparse.layers)
    assert not any(param_before is p for p in params) and param_before not in optimizers[1].state
    step()
    step()
    for a, b in zip(masked.layers, sparse.layers):
        torch.testing.assert_close(b.active_values(), a.active_values(),
                                   rtol=1e-5, atol=1e-6)
    # Weight decay reaches the sparse values (they are weights although 1-D).
    assert any(b.values in g["params"] and g["weight_decay"] > 0 for g in optimizers[1].param_groups
               for b in sparse.layers)


def _gse_run(kind, model, params, steps, batches, opt="sgd"):
    """Drive a model through the trainer's step order with the real GSE method."""
    engine = build_engine(model, 0.2, "er", engine=kind)
    gse = methods.get("gse")
    method = gse(gse.Params(**params), engine, total_steps=steps, steps_per_epoch=steps, seed=0)
    method.init_masks(InitContext(model, lambda: iter(batches), nn.functional.cross_entropy))
    engine.apply_masks()
    optimizer = build_optimizer(OptimConfig(name=opt, lr=0.05, nesterov=opt == "sgd",
                                            weight_decay=1e-3), model)
    engine.attach_optimizer(optimizer)
    losses, topologies = [], []
    for step in range(steps):
        x, y = batches[step % len(batches)]
        ctx = StepContext(step=step, epoch=0, total_steps=steps, steps_per_epoch=steps, model=model)
        _, loss = training_step(model, nn.functional.cross_entropy, optimizer, engine, method,
                                ctx, x, y)
        losses.append(loss.item())
        topologies.append([layer.active_indices().clone() for layer in engine.layers])
    return engine, losses, topologies


@pytest.mark.parametrize("sampler, scope, opt", [("uniform", "global", "sgd"),
                                                 ("grabo", "layer", "sgd"),
                                                 ("graest", "global", "adamw")])
def test_gse_follows_the_same_trajectory_on_both_engines(sampler, scope, opt, kernels):
    model = _mlp()
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(32, 1, 8, 8, generator=gen), torch.randint(0, 10, (32,), generator=gen))
               for _ in range(4)]
    params = dict(sampler=sampler, scope=scope, interval=4, end=1.0, drop_fraction=0.3)
    masked, l1, t1 = _gse_run("masked", copy.deepcopy(model), params, 14, batches, opt)
    sparse, l2, t2 = _gse_run("sparse", copy.deepcopy(model), params, 14, batches, opt)
    changed = 0
    for step, (a, b) in enumerate(zip(t1, t2)):
        for ia, ib in zip(a, b):
            assert torch.equal(ia, ib), f"topologies differ after step {step}"
        if step and any(not torch.equal(p, q) for p, q in zip(t1[step - 1], a)):
            changed += 1
    assert changed == 3  # updates after steps 3, 7, 11: all three moved connections
    torch.testing.assert_close(torch.tensor(l2), torch.tensor(l1), rtol=1e-5, atol=1e-6)
    for a, b in zip(masked.layers, sparse.layers):
        torch.testing.assert_close(b.active_values(), a.active_values(),
                                   rtol=1e-4, atol=1e-6)
        assert a.target_active == b.target_active


# ---- no dense tensor, ever ---------------------------------------------------------------------

class CreatedTensors(TorchDispatchMode):
    """The number of elements of every tensor an op creates (sparse tensors: their stored
    values). A custom operator is one call to a dispatch mode, so the bodies of this
    repository's operators are run under the mode, op by op."""

    def __init__(self):
        super().__init__()
        self.created: list[tuple[str, int]] = []
        self.kernels: list[str] = []      # this repository's operators called, by name

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "sparsebench":
            self.kernels.append(func._opname)
            with self:
                return KERNELS[func._opname](*args, **kwargs)
        out = func(*args, **kwargs)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                n = t.numel() if t.layout == torch.strided else t.values().numel()
                self.created.append((str(func), n))
        return out


def test_recorder_sees_inside_the_sparse_kernels(kernels):
    layer = SparseLinear(6, 5, torch.tensor([1, 7, 20]), torch.ones(3), None)
    with CreatedTensors() as rec:
        layer(torch.randn(4, 6, requires_grad=True)).sum().backward()
    ops = {op for op, _ in rec.created}
    if kernels == "torch":
        assert "aten.mm.out" in ops and "aten.sparse_sampled_addmm.default" in ops
        assert rec.kernels == ["csr_addmm", "csr_addmm", "sampled_mm"]
    else:  # the C kernels create only their outputs: dW (3 values) and the zeroed dXᵀ
        assert rec.kernels == ["csr_addmm", "linear_backward"]
        assert ("aten.new_empty.default", 3) in rec.created
    with CreatedTensors() as rec:
        torch.randn(5, 6) @ torch.randn(6, 4).T.T
    assert max(n for _, n in rec.created) == 30


def largest_tensors_created(model, engine, method, batch_shape, steps=4):
    """The largest tensor (op, elements) created while ``method`` sets the initial topology,
    and the largest while it trains ``steps`` steps (SGD) on random batches of ``batch_shape``;
    the steps must include a topology update and the sparse weight-gradient kernel."""
    with CreatedTensors() as rec_init:
        method.init_masks(InitContext(model, lambda: iter(()), nn.functional.cross_entropy))
        engine.apply_masks()
    optimizer = build_optimizer(OptimConfig(name="sgd", lr=0.1, nesterov=True), model)
    engine.attach_optimizer(optimizer)
    gen = torch.Generator().manual_seed(0)
    before = [layer.active_indices().clone() for layer in engine.layers]
    with CreatedTensors() as rec_steps:
        for step in range(steps):
            x = torch.randn(batch_shape, generator=gen)
            y = torch.randint(0, 10, batch_shape[:1], generator=gen)
            ctx = StepContext(step=step, epoch=0, total_steps=2 * steps,
                              steps_per_epoch=2 * steps, model=model)
            training_step(model, nn.functional.cross_entropy, optimizer, engine, method, ctx, x, y)
    assert any(not torch.equal(b, layer.active_indices())
               for b, layer in zip(before, engine.layers)), "no update happened"
    assert {"sampled_mm", "linear_backward"} & set(rec_steps.kernels), "no weight gradient"
    return [max(rec.created, key=lambda r: r[1]) for rec in (rec_init, rec_steps)]


@pytest.mark.parametrize("sampler", ["uniform", "graest"])
def test_training_and_updates_never_create_a_tensor_of_the_dense_weights_size(sampler, kernels):
    """512×512 hidden layer (262144 weights), batch 8: every other tensor in play is smaller."""
    torch.manual_seed(0)
    with torch.device("meta"):
        model = build_model("mlp", num_classes=10, in_shape=(1, 16, 16), hidden=(512, 512))
    engine = build_engine(model, 0.02, "er", engine="sparse")
    dense_size = max(layer.numel for layer in engine.layers)
    assert dense_size == 512 * 512
    gse = methods.get("gse")
    method = gse(gse.Params(sampler=sampler, interval=2, end=1.0), engine, total_steps=8,
                 steps_per_epoch=8, seed=0)
    for largest in largest_tensors_created(model, engine, method, (8, 1, 16, 16)):
        assert largest[1] < dense_size, largest


# ---- conv layers, checkpoints, FLOPs, the meta device ------------------------------------------

def _grouped_conv_net():
    """A conv the sparse conv cannot stand for (groups = 2) between supported layers."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 10))


@pytest.mark.parametrize("build", [lambda: build_model("vit", num_classes=10, in_shape=(3, 16, 16),
                                                       width=0.25), _grouped_conv_net],
                         ids=["vit", "grouped_conv"])
def test_unsupported_convs_stay_masked_and_the_rest_runs_sparse(build):
    torch.manual_seed(0)
    model = build()
    reference = copy.deepcopy(model)
    engine = build_engine(model, 0.2, "erk", engine="sparse")
    masked = build_engine(reference, 0.2, "erk", engine="masked")
    grouped = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.groups == 2 for m in grouped)
    assert {type(layer) for layer in engine.layers} == ({MaskedLayer, SparseLayer} if grouped
                                                        else {SparseLayer})
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    gen1, gen2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    masked.random_masks(gen1)
    engine.random_masks(gen2)
    masked.apply_masks()
    engine.apply_masks()
    x = torch.randn(2, 3, 16, 16)
    model.eval(), reference.eval()
    torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine.attach_optimizer(opt)
    model.train()
    model(x).sum().backward()
    engine.mask_gradients()
    conv = next((layer for layer in engine.layers if isinstance(layer, MaskedLayer)),
                engine.layers[0])
    if grouped:
        assert not conv.weight.grad[~conv.mask].any()
    version = engine.mask_version
    engine.prune(conv, conv.active_indices()[:3])
    assert engine.mask_version > version and conv.n_active() == conv.target_active - 3
    # FLOPs: both engines count the same dense cost and the same sparse cost.
    f_sparse, f_masked = (FlopModel(m, e, (3, 16, 16)) for m, e in ((model, engine),
                                                                      (reference, masked)))
    assert all(f > 0 for f in f_sparse.layer.values())
    assert f_sparse.dense_forward() == f_masked.dense_forward() > 0
    assert f_sparse.layer == f_masked.layer
    masked.prune(masked.by_name[conv.name], masked.by_name[conv.name].active_indices()[:3])
    assert f_sparse.sparse_forward() == pytest.approx(f_masked.sparse_forward())


def test_checkpoint_round_trip_with_changed_layer_sizes():
    (_, _), (model, engine) = _pair(_mlp())
    optimizer = build_optimizer(OptimConfig(name="adamw", lr=0.01), model)
    engine.attach_optimizer(optimizer)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    a, b = engine.layers[0], engine.layers[1]
    moved = a.active_indices()[:6]
    engine.prune(a, moved)
    engine.grow(b, b.random_inactive(6, torch.Generator().manual_seed(0)))
    engine.adopt_current_counts()
    saved = {"model": copy.deepcopy(model.state_dict()), "opt": copy.deepcopy(optimizer.state_dict()),
             "engine": copy.deepcopy(engine.state_dict())}
    # A fresh model and engine (as a restarted run builds them), then the checkpoint.
    fresh = _mlp()
    engine2 = build_engine(fresh, 0.25, "er", engine="sparse")
    optimizer2 = build_optimizer(OptimConfig(name="adamw", lr=0.01), fresh)
    engine2.attach_optimizer(optimizer2)
    fresh.load_state_dict(saved["model"])
    optimizer2.load_state_dict(saved["opt"])
    engine2.load_state_dict(saved["engine"])
    for l1, l2 in zip(engine.layers, engine2.layers):
        assert torch.equal(l1.active_indices(), l2.active_indices())
        assert l1.target_active == l2.target_active == l2.n_active()
    torch.testing.assert_close(fresh(x), model(x))
    for opt_ in (optimizer, optimizer2):
        opt_.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    nn.functional.cross_entropy(fresh(x), y).backward()
    optimizer.step()
    optimizer2.step()
    torch.testing.assert_close(fresh(x), model(x))


def test_meta_model_is_built_without_dense_weights():
    with torch.device("meta"):
        model = build_model("mlp", num_classes=10, in_shape=(1, 8, 8), hidden=(40, 30))
    engine = build_engine(model, 0.3, "er", engine="sparse")
    assert not any(p.is_meta for p in model.parameters())
    assert not any(t.is_meta for t in model.buffers())
    for layer in engine.layers:
        bound = 1 / layer.fan_in ** 0.5
        assert layer.n_active() == layer.target_active
        assert layer.active_values().abs().max() <= bound
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    with pytest.raises(ValueError, match="'masked' or 'sparse'"):
        build_engine(model, 0.3, "er", engine="dense")


# ---- the trainer: sparsity.engine selects the engine ------------------------------------------

@needs_fmnist
def test_trainer_runs_gse_alike_on_both_engines_and_resumes_on_the_sparse_one():
    from sparsebench.storage import paths
    from sparsebench import resolve
    from sparsebench.config.schema import run_id
    from sparsebench.training import train

    base = str(REPO / "configs" / "fmnist_mlp.yaml")
    small = ["data.train_subset=1024", "data.batch_size=64", "epochs=2", "progress=false",
             "method.name=gse", "method.interval=8", "density=0.05"]
    masked = train(resolve.load(base, small + ["sparsity.engine=masked"]))
    sparse_cfg = resolve.load(base, small + ["sparsity.engine=sparse"])
    assert train(sparse_cfg, stop_after_epochs=1)["status"] == "interrupted"
    checkpoint = torch.load(paths.run_dir("adhoc", run_id(sparse_cfg)) / paths.CHECKPOINT,
                            weights_only=False)
    model_state = checkpoint["model"]
    assert "net.1.indices" in model_state and "net.1.weight" not in model_state  # it ran sparse
    assert model_state["net.1.values"].shape == model_state["net.1.indices"].shape
    sparse = train(sparse_cfg)  # resumes from the epoch-1 checkpoint
    assert sparse["status"] == masked["status"] == "completed"
    assert sparse["engine"] == "sparse"
    assert sparse["layer_densities"] == pytest.approx(masked["layer_densities"])
    assert sparse["final_train_loss"] == pytest.approx(masked["final_train_loss"], rel=1e-4)
    assert sparse["final_test_acc"] == pytest.approx(masked["final_test_acc"], abs=0.2)
    assert sparse["train_flops"] == pytest.approx(masked["train_flops"], rel=1e-6)
    assert sparse["inference_flops"] == pytest.approx(masked["inference_flops"], rel=1e-9)
