"""A validation split held out of the training set (``data.validation: N``).

The N examples are drawn by a permutation seeded with the run's seed alone, so every run of a
seed (any method, density or model) holds out the same examples and trains on the same rest;
the test set is untouched. The validation set is evaluated like the test set (no
augmentation, in order) and is what ``best_*`` and any early choice look at when it is set.
"""
from __future__ import annotations

import torch

# Mixed into the seed so that the split is not the permutation of the first epoch's order.
SPLIT_SALT = 0x5EED_5A17


def hold_out(x: torch.Tensor, y: torch.Tensor, n: int, seed: int
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_val, y_val)``: n examples of ``x, y`` held out, both parts in
    their original order."""
    if not 0 < n < len(x):
        raise ValueError(f"data.validation: got {n}; allowed: an integer in [1, {len(x) - 1}] "
                         f"(the training set has {len(x)} examples)")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed ^ SPLIT_SALT))
    held = torch.zeros(len(x), dtype=torch.bool)
    held[order[:n]] = True
    return x[~held], y[~held], x[held], y[held]
