"""Scoring: the batches a method ranks connections by, and passes over them that leave no trace.

Score batches. The GSE authors (Heddes et al., ``our_training.py``,
``dynamic_sparse_training.py``, ``prune_before_training.py``) compute every score (GSE's
sampling distributions and candidate gradients, RigL's dense gradient, SNIP's and GraSP's
sensitivities) not on the step's own batch but on ⌈n · classes / batch⌉ extra training batches,
n = 10 samples per class: 1 batch on CIFAR-10, 8 on CIFAR-100 at batch 128, 40 on ImageNet at
batch 256. A method asks for this with its parameter ``score_samples_per_class`` (0: the
step's own batch, or at initialization the first training batches, each method's own paper).

The batches come from a stream of their own: a copy of the training loader (same data, same
augmentation) whose shuffle is seeded from the run's seed and the step of the draw, so they
never change the training data order, a resumed run draws the same ones, and two draws in one
step differ. Each draw is the first batches of a fresh permutation: a uniform sample of
examples without replacement.

Streamed. A draw (:class:`ScoreDraw`) loads its batches one at a time, each time it is
iterated, and the same ones every time; a method accumulates what it needs batch by batch
(:meth:`ScoreDraw.gradients`, or its own loop over :meth:`ScoreDraw.losses`), so the memory
of scoring is that of one batch and the accumulators, whatever the number of batches. Sums
over batches are kept in float64, which makes them independent of the order they are added in
(see below). Scoring runs in training mode and restores the model's buffers (batch-norm
running statistics) and mode afterwards (:func:`restored_state`); it never touches the
optimizer.

Data-parallel runs: rank r scores the draw's batches r, r + N, r + 2N, ... whole, and the
per-rank sums are all-reduced (:meth:`ScoreDraw.reduce`), so N ranks together do the work of
one and each batch is computed exactly as one process computes it (batch-norm statistics
included); with float64 sums, N ranks and one process reach the same scores and select the
same connections. (The first training batches a method scores on at initialization without
score batches are instead shared as training shares them: each rank its share of every batch,
gradients averaged as DDP averages them.)

FLOPs (Evci et al. 2020, App. H): every scored example is charged one forward and backward at
the masks of the moment, 3·f_S, unless the method names its own per-example cost (RigL's dense
weight gradient: 2·f_S + f_D); extra work on the batches (GSE's candidate products, its second
pass) is added with :meth:`ScoreBatches.add_flops`. The trainer adds the total to the run's
training FLOPs.
"""
from __future__ import annotations

import contextlib
import math
from itertools import islice
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from torch import nn

from . import distributed
from .config.schema import checked
from .data.loader import TensorLoader, epoch_seed

if TYPE_CHECKING:
    from .flops import FlopModel

Batch = tuple[torch.Tensor, torch.Tensor]
# FLOPs per scored example, given the run's FLOP model (None: 3·f_S at the current masks).
Cost = Callable[["FlopModel"], float] | None


def score_samples_param(default: int = 0) -> Any:
    """The method parameter ``score_samples_per_class`` (shared by GSE, RigL, SNIP, ...)."""
    return checked(default, lambda v: isinstance(v, int) and v >= 0, "an integer >= 0",
                   "scores from ⌈n·classes/batch⌉ separate training batches of n samples per "
                   "class (the GSE authors': 10); 0: from the step's own batch")


def independent_stream(loader, seed: int):
    """A loader over the same training data, shuffled and augmented from its own ``seed``
    (whole global batches on every rank)."""
    if isinstance(loader, TensorLoader):
        return TensorLoader(loader.x, loader.y, loader.batch_size, shuffle=True, drop_last=True,
                            augment=loader.augment, seed=seed, pad_fill=loader.pad_fill)
    from .data.imagenet import DeviceLoader

    if isinstance(loader, DeviceLoader):
        return DeviceLoader(loader.dataset, loader.batch_size, shuffle=True, drop_last=True,
                            device=loader.device, seed=seed, num_workers=loader.loader.num_workers,
                            classes=loader.classes)
    raise TypeError(f"score batches: no independent stream for a {type(loader).__name__}")


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
                if name in saved and b.shape == saved[name].shape:
                    b.copy_(saved[name])
        model.train(was_training)


class _RandomState:
    """The global random state (CPU and the current CUDA device) that dropout draws from."""

    def __init__(self):
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda)


class ScoreDraw:
    """The batches of one draw, loaded lazily, the same ones at every iteration; this rank's
    share of them (see the module docstring).

    ``batches``: a function returning a fresh iterator over the draw's global batches, in
    order; ``whole``: each rank scores whole batches (score batches) rather than its share of
    every batch (the training batches, already sharded by the training loader).
    """

    def __init__(self, batches: Callable[[], Iterator[Batch]], n_batches: int, examples: int, *,
                 model: nn.Module, loss_fn: Callable, whole: bool,
                 autocast: Callable = contextlib.nullcontext,
                 prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x):
        self._batches, self.n_batches, self.examples = batches, n_batches, examples
        self.model, self.loss_fn, self.whole = model, loss_fn, whole
        self.autocast, self.prepare = autocast, prepare
        self._first_pass: _RandomState | None = None

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[Batch]:
        """This rank's batches: (global index, (x, y))."""
        world = distributed.current()
        for i, (x, y) in enumerate(self._batches()):
            if not self.whole or i % world.size == world.rank:
                yield i, (self.prepare(x), y)

    def losses(self, *, replay: bool = False,
               logits: Callable[[torch.Tensor], torch.Tensor] = lambda out: out
               ) -> Iterator[tuple[int, torch.Tensor]]:
        """For each of this rank's batches, (global index, its loss / the number of batches):
        the summands of the mean loss over the draw. Training mode; buffers and mode restored
        when the pass ends. ``replay``: the random draws of the forward passes (dropout) are
        those of the draw's first pass, so a second pass computes exactly what the first did.
        ``logits`` transforms the model's output before the loss (GraSP's temperature)."""
        if self._first_pass is None:
            self._first_pass = _RandomState()
        elif replay:
            self._first_pass.restore()
        with restored_state(self.model):
            self.model.train()
            for i, (x, y) in self:
                with self.autocast():
                    loss = self.loss_fn(logits(self.model(x)), y) / self.n_batches
                yield i, loss

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        """A sum over this rank's batches of anything linear in the loss (gradients) → the sum
        over the draw: summed over ranks that score whole batches, averaged over ranks that
        each score a share of every batch with the mean loss of their share (as DDP)."""
        return distributed.all_reduce_sum(t) if self.whole else distributed.all_reduce_mean(t)

    def gradients(self, weights: list[torch.Tensor], **kw) -> list[torch.Tensor]:
        """The gradient of the mean loss over the draw w.r.t. ``weights``, summed batch by
        batch in float64 and all-reduced, returned in each weight's dtype. ``.grad`` is left
        alone. Keyword arguments go to :meth:`losses`."""
        sums: list[torch.Tensor] | None = None
        for _, loss in self.losses(**kw):
            grads = torch.autograd.grad(loss, weights)
            sums = ([g.double() for g in grads] if sums is None
                    else [s.add_(g) for s, g in zip(sums, grads)])
        if sums is None:
            sums = [torch.zeros_like(w, dtype=torch.float64) for w in weights]
        return [self.reduce(s).to(w.dtype) for s, w in zip(sums, weights)]


class ScoreBatches:
    """The run's score-batch facility (one per run; methods reach it through their contexts).
    ``model`` is the model itself (not a DDP wrapper): ranks score different batches."""

    def __init__(self, loader, *, model: nn.Module, samples_per_class: int, num_classes: int,
                 seed: int, flop_model, loss_fn: Callable,
                 autocast: Callable = contextlib.nullcontext,
                 prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x):
        self.batch_size = loader.batch_size
        self.samples_per_class = samples_per_class
        self.n_batches = (math.ceil(samples_per_class * num_classes / self.batch_size)
                          if samples_per_class > 0 else 0)
        self.loader, self.model = loader, model
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
    def draw(self, step: int, flops_per_example: Cost = None, *, autocast: bool = True) -> ScoreDraw:
        """``n_batches`` fresh batches for a draw at optimizer step ``step`` (-1: before
        training), counted at ``flops_per_example`` (default 3·f_S at the current masks);
        ``autocast``: score under the run's mixed precision (pruning at initialization: not)."""
        if self.n_batches == 0:
            raise RuntimeError("score batches: score_samples_per_class is 0 (use the step's batch)")
        self._in_step = self._in_step + 1 if step == self._last_step else 0
        self._last_step = step
        # The permutation depends on (step, draw within the step) only: resumes replay it.
        key = ((step + 1) * 1024 + self._in_step) * 64
        draw = ScoreDraw(lambda: self._global_batches(key), self.n_batches,
                         self.n_batches * self.batch_size, model=self.model, loss_fn=self.loss_fn,
                         whole=True, autocast=self.autocast if autocast else contextlib.nullcontext,
                         prepare=self.prepare)
        self.count(draw.examples, flops_per_example)
        return draw

    def _global_batches(self, key: int) -> Iterator[Batch]:
        """The draw's batches: the first of the permutation ``key``; a training set of fewer
        batches than asked for is gone through again, reshuffled."""
        left = self.n_batches
        while left:
            self.stream.set_epoch(key)
            more = 0
            for batch in islice(iter(self.stream), left):
                more += 1
                yield batch
            if not more:
                raise RuntimeError("score batches: the training set yields no full batch")
            left -= more
            key += 1

    def count(self, examples: int, flops_per_example: Cost = None) -> None:
        per = (3.0 * self.flop_model.sparse_forward() if flops_per_example is None
               else flops_per_example(self.flop_model))
        self.examples += examples
        self.pending_flops += per * examples

    def add_flops(self, total: float) -> None:
        """Extra work on the score batches (total FLOPs, not per example)."""
        self.pending_flops += total

    def take_flops(self) -> float:
        """FLOPs counted since the last call (the trainer adds them to the run's total)."""
        flops, self.pending_flops = self.pending_flops, 0.0
        return flops


def first_batches(train_batches: Callable[[], Iterator[Batch]], count: int, *, model: nn.Module,
                  loss_fn: Callable) -> ScoreDraw:
    """The first ``count`` training batches as a draw (each rank its share of each): what a
    score at initialization is computed on without score batches."""
    batches = list(islice(train_batches(), count))
    if not batches:
        raise RuntimeError("scoring at initialization: the training set yields no batch")
    examples = sum(int(y.numel()) for _, y in batches) * distributed.current().size
    return ScoreDraw(lambda: iter(batches), len(batches), examples, model=model, loss_fn=loss_fn,
                     whole=False)
