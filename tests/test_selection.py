"""Mask updates' selections (sparsebench.sparsity.selection) pick exactly what torch.topk and
torch.isin pick, so the faster updates leave every mask as it was."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsebench.sparsity import SparsityEngine, selection
from sparsebench.sparsity.dst import grow_then_prune, replace_smallest


def _scores(kind: str, n: int, g: torch.Generator) -> torch.Tensor:
    x = torch.randn(n, generator=g)
    if kind == "ties":            # many equal values, ties at the k-th one likely
        x = x.round(decimals=1)
    elif kind == "excluded":      # most entries excluded, as inactive ones are for a drop
        x[torch.rand(n, generator=g) < 0.9] = float("inf")
    elif kind == "zeros":         # dead inputs: exactly zero gradients
        x[torch.rand(n, generator=g) < 0.5] = 0.0
    elif kind == "nan":
        x[7] = float("nan")
    return x


@pytest.mark.parametrize("kind", ["plain", "ties", "excluded", "zeros", "nan"])
@pytest.mark.parametrize("largest", [True, False])
def test_top_k_is_torch_topk_as_a_set(kind, largest):
    g = torch.Generator().manual_seed(1)
    n = 784 * 300   # the MLP's first layer
    for k in (1, 50, 7056, n // 8, n // 4):
        x = _scores(kind, n, g)
        want = set(torch.topk(x, k, largest=largest, sorted=False).indices.tolist())
        got = selection.top_k(x, k, largest=largest)
        assert got.numel() == k and set(got.tolist()) == want, (kind, k)


def test_members_is_isin():
    g = torch.Generator().manual_seed(2)
    a = torch.randperm(100_000, generator=g)[:5000]
    b = torch.cat([torch.randperm(100_000, generator=g)[:3000], a[:200]])
    assert torch.equal(selection.members(a, b), torch.isin(a, b))
    assert torch.equal(selection.members(b, a), torch.isin(b, a))
    assert not selection.members(a, b[:0]).any()


def _engine(seed: int) -> SparsityEngine:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                          nn.Linear(100, 10))
    engine = SparsityEngine.for_model(model, 0.1, "erk")
    engine.random_masks(torch.Generator().manual_seed(seed))
    engine.apply_masks()
    return engine


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_rigl_and_gse_updates_leave_the_masks_torch_topk_leaves(scope, monkeypatch):
    """A RigL update and a GSE grow-then-prune on MLP-sized layers, once with the shortcut and
    once with torch.topk everywhere: the same masks."""
    def masks_after(plain: bool):
        with monkeypatch.context() as m:
            if plain:
                m.setattr(selection, "MIN_ENTRIES", 10 ** 12)   # always the plain torch.topk
            engine = _engine(3)
            grads = {layer.name: torch.randn(layer.weight.shape,
                                             generator=torch.Generator().manual_seed(4)).abs()
                     for layer in engine.layers}
            grads[engine.layers[0].name][:, :100] = 0.0    # dead inputs: tied zero scores
            replace_smallest(engine, 0.3, scope=scope, regrow_dropped=True, grow_scores=grads)
            grown = {layer.name: layer.inactive_indices()[:500] for layer in engine.layers}
            budget = (sum(layer.target_active for layer in engine.layers) if scope == "global"
                      else {layer.name: layer.target_active for layer in engine.layers})
            grow_then_prune(engine, grown, budget)
            return [layer.mask.clone() for layer in engine.layers]

    for fast, plain in zip(masks_after(False), masks_after(True)):
        assert torch.equal(fast, plain)
