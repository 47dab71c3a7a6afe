"""The engine on a channels-last CNN (issue 22, item 2): converted BEFORE the engine is built, so
masks, weights and momentum are channels-last (on CUDA the trainer converts every CNN). A flat
index must mean the same (out, in, kh, kw) position on any memory format: every primitive is
compared with the same model kept contiguous, and every registered method runs on it."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparsebench import distributed, methods
from sparsebench.methods import InitContext, StepContext
from sparsebench.sparsity import SparsityEngine
from sparsebench.sparsity.dst import prune_by_magnitude, replace_smallest
from sparsebench.sparsity.init import init_active_fan_in
from sparsebench.training import training_step

CL = torch.channels_last


def _cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5))


def _pair(density=0.3):
    """(model, engine, optimizer) twice: contiguous, and channels-last before the engine."""
    torch.manual_seed(0)
    flat = _cnn()
    cl = copy.deepcopy(flat).to(memory_format=CL)
    out = []
    for model in (flat, cl):
        engine = SparsityEngine.for_model(model, density, "er")
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        engine.attach_optimizer(optimizer)
        out.append((model, engine, optimizer))
    return out


def _set_grads(pairs, seed):
    """The same gradient on both models (in each parameter's own memory format)."""
    gen = torch.Generator().manual_seed(seed)
    (m1, _, _), (m2, _, _) = pairs
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        g = torch.randn(p1.shape, generator=gen)
        p1.grad = g.clone()
        p2.grad = torch.empty_like(p2).copy_(g)  # empty_like keeps channels-last


def _assert_same(pairs):
    (m1, e1, o1), (m2, e2, o2) = pairs
    for a, b in zip(e1.layers, e2.layers):
        assert torch.equal(a.mask, b.mask) and torch.equal(a.weight, b.weight), a.name
        assert torch.equal(a.active_indices(), b.active_indices())
        assert torch.equal(a.active_values(), b.active_values())
        s1, s2 = o1.state.get(a.weight, {}), o2.state.get(b.weight, {})
        assert s1.keys() == s2.keys()
        for key in s1:
            assert torch.equal(s1[key], s2[key]), (a.name, key)
    assert distributed.mask_digest(e1) == distributed.mask_digest(e2)
    assert e1.layer_densities() == e2.layer_densities()


def test_every_primitive_gives_the_same_positions_on_a_channels_last_model():
    pairs = _pair()
    (_, e1, o1), (_, e2, o2) = pairs
    conv = e2.layers[1]
    # The path under test: the masks and weights really are channels-last (no view(-1)).
    assert conv.mask.is_contiguous(memory_format=CL) and not conv.mask.is_contiguous()
    assert conv.weight.is_contiguous(memory_format=CL) and not conv.weight.is_contiguous()
    for e in (e1, e2):
        e.random_masks(torch.Generator().manual_seed(1))
        e.apply_masks()
        init_active_fan_in(e, torch.Generator().manual_seed(2))
    _assert_same(pairs)
    for seed in range(3):   # optimizer steps: momentum buffers (channels-last on one side)
        _set_grads(pairs, seed)
        for e, o in ((e1, o1), (e2, o2)):
            e.mask_gradients()
            o.step()
        _assert_same(pairs)
    assert o2.state[conv.weight]["momentum_buffer"].is_contiguous(memory_format=CL)
    # masked gradients agree, and are zero at inactive positions
    _set_grads(pairs, 7)
    e1.mask_gradients(), e2.mask_gradients()
    for a, b in zip(e1.layers, e2.layers):
        assert torch.equal(a.weight.grad, b.weight.grad) and not b.weight.grad[~b.mask].any()
    # prune, grow with values, per-layer and global updates, magnitude pruning
    for e in (e1, e2):
        layer = e.layers[1]
        e.prune(layer, layer.smallest_active(5, layer.magnitudes()))
        grown = layer.random_inactive(5, torch.Generator().manual_seed(3))
        e.grow(layer, grown, torch.arange(1.0, 6.0))
        replace_smallest(e, 0.3, scope="layer", regrow_dropped=True,
                         generator=torch.Generator().manual_seed(4))
        replace_smallest(e, 0.3, scope="global", regrow_dropped=False,
                         generator=torch.Generator().manual_seed(5))
        prune_by_magnitude(e, sum(l.target_active for l in e.layers) - 20, adopt=False)
    _assert_same(pairs)
    assert e2.layers[1].mask.is_contiguous(memory_format=CL)
    # weights put at a position read back at it, in logical order
    layer = e2.layers[1]
    idx = layer.active_indices()[:3]
    assert torch.equal(layer.weight.detach().reshape(-1)[idx], layer.active_values()[:3])
    # apply_masks after a change of the weights outside the mask
    for e in (e1, e2):
        with torch.no_grad():
            e.layers[0].weight.add_(1.0)
        e.apply_masks()
    _assert_same(pairs)
    # state_dict travels between the two memory formats both ways
    fresh = _pair()
    fresh[0][1].load_state_dict(e2.state_dict())
    fresh[1][1].load_state_dict(e1.state_dict())
    for e in (fresh[0][1], fresh[1][1]):
        assert distributed.mask_digest(e) == distributed.mask_digest(e1)
        assert [l.target_active for l in e.layers] == [l.target_active for l in e1.layers]
    assert fresh[1][1].layers[1].mask.is_contiguous(memory_format=CL)


PARAMS = {"rigl": {"interval": 2}, "gse": {"interval": 2}, "set": {"interval": 2},
          "magnitude": {"frequency": 2, "start": 0.0, "end": 0.5},
          "topkast": {"interval": 2}, "synflow": {"iterations": 2}}


@pytest.mark.parametrize("name", methods.available())
def test_every_method_runs_on_a_channels_last_cnn(name):
    """Mask init, topology updates and the end of an epoch, through the trainer's step."""
    torch.manual_seed(0)
    model = _cnn().to(memory_format=CL)
    cls = methods.get(name)
    params = {k: v for k, v in PARAMS.get(name, {}).items()
              if k in cls.Params.__dataclass_fields__}
    engine = SparsityEngine.for_model(model, 0.2, cls.default_distribution)
    total, per_epoch = 8, 4
    method = cls(cls.Params(**params), engine, total_steps=total, steps_per_epoch=per_epoch,
                 seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    engine.attach_optimizer(optimizer)
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 3, 8, 8, generator=gen).contiguous(memory_format=CL),
                torch.randint(0, 5, (8,), generator=gen)) for _ in range(per_epoch)]
    loss_fn = nn.functional.cross_entropy
    method.init_masks(InitContext(model, lambda: iter(batches), loss_fn))
    engine.apply_masks()
    start = distributed.mask_digest(engine)
    for step in range(total):
        ctx = StepContext(step=step, epoch=step // per_epoch, total_steps=total,
                          steps_per_epoch=per_epoch, model=model)
        training_step(model, loss_fn, optimizer, engine, method, ctx, *batches[step % per_epoch])
        if (step + 1) % per_epoch == 0:
            method.end_of_epoch(ctx)
    assert engine.layers[1].mask.is_contiguous(memory_format=CL)
    for layer in engine.layers:   # the invariant holds: inactive weights are zero
        assert not layer.weight.detach()[~layer.mask].any(), (name, layer.name)
    assert len(distributed.mask_digest(engine)) == len(start) == 64
