"""Every method that picks its topology from the initial weights trains the weights it scored
(issue 26), under both ``sparsity.init`` values: SNIP, SynFlow, GraSP and Top-KAST start step 0
from the scored weights on their mask; Lottery's round 0 starts from θ_0 and every later round
from θ_0 on its mask (the rewind), also where ``active_fan_in`` draws θ_0."""
from __future__ import annotations

import math

import pytest
import torch

from sparsebench import methods, resolve
from sparsebench.training import train

from .conftest import REPO, needs_fmnist

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")
TINY = ["data.train_subset=256", "data.batch_size=128", "epochs=1", "progress=false",
        "density=0.1", "optim.weight_decay=0"]
EXTRA = {"synflow": ["method.iterations=5"], "lottery": ["method.rounds=1"],
         "topkast": ["method.explore_epochs=0"]}


def _spied_run(name: str, init: str, tmp_path, monkeypatch):
    """(weights init_masks saw, {round: weights the forward pass of step 0 used}, method)."""
    cls = methods.get(name)
    seen: dict = {"step0": {}}
    init_masks, before_forward = cls.init_masks, cls.before_forward

    def spy_init(self, ctx):
        seen["scored"] = [layer.weight.detach().clone() for layer in self.engine.layers]
        seen["method"] = self
        return init_masks(self, ctx)

    def spy_forward(self, ctx):
        before_forward(self, ctx)
        if ctx.step == 0:
            seen["step0"][ctx.round] = [(layer.weight.detach().clone(), layer.mask.clone())
                                        for layer in self.engine.layers]

    monkeypatch.setattr(cls, "init_masks", spy_init)
    monkeypatch.setattr(cls, "before_forward", spy_forward)
    cfg = resolve.load(BASE, [f"method.name={name}", f"sparsity.init={init}", *TINY,
                              *EXTRA.get(name, [])])
    assert train(cfg)["status"] == "completed"
    return seen["scored"], seen["step0"], seen["method"]


def _check_drawn_by(init: str, scored: list[torch.Tensor]) -> None:
    """model: PyTorch's Linear init, U(±1/√fan_in); active_fan_in at full fan-in: U(±√(3/fan_in))."""
    for w in scored:
        fan_in = w.shape[1]
        top = float(w.abs().max()) * math.sqrt(fan_in)
        if init == "model":
            assert 0.9 < top <= 1 + 1e-6
        else:
            assert 0.9 * math.sqrt(3) < top <= math.sqrt(3) + 1e-6


@needs_fmnist
@pytest.mark.parametrize("init", ["model", "active_fan_in"])
@pytest.mark.parametrize("name", ["snip", "synflow", "grasp", "topkast"])
def test_pruning_at_init_trains_the_weights_it_scored(name, init, tmp_path, monkeypatch):
    assert methods.get(name).scores_initial_weights
    scored, step0, method = _spied_run(name, init, tmp_path, monkeypatch)
    _check_drawn_by(init, scored)
    for w0, (w, mask) in zip(scored, step0[0]):
        assert 0 < mask.float().mean() < 1
        assert torch.equal(w[mask], w0[mask])                 # the survivors as scored
        assert torch.count_nonzero(w[~mask]) == 0
    if name == "topkast":   # θ off the forward set is the scored θ too (one rule everywhere)
        for layer, w0 in zip(method.engine.layers, scored):
            assert layer.name in method.outside
        first = step0[0]
        assert all(torch.equal(torch.where(m, w, 0.0), torch.where(m, w0, 0.0))
                   for w0, (w, m) in zip(scored, first))


@needs_fmnist
@pytest.mark.parametrize("init", ["model", "active_fan_in"])
def test_lottery_rewinds_to_the_weights_round_zero_started_from(init, tmp_path, monkeypatch):
    assert methods.get("lottery").scores_initial_weights
    theta0, step0, method = _spied_run("lottery", init, tmp_path, monkeypatch)
    _check_drawn_by(init, theta0)
    assert sorted(step0) == [0, 1]
    for w0, (w, mask) in zip(theta0, step0[0]):              # round 0: dense, from θ_0
        assert bool(mask.all()) and torch.equal(w, w0)
    for w0, (w, mask) in zip(theta0, step0[1]):              # round 1: θ_0 on the ticket's mask
        assert 0 < mask.float().mean() < 1
        assert torch.equal(w[mask], w0[mask]) and torch.count_nonzero(w[~mask]) == 0
    stored = [method.rewind_state[f"{layer.name}.weight"] for layer in method.engine.layers]
    assert all(torch.equal(s, w0) for s, w0 in zip(stored, theta0))
