"""What pruning-at-initialization methods (SNIP, GraSP, SynFlow) share around their scores:
the batches they score on, and scoring that leaves no trace in the model but the masks."""
from __future__ import annotations

import contextlib
from itertools import islice
from typing import Any, Iterator

import torch
from torch import nn


@contextlib.contextmanager
def restored_state(model: nn.Module) -> Iterator[None]:
    """Restore the model's buffers (batch-norm running statistics, which a scoring forward
    pass in training mode updates) and its training mode afterwards."""
    saved = {name: b.detach().clone() for name, b in model.named_buffers()}
    was_training = model.training
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(saved[name])
        model.train(was_training)


def score_batches(ctx: Any, count: int, method: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``count`` training batches: what a data-dependent score at initialization is
    computed on when the method's ``score_samples_per_class`` is 0 (else the run's separate
    score batches, ``ctx.score_batches()``)."""
    batches = list(islice(ctx.train_batches(), count))
    if not batches:
        raise RuntimeError(f"{method}: the training set yields no batch to score on")
    return batches
