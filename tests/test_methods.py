"""The compared methods (issue 4): snip, magnitude, set, rigl, gse, on a small model driven
step by step through the trainer's ``training_step`` (tests/test_method_runs.py runs the whole
trainer)."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from sparsebench import methods
from sparsebench.data import TensorLoader
from sparsebench.methods import InitContext, StepContext
from sparsebench.scoring import ScoreBatches
from sparsebench.sparsity import SparsityEngine
from sparsebench.training import training_step

from .bad_config import assert_exits_2_naming
from .conftest import REPO

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")
COMPARED = ("snip", "magnitude", "set", "rigl", "gse")

# The defaults issue 4 documents, pinned so docstrings and code cannot drift apart.
DEFAULTS = {
    "snip": {"batches": 1, "score_samples_per_class": 0},
    "magnitude": {"start": 0.1, "end": 0.8, "frequency": 100, "initial_density": 1.0,
                  "scope": "global", "ramp": "cubic"},
    "set": {"drop_fraction": 0.3, "interval": 0, "start": 0.0, "end": 1.0,
            "drop_schedule": "constant", "scope": "layer", "regrow_dropped": True},
    "rigl": {"drop_fraction": 0.3, "interval": 100, "start": 0.0, "end": 0.75,
             "drop_schedule": "cosine", "scope": "layer", "regrow_dropped": True,
             "score_samples_per_class": 0},
    "gse": {"drop_fraction": 0.2, "interval": 1000, "start": 0.0, "end": 0.6,
            "drop_schedule": "cosine", "sampler": "uniform", "subset_factor": 1.0,
            "scope": "global", "score_samples_per_class": 0},
}
DISTRIBUTIONS = {"snip": "uniform", "magnitude": "uniform", "set": "er", "rigl": "erk",
                 "gse": "er_flat"}


def test_every_method_is_registered_with_its_documented_defaults():
    assert set(COMPARED) <= set(methods.available())
    for name in COMPARED:
        cls = methods.get(name)
        assert dataclasses.asdict(cls.Params()) == DEFAULTS[name], name
        assert cls.default_distribution == DISTRIBUTIONS[name]
        for f in dataclasses.fields(cls.Params):
            assert f.metadata.get("help"), f"{name}.{f.name} has no help text"


@pytest.mark.parametrize("overrides, field", [
    (["method.name=gse", "method.sampler=gaussian"], "method.sampler"),
    (["method.name=gse", "method.scope=row"], "method.scope"),
    (["method.name=gse", "method.subset_factor=0"], "method.subset_factor"),
    (["method.name=rigl", "method.drop_fraction=1.5"], "method.drop_fraction"),
    (["method.name=rigl", "method.drop_schedule=linear"], "method.drop_schedule"),
    (["method.name=rigl", "method.interval=-1"], "method.interval"),
    (["method.name=set", "method.start=0.9", "method.end=0.5"], "method.start"),
    (["method.name=snip", "method.batches=0"], "method.batches"),
    (["method.name=magnitude", "method.frequency=0"], "method.frequency"),
    (["method.name=magnitude", "method.initial_density=0.01", "density=0.1"],
     "method.initial_density"),
    (["method.name=magnitude", "method.drop_fraction=0.3"], "method.drop_fraction"),
    (["method.name=magnitude", "method.ramp=linear"], "method.ramp"),
    (["method.name=set", "method.scope=row"], "method.scope"),
    (["method.name=rigl", "method.scope=all"], "method.scope"),
    (["method.name=rigl", "method.regrow_dropped=maybe"], "method.regrow_dropped"),
    (["method.name=rigl", "method.score_samples_per_class=-1"], "method.score_samples_per_class"),
    (["method.name=gse", "method.score_samples_per_class=2.5"], "method.score_samples_per_class"),
    (["sparsity.init=xavier"], "sparsity.init"),
    (["protocol=gse_papr"], "protocol"),
])
def test_bad_method_values_exit_2_naming_the_field(overrides, field, capsys):
    assert_exits_2_naming(BASE, overrides, field, capsys)


# ---- a small model driven through the trainer's hook order ------------------------------------

def _setup(name, density=0.2, distribution="uniform", total_steps=40, steps_per_epoch=10,
           seed=0, model=None, **params):
    torch.manual_seed(seed)
    model = model or nn.Sequential(nn.Conv2d(2, 6, 3), nn.ReLU(inplace=True), nn.Flatten(),
                                   nn.Linear(6 * 6 * 6, 24), nn.ReLU(inplace=True),
                                   nn.Linear(24, 5))
    engine = SparsityEngine.for_model(model, density, distribution)
    cls = methods.get(name)
    method = cls(cls.Params(**params), engine, total_steps=total_steps,
                 steps_per_epoch=steps_per_epoch, seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    engine.attach_optimizer(optimizer)
    data = torch.Generator().manual_seed(seed + 1)
    batches = [(torch.randn(16, 2, 8, 8, generator=data), torch.randint(0, 5, (16,), generator=data))
               for _ in range(4)]
    init = InitContext(model, lambda: iter(batches), nn.functional.cross_entropy)
    method.init_masks(init)
    engine.apply_masks()
    return model, engine, method, optimizer, batches


def _step(model, engine, method, optimizer, batch, step, total_steps=40, steps_per_epoch=10,
          on_backward=None, on_optimizer_step=None):
    """One step through the trainer's own ``training_step`` (then ``end_of_epoch`` at an
    epoch's end, as the trainer does). ``on_backward`` runs just before the ``after_backward``
    hook and ``on_optimizer_step`` just before ``after_step``: they see what the method sees."""
    ctx = StepContext(step=step, epoch=step // steps_per_epoch, total_steps=total_steps,
                      steps_per_epoch=steps_per_epoch, model=model)
    before = {method.after_backward: on_backward, method.after_step: on_optimizer_step}

    def call_hook(hook, ctx):
        if before.get(hook) is not None:
            before[hook]()
        hook(ctx)
    training_step(model, nn.functional.cross_entropy, optimizer, engine, method, ctx, *batch,
                  call_hook=call_hook)
    if (step + 1) % steps_per_epoch == 0:
        method.end_of_epoch(ctx)
    return ctx


def _assert_clean(engine, optimizer):
    """Masked weights are zero and so is their optimizer state."""
    for layer in engine.layers:
        inactive = ~layer.mask
        assert torch.count_nonzero(layer.weight.detach()[inactive]) == 0, layer.name
        for value in optimizer.state.get(layer.weight, {}).values():
            if torch.is_tensor(value) and value.shape == layer.weight.shape:
                assert torch.count_nonzero(value[inactive]) == 0, layer.name


def _active_set(layer):
    return set(layer.mask.flatten().nonzero().squeeze(1).tolist())


# ---- RigL ----------------------------------------------------------------------------------------

def test_rigl_drops_smallest_grows_top_dense_gradient_and_skips_that_step():
    total = 40
    model, engine, method, opt, batches = _setup("rigl", interval=5, end=0.5, total_steps=total)
    updates = method.schedule.update_steps()
    assert updates == [4, 9, 14]  # every ΔT = 5 steps before T_end = 20 (α reaches 0 there)
    seen = []
    for step in range(total):
        state = {}

        def snapshot():
            state["masks"] = {l.name: l.mask.clone() for l in engine.layers}
            state["w"] = {l.name: l.weight.detach().clone() for l in engine.layers}
            state["g"] = {l.name: l.weight.grad.clone() for l in engine.layers}
        version = engine.mask_version
        _step(model, engine, method, opt, batches[step % 4], step, total, on_backward=snapshot)
        if engine.mask_version == version:
            continue
        seen.append(step)
        fraction = method.schedule.fraction_at(step)
        assert fraction == pytest.approx(0.3 / 2 * (1 + math.cos(math.pi * (step + 1) / 20)))
        for layer in engine.layers:
            mask, w, g = (state[k][layer.name].flatten() for k in ("masks", "w", "g"))
            n = int(int(mask.sum()) * fraction)
            active = mask.nonzero().squeeze(1)
            dropped = active[torch.topk(w[active].abs(), n, largest=False).indices]
            eligible = ~mask
            eligible[dropped] = True
            grown = torch.topk(g.abs().masked_fill(~eligible, -1), n).indices
            expected = (set(active.tolist()) - set(dropped.tolist())) | set(grown.tolist())
            assert _active_set(layer) == expected, (step, layer.name)
            assert layer.n_active() == layer.target_active
            new = torch.tensor(sorted(expected - set(active.tolist())), dtype=torch.long)
            # New connections start at zero and stay there: the optimizer step was skipped.
            assert (layer.weight.detach().flatten()[new] == 0).all()
            kept = torch.tensor(sorted(expected & set(active.tolist())), dtype=torch.long)
            assert torch.equal(layer.weight.detach().flatten()[kept], w[kept])
        _assert_clean(engine, opt)
    assert seen == updates


def test_rigl_counts_a_dense_gradient_on_update_steps():
    model, engine, method, opt, batches = _setup("rigl", interval=5, total_steps=40)

    class Flops:
        def sparse_forward(self):
            return 10.0

        def dense_forward(self):
            return 100.0
    ctx = StepContext(step=4, epoch=0, total_steps=40, steps_per_epoch=10, model=model)
    assert method.step_flops(ctx, Flops()) == 2 * 10 + 100
    ctx.step = 5
    assert method.step_flops(ctx, Flops()) == 3 * 10


# ---- SET -----------------------------------------------------------------------------------------

def test_set_prunes_smallest_and_regrows_uniformly():
    model = nn.Sequential(nn.Linear(20, 10))
    _, engine, method, opt, _ = _setup("set", density=0.3, model=model)
    layer = engine.layers[0]
    with torch.no_grad():
        layer.weight.copy_(torch.randn(10, 20) * layer.mask)
    mask0, w0 = layer.mask.clone(), layer.weight.detach().clone()
    n = int(layer.n_active() * 0.3)
    smallest = set(torch.topk(w0.flatten().abs().masked_fill(~mask0.flatten(), math.inf), n,
                              largest=False).indices.tolist())
    inactive0 = (~mask0.flatten()).nonzero().squeeze(1)
    counts = torch.zeros(layer.numel)
    trials = 2000
    for _ in range(trials):
        method.update(None, 0.3)
        now = layer.mask.flatten()
        removed = set((mask0.flatten() & ~now).nonzero().squeeze(1).tolist())
        added = (now & ~mask0.flatten()).nonzero().squeeze(1)
        assert removed <= smallest and len(removed) == added.numel()
        assert layer.n_active() == layer.target_active
        assert (layer.weight.detach().flatten()[added] == 0).all()
        counts[added] += 1
        engine.set_mask(layer, mask0)
        with torch.no_grad():
            layer.weight.copy_(w0)
    # Each of the 140 inactive connections is one of n draws among 140 + n eligible ones.
    observed = counts[inactive0]
    expected = trials * n / (inactive0.numel() + n)
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    df = inactive0.numel() - 1
    assert chi2 < df + 6 * math.sqrt(2 * df), chi2
    assert counts[mask0.flatten() & ~torch.isin(torch.arange(layer.numel),
                                                 torch.tensor(sorted(smallest)))].sum() == 0


def test_set_updates_at_the_end_of_every_epoch_but_the_last():
    _, _, method, _, _ = _setup("set", total_steps=40, steps_per_epoch=10)
    assert method.schedule.update_steps() == [9, 19, 29]


# ---- SNIP ----------------------------------------------------------------------------------------

def test_snip_keeps_the_global_top_k_of_gradient_times_weight():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(),
                          nn.Linear(6 * 6 * 6, 24), nn.ReLU(), nn.Linear(24, 5))
    reference = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(16, 2, 8, 8), torch.randint(0, 5, (16,))
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    prunable = [model[0], model[4], model[6]]
    scores = torch.cat([(m.weight.grad * m.weight).abs().flatten() for m in prunable])
    model.zero_grad(set_to_none=True)
    with torch.no_grad():  # undo the reference pass's batch-norm statistics
        model[1].reset_running_stats()
    running = model[1].running_mean.clone()
    engine = SparsityEngine.for_model(model, 0.1, "uniform")
    k = sum(layer.target_active for layer in engine.layers)
    snip = methods.get("snip")
    method = snip(snip.Params(), engine, total_steps=10, steps_per_epoch=10, seed=0)
    fake_flops = type("F", (), {"dense_forward": lambda self: 7.0, "sparse_forward": lambda self: 7.0})()
    scoring = ScoreBatches(TensorLoader(x, y, 16, shuffle=False, drop_last=True), model=model,
                           samples_per_class=0, num_classes=5, seed=0, flop_model=fake_flops,
                           loss_fn=nn.functional.cross_entropy)
    method.init_masks(InitContext(model, lambda: iter([(x, y)]), nn.functional.cross_entropy,
                                  scoring=scoring))
    kept = torch.cat([layer.mask.flatten() for layer in engine.layers])
    assert set(kept.nonzero().squeeze(1).tolist()) == set(torch.topk(scores, k).indices.tolist())
    for layer in engine.layers:
        assert layer.n_active() == layer.target_active
    assert sum(layer.target_active for layer in engine.layers) == k
    assert torch.equal(model[1].running_mean, running)  # scoring leaves no trace in buffers
    for p, ref in zip(model.parameters(), reference):
        assert p.grad is None
    assert scoring.take_flops() == 3 * 7.0 * 16   # a dense forward and backward per example


# ---- magnitude -----------------------------------------------------------------------------------

@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_follows_the_cubic_schedule_to_the_target(scope):
    total = 60
    model, engine, method, opt, batches = _setup("magnitude", density=0.1, total_steps=total,
                                                 start=0.1, end=0.8, frequency=7, scope=scope)
    n_total = engine.num_prunable()
    final = {l.name: l.target_active for l in engine.layers}
    t0, t_end = 6, 48
    assert engine.global_density() == 1.0  # starts dense
    for step in range(total):
        before = {}
        _step(model, engine, method, opt, batches[step % 4], step, total,
              on_optimizer_step=lambda: before.update(
                  {l.name: (l.mask.clone(), l.weight.detach().clone()) for l in engine.layers}))
        t = step + 1
        last = max([s for s in range(t0, t_end + 1, 7) if s <= t] + ([t_end] if t >= t_end else []),
                   default=None)
        if last is None:
            assert engine.global_density() == 1.0
            continue
        p = (last - t0) / (t_end - t0)
        if scope == "global":
            expected = sum(final.values()) + round((n_total - sum(final.values())) * (1 - p) ** 3)
            assert sum(l.n_active() for l in engine.layers) == expected, t
            if t == last:  # one global ranking: no kept weight is smaller than a pruned one
                kept = torch.cat([before[l.name][1].flatten()[l.mask.flatten()].abs()
                                  for l in engine.layers])
                gone = torch.cat([before[l.name][1].flatten()[before[l.name][0].flatten()
                                                              & ~l.mask.flatten()].abs()
                                  for l in engine.layers])
                if gone.numel():
                    assert kept.min() >= gone.max()
        else:
            for l in engine.layers:
                assert l.n_active() == final[l.name] + round((l.numel - final[l.name]) * (1 - p) ** 3)
        assert method.target_density_at(last) == pytest.approx(engine.global_density())
        _assert_clean(engine, opt)
    assert engine.global_density() == pytest.approx(0.1, abs=1 / n_total)
    for l in engine.layers:
        assert l.n_active() == l.target_active
        if scope == "layer":
            assert l.target_active == final[l.name]


# ---- GSE -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("sampler", ["uniform", "grabo", "graest"])
def test_gse_grows_the_largest_sampled_gradients_and_prunes_back(scope, sampler, monkeypatch):
    total = 30
    model, engine, method, opt, batches = _setup("gse", density=0.15, total_steps=total,
                                                 interval=5, end=0.7, sampler=sampler, scope=scope,
                                                 drop_fraction=0.4)
    # Record the candidate sets the method draws (the dense-layer rule: all inactive ones).
    from sparsebench.sparsity import samplers as module
    drawn = {}

    def spy(sample):
        def drawing(layer, *args):
            drawn[layer.name] = sample(layer, *args)
            return drawn[layer.name]
        return drawing
    for name in ("sample_candidates", "sample_uniform_candidates"):  # uniform has its own
        monkeypatch.setattr(module, name, spy(getattr(module, name)))
    budget = sum(l.target_active for l in engine.layers)
    updates = 0
    for step in range(total):
        grads = {}
        drawn.clear()
        masks = {l.name: l.mask.clone() for l in engine.layers}
        _step(model, engine, method, opt, batches[step % 4], step, total,
              on_backward=lambda: grads.update({l.name: l.weight.grad.clone() for l in engine.layers}))
        if not method.schedule.is_update(step):
            assert all(torch.equal(masks[l.name], l.mask) for l in engine.layers)
            assert not method.capture.armed
            continue
        updates += 1
        _assert_clean(engine, opt)
        assert sum(l.n_active() for l in engine.layers) == budget
        fraction = method.schedule.fraction_at(step)
        grown_scores, left_out_scores, n_grown, n_candidates, extra = [], [], 0, 0, 0.0
        for l in engine.layers:
            positions = 36 if isinstance(l.module, nn.Conv2d) else 1  # 6x6 output pixels
            old, now = masks[l.name].flatten(), l.mask.flatten()
            assert l.n_active() == l.target_active
            if scope == "layer":
                assert l.target_active == int(old.sum())
            new = now & ~old
            assert (l.weight.detach().flatten()[new] == 0).all()
            for value in opt.state[l.weight].values():
                if torch.is_tensor(value) and value.shape == l.weight.shape:
                    assert (value.flatten()[new] == 0).all()
            cands = drawn.get(l.name, (~old).nonzero().squeeze(1))
            extra += 2 * cands.numel() * positions  # the candidate gradients
            if l.name in drawn and sampler != "uniform":  # the sampling distributions
                extra += (l.fan_in + l.out_features) * positions
            assert not old[cands].any()
            assert int(new.sum()) == int(now[cands].sum())      # only candidates were grown
            score = grads[l.name].flatten()[cands].abs()        # the dense gradient, for checking
            grown = now[cands]
            if scope == "layer":
                assert int(grown.sum()) == min(int(fraction * int(old.sum())), cands.numel())
                if grown.any() and (~grown).any():
                    assert score[grown].min() >= score[~grown].max() - 1e-6
            grown_scores.append(score[grown])
            left_out_scores.append(score[~grown])
            n_grown += int(grown.sum())
            n_candidates += cands.numel()
        if scope == "global":  # one top-k over all layers' candidates
            assert n_grown == min(int(fraction * budget), n_candidates)
            grown_all, left_all = torch.cat(grown_scores), torch.cat(left_out_scores)
            if grown_all.numel() and left_all.numel():
                assert grown_all.min() >= left_all.max() - 1e-6
        assert drawn, "the sampled path ran"
        flops = type("F", (), {"sparse_forward": lambda self: 10.0})()
        ctx = StepContext(step=step, epoch=0, total_steps=total, steps_per_epoch=10, model=model)
        assert method.step_flops(ctx, flops) == pytest.approx(30.0 + extra)
        ctx.step = step + 1
        assert method.step_flops(ctx, flops) == 30.0
    assert updates == len(method.schedule.update_steps()) == 4
