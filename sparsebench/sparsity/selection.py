"""Top-k selection for mask updates: the set ``torch.topk`` picks, at a fraction of its cost.

A mask update ranks whole layers (RigL's grow scores, a global bottom-k of magnitudes over
every layer) for k of a few percent of their entries; on a CPU ``torch.topk`` then costs about
as much as a training step of the MLP (3 ms for k = 7k of 235k), most of it spent keeping the
k best of a heap. Here a strided sample of the scores gives a threshold that at least k entries
pass (about 1.3·k of them), and ``torch.topk`` runs over those alone.

The selection is exactly ``torch.topk(scores, k, largest, sorted=False)``'s as a set: the k
largest entries are unique unless the k-th value is tied with entries left out, and in that
case (and wherever the shortcut does not apply: small inputs, large k, NaN scores, a sample
whose threshold lets fewer than k through) the full ``torch.topk`` runs, so ties are broken as
it breaks them. Only the order of the returned indices may differ (callers treat them as a
set).
"""
from __future__ import annotations

import torch

# Below this many entries, or for k above a MAX_FRACTION of them, the plain top-k is as cheap.
MIN_ENTRIES = 16_384
MAX_FRACTION = 0.125
SAMPLE_STRIDE = 16          # every 16th entry estimates the threshold
SAMPLE_SLACK = 0.75         # aim the threshold at ~k / 0.75 survivors, so that k pass


def top_k(scores: torch.Tensor, k: int, *, largest: bool = True) -> torch.Tensor:
    """Flat indices of the ``k`` largest (``largest=False``: smallest) entries of 1-D ``scores``:
    the set ``torch.topk(scores, k, largest=largest, sorted=False).indices`` holds."""
    n = scores.numel()
    if k <= 0 or n < MIN_ENTRIES or k > MAX_FRACTION * n or scores.is_cuda:
        return torch.topk(scores, k, largest=largest, sorted=False).indices
    picked = _prefiltered(scores if largest else -scores, k)
    if picked is None:
        return torch.topk(scores, k, largest=largest, sorted=False).indices
    return picked


def _prefiltered(x: torch.Tensor, k: int) -> torch.Tensor | None:
    """The k largest of ``x`` through a sampled threshold; None where that would not give
    ``torch.topk``'s own set (too few survivors, a tie at the k-th value, NaN)."""
    sample = x[::SAMPLE_STRIDE].contiguous()
    k_sample = min(sample.numel(), int(k / (SAMPLE_STRIDE * SAMPLE_SLACK)) + 1)
    threshold = torch.topk(sample, k_sample, sorted=False).values.min()
    # NaN (which torch.topk ranks above everything) survives ``~(x < t)``, and is caught below.
    survivors = (~(x < threshold)).nonzero().squeeze(1)
    if survivors.numel() < k:
        return None
    values = x[survivors]
    if bool(torch.isnan(values).any()):
        return None
    top = torch.topk(values, k, sorted=False)
    kth = top.values.min()
    # A tie at the k-th value with an entry left out: torch.topk's own choice decides.
    if int((values == kth).sum()) != int((top.values == kth).sum()):
        return None
    return survivors[top.indices]



def members(idx: torch.Tensor, of: torch.Tensor) -> torch.Tensor:
    """``torch.isin(idx, of)`` for index tensors: one bool per entry of ``idx``, by binary search
    in ``of`` sorted (O((|idx| + |of|)·log|of|), nothing the size of the layer)."""
    of = of.to(idx.device)
    if of.numel() == 0 or idx.numel() == 0:
        return torch.zeros(idx.shape, dtype=torch.bool, device=idx.device)
    ordered = torch.sort(of).values
    pos = torch.searchsorted(ordered, idx).clamp_(max=ordered.numel() - 1)
    return ordered[pos] == idx
