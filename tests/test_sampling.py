"""GSE's sampling machinery: captured activations, sampled gradients, samplers, and the promise
that an update never builds a tensor of a weight's dense shape."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from sparsebench import distributed, methods
from sparsebench.methods import StepContext
from sparsebench.sparsity import SparsityEngine
from sparsebench.sparsity.samplers import SAMPLERS, LayerPlan
from sparsebench.sparsity.sampling import (ActivationCapture, candidate_gradients, sample_candidates,
                                           sample_pairs)


class Tokens(nn.Module):
    """A linear layer applied to every token of a (B, T, D) input, as in a ViT."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.relu(self.proj(x.view(x.shape[0], 5, 6))).mean(1))


def _conv_model():
    return nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(6, 5, 3, dilation=2, bias=False), nn.ReLU(inplace=True),
                         nn.Flatten(), nn.Linear(5 * 1 * 1, 7), nn.ReLU(inplace=True), nn.Linear(7, 4))


def _captured_pass(model, x, y, density=0.3, seed=0):
    """Masked model, one forward/backward with capture armed; returns engine and capture."""
    torch.manual_seed(seed)
    engine = SparsityEngine.for_model(model, density, "uniform")
    engine.random_masks(torch.Generator().manual_seed(seed))
    capture = ActivationCapture(engine.layers)
    capture.arm()
    nn.functional.cross_entropy(model(x), y).backward()
    capture.remove()
    return engine, capture


@pytest.mark.parametrize("kind", ["conv", "tokens"])
def test_sampled_gradients_equal_the_dense_gradient(kind):
    torch.manual_seed(0)
    if kind == "conv":
        model, x = _conv_model(), torch.randn(4, 3, 9, 9)
        assert model(x).shape == (4, 4)
    else:
        model, x = Tokens(), torch.randn(4, 30)
    y = torch.randint(0, 4 if kind == "conv" else 3, (4,))
    engine, capture = _captured_pass(model, x, y)
    assert not capture.armed and not any(m._forward_hooks for m in model.modules())
    g = torch.Generator().manual_seed(1)
    for layer in engine.layers:
        flat = torch.randperm(layer.numel, generator=g)[: max(3, layer.numel // 2)]
        sampled = candidate_gradients(capture[layer.name], flat)
        dense = layer.weight.grad.view(-1)[flat]
        assert dense.abs().max() > 0
        torch.testing.assert_close(sampled, dense, rtol=1e-4, atol=1e-7)


def test_candidates_are_distinct_inactive_connections():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 12))
    engine = SparsityEngine.for_model(model, 0.3, "uniform")
    engine.random_masks(torch.Generator().manual_seed(0))
    layer = engine.layers[0]
    g = torch.Generator().manual_seed(0)
    p_out, p_in = torch.rand(12), torch.rand(10)
    rows, cols = sample_pairs(p_out, p_in, 60, g.clone_state())
    cands = sample_candidates(layer, p_out, p_in, 60, g)
    assert cands.numel() == torch.unique(cands).numel()
    assert not layer.mask.view(-1)[cands].any()
    drawn = set((rows * 10 + cols).tolist())
    assert set(cands.tolist()) == {i for i in drawn if not layer.mask.view(-1)[i]}
    assert 0 < cands.numel() < 60  # repeats and active draws were dropped


def test_uniform_candidates_are_distinct_inactive_and_uniform_over_the_layer():
    """The uniform sampler draws with randint: what multinomial over all-equal weights draws,
    in distribution (each row and column equally often), faster."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 12))
    engine = SparsityEngine.for_model(model, 0.3, "uniform")
    engine.random_masks(torch.Generator().manual_seed(0))
    layer = engine.layers[0]
    stats = SAMPLERS["uniform"].statistics([], torch.Generator(), whole=True, batches=1, rows=1)
    cands = stats.candidates(layer, 60, torch.Generator().manual_seed(0))
    assert cands.numel() == torch.unique(cands).numel() and 0 < cands.numel() < 60
    assert not layer.mask.view(-1)[cands].any()
    counts = torch.zeros(layer.numel)
    g = torch.Generator().manual_seed(1)
    for _ in range(400):
        counts[stats.candidates(layer, 60, g)] += 1
    inactive = ~layer.mask.view(-1)
    assert counts[~inactive].sum() == 0
    # every inactive connection is drawn at the same rate: 400 draws of 60 pairs over 120
    # positions, P(drawn at least once) = 1 - (119/120)^60 ≈ 0.394, so about 158 ± 10 each
    rate = counts[inactive] / 400
    assert abs(float(rate.mean()) - (1 - (119 / 120) ** 60)) < 0.02
    assert float(rate.min()) > 0.28 and float(rate.max()) < 0.51


def one_batch_weights(name, layer, cap, generator, whole=False):
    """A sampler's (p_out, p_in) for one layer from one captured batch (global batch: the
    ranks' shares together, ``whole`` False) and, for graest, its signed sums before |.|."""
    rows = cap.batch * (1 if whole else distributed.current().size)
    stats = SAMPLERS[name].statistics([LayerPlan(layer.name, layer.out_features, layer.fan_in, 0,
                                                 cap.positions)],
                                      generator, whole=whole, batches=1, rows=rows)
    if SAMPLERS[name].needs_batches:
        stats.add(layer.name, cap, 0)
    if name == "graest":   # past the signs, as drawing the layer's candidates leaves it
        generator.set_state(stats.signs.after[layer.name])
    return stats.weights(layer), stats


def _expected_weights(name, x, dy, signs):
    """Each sampler's definition on a linear layer, written out: rows are examples."""
    if name == "uniform":
        return torch.ones(dy.shape[1]), torch.ones(x.shape[1])
    if name == "grabo":
        return dy.abs().sum(0), x.abs().sum(0)
    return (signs[:, None] * dy).sum(0).abs(), (signs[:, None] * x).sum(0).abs()


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_weights_and_empirical_distribution_match_the_definition(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    engine, capture = _captured_pass(model, x, y, density=1.0)
    layer = engine.layers[0]
    cap = capture[layer.name]
    gen = torch.Generator().manual_seed(7)
    signs = torch.randint(0, 2, (16, 1), generator=gen.clone_state()).float().mul(2).sub(1)[:, 0]
    (p_out, p_in), _ = one_batch_weights(name, layer, cap, gen)
    exp_out, exp_in = _expected_weights(name, x, cap.dy, signs)
    torch.testing.assert_close(p_out.float(), exp_out)   # summed in float64
    torch.testing.assert_close(p_in.float(), exp_in)
    # Empirical frequencies of n draws against p_out(i)·p_in(j), within 5 standard errors.
    n = 100_000
    rows, cols = sample_pairs(p_out, p_in, n, torch.Generator().manual_seed(3))
    counts = torch.bincount(rows * 5 + cols, minlength=20).double() / n
    prob = torch.outer(exp_out / exp_out.sum(), exp_in / exp_in.sum()).flatten().double()
    tolerance = 5 * torch.sqrt(prob * (1 - prob) / n) + 1e-4
    assert ((counts - prob).abs() <= tolerance).all(), (counts, prob)


def test_graest_sketch_is_unbiased_for_conv_layers():
    """E[(Σ s dY_i)(Σ s U_j)] = G_ij with signs per (sample, position): the authors' conv hook,
    which used only the first row of dY, fails this."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    x, y = torch.randn(3, 2, 6, 6), torch.randint(0, 2, (3,))
    engine, capture = _captured_pass(model, x, y, density=1.0)
    layer = engine.layers[0]
    dense = layer.weight.grad.view(layer.out_features, layer.fan_in)
    gen = torch.Generator().manual_seed(0)
    draws = 4000
    mean = torch.zeros_like(dense)
    for _ in range(draws):
        _, stats = one_batch_weights("graest", layer, capture[layer.name], gen)
        mean += torch.outer(stats.out[layer.name], stats.inp[layer.name]).float() / draws
    # Standard error of the estimate: about ||dY|| ||U|| / sqrt(draws) per entry.
    assert (mean - dense).abs().max() < 0.15 * dense.abs().max()
    assert torch.corrcoef(torch.stack([mean.flatten(), dense.flatten()]))[0, 1] > 0.97


def test_all_zero_weights_fall_back_to_uniform():
    rows, cols = sample_pairs(torch.zeros(4), torch.zeros(3), 3000, torch.Generator().manual_seed(0))
    assert torch.bincount(rows, minlength=4).min() > 600 and torch.bincount(cols, minlength=3).min() > 900


# ---- no tensor of a weight's dense shape during a GSE update -----------------------------------

class AllocationRecorder(TorchDispatchMode):
    """Records the shape of every tensor an aten op creates (outputs that share no storage with
    an input: views and in-place results are not allocations)."""

    def __init__(self):
        super().__init__()
        self.created: list[tuple[str, tuple[int, ...]]] = []
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.paused:
            inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs))
                      if isinstance(t, torch.Tensor)}
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                    self.created.append((str(func), tuple(t.shape)))
        return out


def _weight_shaped(created, engine):
    bad = []
    for layer in engine.layers:
        shapes = {tuple(layer.weight.shape), (layer.out_features, layer.fan_in), (layer.numel,)}
        bad += [(op, shape) for op, shape in created
                if shape in shapes or torch.Size(shape).numel() == layer.numel]
    return bad


def test_recorder_catches_a_dense_gradient():
    x, dy = torch.randn(5, 23), torch.randn(5, 7)
    engine = SparsityEngine.for_model(nn.Linear(23, 7), 0.2, "uniform")
    with AllocationRecorder() as rec:
        dy.T @ x
    assert _weight_shaped(rec.created, engine)


@pytest.mark.parametrize("sampler, scope", [("grabo", "global"), ("graest", "global"),
                                            ("graest", "layer"), ("uniform", "layer")])
def test_gse_update_creates_no_tensor_of_a_weights_shape(sampler, scope, monkeypatch):
    torch.manual_seed(0)
    # Sizes chosen so that no activation-sized tensor has a weight's element count by chance.
    model = nn.Sequential(nn.Conv2d(3, 7, 3), nn.ReLU(inplace=True), nn.Flatten(),
                          nn.Linear(7 * 8 * 8, 11))
    engine = SparsityEngine.for_model(model, 0.1, "uniform")
    gse = methods.get("gse")
    method = gse(gse.Params(sampler=sampler, scope=scope, interval=1, end=1.0), engine,
                 total_steps=10, steps_per_epoch=10, seed=0)
    engine.random_masks(method.generator)
    engine.apply_masks()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine.attach_optimizer(optimizer)
    x, y = torch.randn(5, 3, 10, 10), torch.randint(0, 11, (5,))
    ctx = StepContext(step=0, epoch=0, total_steps=10, steps_per_epoch=10, model=model, batch=(x, y))
    method.before_forward(ctx)
    assert method.capture.armed
    nn.functional.cross_entropy(model(x), y).backward()
    engine.mask_gradients()
    optimizer.step()
    before = [layer.mask.clone() for layer in engine.layers]
    recorder = AllocationRecorder()
    # The masked engine's own bookkeeping of a topology change (its float masks) is dense by
    # construction; an always-sparse engine replaces it. Everything GSE computes is recorded.
    for primitive in ("prune", "grow"):
        original = getattr(engine, primitive)

        def paused(*args, _original=original, **kwargs):
            recorder.paused = True
            try:
                return _original(*args, **kwargs)
            finally:
                recorder.paused = False
        monkeypatch.setattr(engine, primitive, paused)
    with recorder:
        method.after_step(ctx)
    assert any("einsum" in op or "mul" in op or "bmm" in op for op, _ in recorder.created)
    assert not _weight_shaped(recorder.created, engine)
    assert any(not torch.equal(b, layer.mask) for b, layer in zip(before, engine.layers))
    assert not method.capture.armed and not any(m._forward_hooks for m in model.modules())
