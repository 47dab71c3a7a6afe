"""Score batches: separate training batches for the scores a method ranks connections by.

The GSE authors (Heddes et al., ``our_training.py``, ``dynamic_sparse_training.py``,
``prune_before_training.py``) compute every score (GSE's sampling distributions and candidate
gradients, RigL's dense gradient, SNIP's and GraSP's sensitivities) not on the step's own batch
but on ⌈n · classes / batch⌉ extra training batches, n = 10 samples per class: 1 batch on
CIFAR-10 and 8 on CIFAR-100 at batch 128. A method asks for this with its parameter
``score_samples_per_class`` (0: the step's own batch, each method's own paper).

The batches come from a stream of their own: a copy of the training loader (same data, same
augmentation) whose shuffle is seeded from the run's seed and the step of the draw, so they
never change the training data order, a resumed run draws the same ones, and two draws in one
step differ. Each draw is the first batches of a fresh permutation: a uniform sample of
examples without replacement. Forward and backward on them never touch the optimizer, and
the model's buffers (batch-norm running statistics) are restored afterwards.

FLOPs (Evci et al. 2020, App. H): every scored example is charged one forward and backward at
the masks of the moment, 3·f_S, unless the method names its own per-example cost (RigL's dense
weight gradient: 2·f_S + f_D); extra work on the batches (GSE's candidate products) is added
with :meth:`ScoreBatches.add_flops`. The trainer adds the total to the run's training FLOPs.
"""
from __future__ import annotations

import contextlib
import math
from itertools import islice
from typing import Any, Callable

import torch
from torch import nn

from .config import checked
from .data.loader import TensorLoader, epoch_seed


def score_samples_param(default: int = 0) -> Any:
    """The method parameter ``score_samples_per_class`` (shared by GSE, RigL, SNIP, ...)."""
    return checked(default, lambda v: isinstance(v, int) and v >= 0, "an integer >= 0",
                   "scores from ⌈n·classes/batch⌉ separate training batches of n samples per "
                   "class (the GSE authors': 10); 0: from the step's own batch")


def independent_stream(loader, seed: int):
    """A loader over the same training data, shuffled and augmented from its own ``seed``."""
    if isinstance(loader, TensorLoader):
        return TensorLoader(loader.x, loader.y, loader.batch_size, shuffle=True, drop_last=True,
                            augment=loader.augment, seed=seed, pad_fill=loader.pad_fill)
    from .data.imagenet import DeviceLoader

    if isinstance(loader, DeviceLoader):
        return DeviceLoader(loader.dataset, loader.batch_size, shuffle=True, drop_last=True,
                            device=loader.device, seed=seed, num_workers=loader.loader.num_workers,
                            classes=loader.classes)
    raise TypeError(f"score batches: no independent stream for a {type(loader).__name__}")


class ScoreBatches:
    """The run's score-batch facility (one per run; methods reach it through their contexts)."""

    def __init__(self, loader, *, samples_per_class: int, num_classes: int, seed: int,
                 flop_model, loss_fn: Callable, autocast: Callable = contextlib.nullcontext,
                 prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x):
        self.batch_size = loader.batch_size
        self.samples_per_class = samples_per_class
        self.n_batches = (math.ceil(samples_per_class * num_classes / self.batch_size)
                          if samples_per_class > 0 else 0)
        self.loader = loader
        self._stream = None
        # A seed of its own, so the score stream shares no permutation with the training order.
        self.seed = epoch_seed(seed, -7) & (2**31 - 1)
        self.flop_model, self.loss_fn, self.autocast, self.prepare = (
            flop_model, loss_fn, autocast, prepare)
        self.pending_flops = 0.0
        self.examples = 0            # scored examples over the run (this session)
        self._last_step: int | None = None
        self._in_step = 0

    @property
    def stream(self):
        if self._stream is None:
            self._stream = independent_stream(self.loader, self.seed)
        return self._stream

    # ---- drawing and counting --------------------------------------------------------------
    def draw(self, step: int, flops_per_example: float | None = None
             ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``n_batches`` fresh batches for a draw at optimizer step ``step`` (-1: before
        training), counted at ``flops_per_example`` (default 3·f_S at the current masks)."""
        if self.n_batches == 0:
            raise RuntimeError("score batches: score_samples_per_class is 0 (use the step's batch)")
        self._in_step = self._in_step + 1 if step == self._last_step else 0
        self._last_step = step
        # The permutation depends on (step, draw within the step) only: resumes replay it. A
        # training set of fewer batches than asked for is gone through again, reshuffled.
        batches, key = [], ((step + 1) * 1024 + self._in_step) * 64
        while len(batches) < self.n_batches:
            self.stream.set_epoch(key)
            more = [(self.prepare(x), y) for x, y in islice(iter(self.stream), self.n_batches - len(batches))]
            if not more:
                raise RuntimeError("score batches: the training set yields no full batch")
            batches += more
            key += 1
        self.count(batches, flops_per_example)
        return batches

    def count(self, batches, flops_per_example: float | None = None) -> None:
        n = sum(int(y.numel()) for _, y in batches)
        per = 3.0 * self.flop_model.sparse_forward() if flops_per_example is None else flops_per_example
        self.examples += n
        self.pending_flops += per * n

    def add_flops(self, total: float) -> None:
        """Extra work on the score batches (total FLOPs, not per example)."""
        self.pending_flops += total

    def take_flops(self) -> float:
        """FLOPs counted since the last call (the trainer adds them to the run's total)."""
        flops, self.pending_flops = self.pending_flops, 0.0
        return flops

    # ---- forward and backward -----------------------------------------------------------------
    def backward(self, model: nn.Module, batches, *, before_each: Callable[[int], None] | None = None,
                 after_each: Callable[[int], None] | None = None) -> None:
        """Gradients of the mean loss over ``batches`` into every parameter's ``.grad`` (set,
        not accumulated onto earlier ones), in training mode; buffers restored afterwards.
        ``before_each(i)``/``after_each(i)`` run around batch i's forward and backward."""
        backward_on(model, self.loss_fn, batches, autocast=self.autocast,
                    before_each=before_each, after_each=after_each)


def backward_on(model: nn.Module, loss_fn: Callable, batches, *, autocast: Callable = contextlib.nullcontext,
                before_each: Callable[[int], None] | None = None,
                after_each: Callable[[int], None] | None = None) -> None:
    """See :meth:`ScoreBatches.backward`."""
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    was_training = model.training
    model.train()
    model.zero_grad(set_to_none=True)
    try:
        for i, (x, y) in enumerate(batches):
            if before_each is not None:
                before_each(i)
            with autocast():
                loss = loss_fn(model(x), y) / len(batches)
            loss.backward()
            if after_each is not None:
                after_each(i)
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in buffers and b.shape == buffers[name].shape:
                    b.copy_(buffers[name])
        model.train(was_training)
