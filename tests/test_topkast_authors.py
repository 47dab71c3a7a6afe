"""Top-KAST as the GSE authors run it (issue 32): ``entering_weight: stale``,
``keep_momentum_outside_b: true`` and ``sets: quantile``, each on its own, and all three
together against a plain-torch reference written from the description of the authors'
``topkast_training.py`` (a dense ``all_weight`` beside the forward ``weight``; forward
weight·1_B; the norm penalty; SGD with momentum over every weight; after each step B∖A's update
moves into ``all_weight`` and its forward weight is zeroed; a refresh copies A's forward weight
into ``all_weight``, takes both sets by a torch.quantile threshold and zeroes the new B∖A)."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from sparsebench import methods
from sparsebench.config.schema import OptimConfig
from sparsebench.methods import InitContext, StepContext
from sparsebench.sparsity import SparsityEngine
from sparsebench.training import training_step
from sparsebench.training.schedules import build_optimizer

LR, MOMENTUM, PENALTY = 0.05, 0.9, 0.01
AUTHORS = {"entering_weight": "stale", "keep_momentum_outside_b": True, "sets": "quantile",
           "penalty": "norm"}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 30), nn.ReLU(), nn.Linear(30, 20), nn.ReLU(),
                         nn.Linear(20, 4)).double()


def _batches(n=6):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 12, generator=g, dtype=torch.float64),
             torch.randint(0, 4, (16,), generator=g)) for _ in range(n)]


def _setup(model, *, explore_epochs=100.0, interval=1000, **params):
    engine = SparsityEngine.for_model(model, 0.2, "uniform")
    cls = methods.get("topkast")
    method = cls(cls.Params(explore_epochs=explore_epochs, interval=interval, **params), engine,
                 total_steps=1000, steps_per_epoch=10, seed=0)
    optimizer = build_optimizer(OptimConfig(lr=LR, momentum=MOMENTUM, nesterov=False,
                                            weight_decay=PENALTY, decay_norm_and_bias=False),
                                model, method.regularized_parameters(PENALTY))
    engine.attach_optimizer(optimizer)
    method.init_masks(InitContext(model, lambda: iter(_batches()), nn.functional.cross_entropy))
    engine.apply_masks()
    return engine, method, optimizer


def _step(model, engine, method, optimizer, batch, step):
    ctx = StepContext(step=step, epoch=step // 10, total_steps=1000, steps_per_epoch=10,
                      model=model)
    training_step(model, nn.functional.cross_entropy, optimizer, engine, method, ctx, *batch)


class Reference:
    """The authors' algorithm in plain torch, for an MLP of Linear layers."""

    def __init__(self, model, counts):
        self.model, self.counts = model, counts   # counts: per layer (|A|, |B|)
        self.linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        self.all_weight = [m.weight.detach().clone() for m in self.linears]
        self.a = [None] * len(self.linears)
        self.b = [torch.ones_like(m.weight, dtype=torch.bool) for m in self.linears]
        self.optimizer = torch.optim.SGD(model.parameters(), LR, momentum=MOMENTUM)

    @torch.no_grad()
    def refresh(self):
        for i, m in enumerate(self.linears):
            if self.a[i] is not None:
                self.all_weight[i][self.a[i]] = m.weight[self.a[i]]
            n, (k_a, k_b) = m.weight.numel(), self.counts[i]
            magnitude = self.all_weight[i].abs()
            self.a[i] = magnitude >= torch.quantile(magnitude, 1 - k_a / n)
            self.b[i] = magnitude >= torch.quantile(magnitude, 1 - k_b / n)
            m.weight[self.b[i] & ~self.a[i]] = 0

    def forward(self, x):
        for m in self.linears[:-1]:
            x = torch.relu(nn.functional.linear(x, m.weight * self.b[self.linears.index(m)], m.bias))
        last = self.linears[-1]
        return nn.functional.linear(x, last.weight * self.b[-1], last.bias)

    def step(self, x, y):
        self.refresh()
        penalty = 0.0
        for i, m in enumerate(self.linears):
            just_b = self.b[i] & ~self.a[i]
            density = self.counts[i][0] / m.weight.numel()
            # the B∖A term is taken at all_weight's values, its gradient flows into the weight
            at_theta = m.weight[just_b] + self.all_weight[i][just_b]
            penalty = penalty + torch.linalg.vector_norm(m.weight[self.a[i]]) \
                + torch.linalg.vector_norm(at_theta) / density
        loss = nn.functional.cross_entropy(self.forward(x), y) + PENALTY * penalty
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            for i, m in enumerate(self.linears):
                just_b = self.b[i] & ~self.a[i]
                self.all_weight[i][just_b] += m.weight[just_b]
                m.weight[just_b] = 0


def test_all_three_follow_the_authors_algorithm_step_by_step():
    ours_model, ref_model = _model(), _model()
    engine, method, optimizer = _setup(ours_model, **AUTHORS)
    ref = Reference(ref_model, [(layer.target_active, method.backward_active[layer.name])
                                for layer in engine.layers])
    batches = _batches()
    moved_in_from_b = 0
    for step in range(40):
        before = {layer.name: (layer.mask.clone(), layer.trainable.clone()) for layer in engine.layers}
        _step(ours_model, engine, method, optimizer, batches[step % len(batches)], step)
        ref.step(*batches[step % len(batches)])
        for i, layer in enumerate(engine.layers):
            assert torch.equal(layer.mask, ref.a[i]), (step, layer.name)
            assert torch.equal(layer.trainable, ref.b[i]), (step, layer.name)
            torch.testing.assert_close(layer.weight.detach(), ref.linears[i].weight.detach() * ref.a[i])
            theta = torch.where(ref.a[i], ref.linears[i].weight.detach(), ref.all_weight[i])
            torch.testing.assert_close(method.theta(layer), theta)
            old_a, old_b = before[layer.name]
            moved_in_from_b += int((layer.mask & old_b & ~old_a).sum())
    assert moved_in_from_b > 0   # the case that tells stale from θ happened


@pytest.mark.parametrize("entering", ["theta", "stale"])
def test_a_connection_entering_a_from_b_minus_a_starts_from(entering):
    """stale: from its forward weight, 0, and the next refresh writes that into θ;
    theta (the paper's): from its θ."""
    model = _model()
    engine, method, optimizer = _setup(model, entering_weight=entering)
    layer = engine.layers[0]
    just_b = (layer.trainable & ~layer.mask).flatten().nonzero().squeeze(1)
    pos = int(just_b[0])
    method.outside[layer.name].view(-1)[pos] = 5.0        # the largest |θ| of the layer
    method.before_forward(StepContext(step=1, epoch=0, total_steps=1000, steps_per_epoch=10,
                                      model=model))
    assert bool(layer.mask.view(-1)[pos])                  # it entered A
    expected = 0.0 if entering == "stale" else 5.0
    assert float(layer.weight.detach().view(-1)[pos]) == expected
    method.before_forward(StepContext(step=2, epoch=0, total_steps=1000, steps_per_epoch=10,
                                      model=model))
    assert float(method.theta(layer).view(-1)[pos]) == expected


@pytest.mark.parametrize("keep", [False, True])
def test_momentum_of_a_connection_that_leaves_b(keep):
    """keep_momentum_outside_b: its momentum buffer survives the refresh and decays by the
    momentum each step outside B; false: zeroed when it leaves B."""
    model = _model()
    engine, method, optimizer = _setup(model, keep_momentum_outside_b=keep)
    batches = _batches()
    _step(model, engine, method, optimizer, batches[0], 0)
    layer = engine.layers[0]
    buffer = optimizer.state[layer.weight]["momentum_buffer"]
    in_b = layer.trainable.flatten().nonzero().squeeze(1)
    pos = int(in_b[buffer.view(-1)[in_b].abs().argmax()])
    value = float(buffer.view(-1)[pos])
    assert value != 0
    method.outside[layer.name].view(-1)[pos] = 0.0          # push it out of A and B
    layer.weight.detach().view(-1)[pos] = 0.0
    _step(model, engine, method, optimizer, batches[1], 1)  # refresh before it, then a step
    assert not bool(layer.trainable.view(-1)[pos])
    after = float(optimizer.state[layer.weight]["momentum_buffer"].view(-1)[pos])
    assert after == pytest.approx(MOMENTUM * value if keep else 0.0)
    # θ outside B never changes, either way
    assert float(method.theta(layer).view(-1)[pos]) == 0.0


@pytest.mark.parametrize("sets", ["topk", "quantile"])
def test_sets_by_top_k_or_by_quantile_threshold(sets):
    """quantile: every |θ| at or above torch.quantile(|θ|, 1 − D) joins, ties included; topk:
    exactly the count."""
    model = _model()
    engine, method, optimizer = _setup(model, sets=sets)
    layer = engine.layers[0]
    theta = method.theta(layer).clone()
    k_a, k_b = layer.target_active, method.backward_active[layer.name]
    # Ties at A's threshold: the k_a-th and the next two largest |θ| made equal.
    order = theta.abs().flatten().argsort(descending=True)
    tied = theta.abs().flatten()[order[k_a - 1]]
    theta.view(-1)[order[k_a - 1:k_a + 2]] = tied
    method.refresh({lay.name: (theta if lay is layer else method.theta(lay)) for lay in engine.layers})
    magnitude = theta.abs()
    if sets == "quantile":
        at_a = torch.quantile(magnitude.flatten(), 1 - k_a / layer.numel)
        at_b = torch.quantile(magnitude.flatten(), 1 - k_b / layer.numel)
        assert torch.equal(layer.mask, magnitude >= at_a)
        assert torch.equal(layer.trainable, magnitude >= at_b)
        assert int(layer.mask.sum()) == k_a + 2             # the ties joined
    else:
        assert int(layer.mask.sum()) == k_a
        assert int(layer.trainable.sum()) == k_b
    assert bool((layer.trainable | ~layer.mask).all())      # A ⊆ B


@pytest.mark.parametrize("n, dtype", [(10_001, torch.float32), (300_007, torch.float32),
                                      (4_099, torch.float64)])
def test_quantile_thresholds_are_torch_quantile_bit_for_bit(n, dtype):
    module = __import__(methods.get("topkast").__module__, fromlist=["quantile_thresholds"])
    values = torch.rand(n, generator=torch.Generator().manual_seed(3), dtype=dtype)
    counts = (0.0163, 0.0326, 0.02, 0.5, 1.0)   # densities: q = 1 − D, as the sets ask
    qs = torch.tensor([1 - d for d in counts], dtype=dtype)
    assert torch.equal(module.quantile_thresholds(values, qs), torch.quantile(values, qs))


def test_defaults_are_the_papers_and_gse_paper_sets_the_authors():
    from sparsebench import protocols

    params = dataclasses.asdict(methods.get("topkast").Params())
    assert {k: params[k] for k in AUTHORS} == {"entering_weight": "theta",
                                               "keep_momentum_outside_b": False,
                                               "sets": "topk", "penalty": "squared"}
    gse_paper = protocols.load("gse_paper").methods["topkast"]
    assert {k: gse_paper[k] for k in AUTHORS} == AUTHORS
