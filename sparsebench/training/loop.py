"""The one training loop every method runs under (a slim trainer).

:class:`Trainer` builds a run's parts from its config (data, model, sparsity engine, method,
optimizer and schedule, FLOP model, score batches), then trains epoch by epoch: each step is
:func:`~.step.training_step`; after each epoch come the method's ``end_of_epoch`` hook, the
evaluation, a row in ``metrics.jsonl`` and a checkpoint (:mod:`.state`). Concerns that observe
the run (progress display, tracking) are :class:`~.callbacks.Callback` objects in
``trainer.callbacks``, told after every step and epoch. The run's lifecycle (lock, result.json,
failure records) is :mod:`.lifecycle`.

Rounds: a method whose ``rounds()`` is R > 1 (Lottery) gets the whole schedule R times in the
same loop. Between rounds its ``start_round`` hook runs (prune, rewind), then the optimizer and
the learning-rate schedule start afresh. Steps, FLOPs and wall-clock add up over the rounds;
metrics rows carry their round; a checkpoint taken in any round resumes there.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

from ..storage import atomic, checkpoints, paths
from .. import distributed, methods
from ..config.schema import RunConfig
from ..data import build_data
from ..flops import FlopModel
from ..models import build_model
from .schedules import build_optimizer, build_scheduler
from ..scoring import ScoreBatches
from ..sparsity.init import apply_init
from ..sparsity.engine import build_engine
from . import compile as compiling
from .callbacks import Callback, ProgressBar, StepEnd
from .device import resolve_device
from .precision import Precision
from .result import now_iso
from .state import Progress, apply_checkpoint, checkpoint_state, resume_checkpoint
from .step import training_step
from .timing import Stopwatch

# Check for a non-finite loss every this many steps (each check synchronizes a GPU).
DIVERGENCE_CHECK_EVERY = 25


def run_data(cfg: RunConfig, device: torch.device | str, rank: int = 0, world_size: int = 1):
    """The run's data: its train and test loaders, normalized and batched as it trains and
    evaluates (also what :meth:`sparsebench.training.final.FinalModel.test_loader` gives)."""
    return build_data(cfg.data.name, batch_size=cfg.data.batch_size,
                      test_batch_size=cfg.data.test_batch_size, device=torch.device(device),
                      seed=cfg.seed, augment=cfg.data.augment, root=cfg.data.root,
                      train_subset=cfg.data.train_subset, rank=rank, world_size=world_size,
                      pad_value=cfg.data.pad_value, validation=cfg.data.validation)


def stop_reason(stop: BaseException) -> str:
    """How a run was stopped, for its log: Ctrl-C, SIGTERM (which the local workers and
    ``sparsebench train`` turn into exit code 143) or another exit."""
    if isinstance(stop, KeyboardInterrupt):
        return "Ctrl-C"
    code = getattr(stop, "code", None)
    return "SIGTERM" if code == 143 else f"exit code {code}"


class Diverged(Exception):
    """The training loss became NaN or infinite."""


class RunLog:
    """Appends timestamped lines to the run's ``log`` file."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, message: str) -> None:
        atomic.append_text(self.path, f"{now_iso()} {message}\n")


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: Path, callbacks: list[Callback] | None = None):
        self.cfg = cfg
        self.run_dir = run_dir
        # Data-parallel runs: rank 0 alone writes (sparsebench.distributed).
        self.world = distributed.current()
        self.log = RunLog(run_dir / paths.LOG) if self.world.is_main else (lambda message: None)
        self.device = resolve_device(cfg.device)
        self.cuda = self.device.type == "cuda"
        torch.manual_seed(cfg.seed)
        self.data = run_data(cfg, self.device, rank=self.world.rank, world_size=self.world.size)
        info = self.data.info
        self.precision = Precision.for_run(cfg, self.device, image_input=len(info.in_shape) == 3)
        self.precision.apply()
        self.model = self.precision.prepare_model(
            build_model(cfg.model.name, num_classes=info.num_classes, in_shape=info.in_shape,
                        width=cfg.model.width, **cfg.model.arguments()).to(self.device))
        # ``sparsity.engine: sparse`` swaps the model's linear layers for always-sparse ones.
        self.engine = build_engine(
            self.model, cfg.density, cfg.sparsity.distribution, engine=cfg.sparsity.engine,
            dense_first_layer=cfg.sparsity.dense_first_layer,
            dense_last_layer=cfg.sparsity.dense_last_layer, device=self.device)
        self.steps_per_epoch = len(self.data.train)
        if self.steps_per_epoch == 0:
            raise ValueError("data.batch_size: larger than the training set, no full batch")
        self.total_steps = cfg.epochs * self.steps_per_epoch
        method_cls = methods.get(cfg.method.name)
        self.method = method_cls(method_cls.Params(**cfg.method.params), self.engine,
                                 total_steps=self.total_steps,
                                 steps_per_epoch=self.steps_per_epoch, seed=cfg.seed)
        self.rounds = self.method.rounds()
        self.compile = compiling.decide(cfg.compile, device=self.device, engine=cfg.sparsity.engine,
                                        total_steps=self.rounds * self.total_steps)
        self.log(self.compile.note)
        self.reset_optimizer()
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
        self.flop_model = FlopModel(self.model, self.engine, info.in_shape, self.device)
        self.scoring = ScoreBatches(
            self.data.train, model=self.model,
            samples_per_class=getattr(self.method.params, "score_samples_per_class", 0),
            num_classes=info.num_classes, seed=cfg.seed, flop_model=self.flop_model,
            loss_fn=self.loss_fn, autocast=self.autocast, prepare=self._inputs)
        self._train_model = None   # DDP with several ranks, compiled: see train_model
        self._hook_model = None    # the same without compiling: what method hooks see
        self.check_masks = distributed.check_masks_enabled()
        self.devices = distributed.devices(self.device)  # every rank's (a collective: not in result())
        self.progress = Progress()
        self.seen_mask_version = self.engine.mask_version  # see count_mask_update
        # Hook and step times: host clock on the CPU, CUDA events on a GPU (see .timing).
        self.hook_clock, self.step_clock = Stopwatch(self.device), Stopwatch(self.device)
        self.callbacks: list[Callback] = [ProgressBar(cfg.progress and self.world.is_main),
                                          *(callbacks or [])]

    def reset_optimizer(self) -> None:
        """A fresh optimizer and learning-rate schedule (at the start and of every round)."""
        self.optimizer = build_optimizer(
            self.cfg.optim, self.model, self.method.regularized_parameters(self.cfg.optim.weight_decay))
        self.engine.attach_optimizer(self.optimizer)
        self.scheduler = build_scheduler(self.cfg.optim, self.optimizer, self.steps_per_epoch,
                                         self.total_steps)

    @property
    def train_model(self) -> nn.Module:
        """The module steps run through (DDP with several ranks, then torch.compile under
        ``compile``), wrapped at its first use: after the checkpoint was loaded or the first masks
        drawn, so DDP starts from that state."""
        if self._train_model is None:
            self._hook_model = distributed.wrap(self.model, self.device)
            self._train_model = compiling.wrap(self._hook_model, self.compile,
                                               self.cfg.compile_backend)
        return self._train_model

    @property
    def step_model(self):
        """The module steps have run through (None before the first step)."""
        return self._train_model

    # ---- pieces of the loop ------------------------------------------------------------------
    def count_mask_update(self) -> None:
        """Count one mask update (result.json's ``mask_updates``) where the engine's topology
        changed (its ``mask_version`` moved) since the last look. The trainer looks after every
        step, after each epoch's ``end_of_epoch`` hook and after each round's ``start_round``,
        so a step (or an epoch end, a round start) that changes the masks counts once however
        many layers and moves it takes; the initial masks (``init_masks``) and a checkpoint's
        restore do not count (the checkpoint carries the count)."""
        if self.engine.mask_version != self.seen_mask_version:
            self.progress.mask_updates += 1
            self.seen_mask_version = self.engine.mask_version

    def warn(self, message: str) -> None:
        """A warning in the run's log and on standard error (rank 0)."""
        self.log(f"warning: {message}")
        if self.world.is_main:
            print(f"warning: {message}", file=sys.stderr, flush=True)

    def warn_few_updates(self) -> None:
        """Say at run start when a dynamic method's schedule makes fewer than
        ``methods.MIN_MASK_UPDATES`` topology changes in this run (issue 32)."""
        message = methods.few_updates_warning(type(self.method), self.method.params,
                                              total_steps=self.total_steps,
                                              steps_per_epoch=self.steps_per_epoch)
        if message:
            self.warn(message)

    def autocast(self):
        return self.precision.autocast()

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.precision.memory_format(x)

    def _train_batches(self):
        self.data.train.set_epoch(0)
        for x, y in self.data.train:
            yield self._inputs(x), y

    def init_masks(self) -> None:
        ctx = methods.InitContext(self.model, self._train_batches,
                                  lambda out, y: self.loss_fn(out, y), scoring=self.scoring)
        before = self.method.scores_initial_weights  # sparsity.init before or after the topology
        if before:
            apply_init(self.cfg.sparsity.init, self.engine, self.cfg.seed)
        self.method.init_masks(ctx)
        self.engine.apply_masks()
        if not before:
            apply_init(self.cfg.sparsity.init, self.engine, self.cfg.seed)
        self.progress.train_flops += self.method.init_flops(self.flop_model) + self.scoring.take_flops()
        self.flop_model.sparse_forward()   # counted here, not by the first step (a host sync)
        self.log(f"initial masks: global density {self.engine.global_density():.5f}, per layer "
                 + ", ".join(f"{n}={d:.4f}" for n, d in self.engine.layer_densities().items()))

    @torch.no_grad()
    def evaluate(self, loader=None) -> tuple[float, float]:
        """Loss and accuracy (%) on ``loader`` (default: the test set)."""
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        count = 0
        for x, y in (loader if loader is not None else self.data.test):
            with self.autocast():
                out = self.model(self._inputs(x))
            loss_sum += nn.functional.cross_entropy(out.float(), y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
            count += y.numel()
        self.model.train()
        loss_sum, correct, count = distributed.sum_counts(loss_sum, correct, count)  # sharded evaluation
        return float(loss_sum) / count, 100.0 * float(correct) / count

    def _timed(self, hook, ctx) -> None:
        """Run a method hook; its time joins ``update_s`` when the epoch's marks are read."""
        start = self.hook_clock.mark()
        hook(ctx)
        self.hook_clock.add(start, self.hook_clock.mark())

    def train_epoch(self, epoch: int) -> dict:
        """One epoch of training; returns its row (train loss and accuracy, epoch time)."""
        steps = self.epoch_steps(epoch)
        while True:
            try:
                next(steps)
            except StopIteration as end:
                return end.value

    def epoch_steps(self, epoch: int):
        """The epoch as a generator: it yields after every step and returns the epoch's row.
        A step's time runs from the generator's resumption to its next yield (so whatever the
        caller does in between is not counted): the benchmarks interleave several trainers
        step by step this way, so that a noisy machine slows all of them alike."""
        model, method, p = self.train_model, self.method, self.progress
        model.train()
        round_, round_start = p.round, p.round * self.total_steps
        self.data.train.set_epoch(round_ * self.cfg.epochs + epoch)  # each round its own order
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        ctx = methods.StepContext(step=p.step - round_start, epoch=epoch,
                                  total_steps=self.total_steps,
                                  steps_per_epoch=self.steps_per_epoch, model=self._hook_model,
                                  round=round_,
                                  scoring=self.scoring)
        # Per step, from the end of the previous one: fetching the batch included.
        t_epoch = t_last = time.perf_counter()
        last = self.step_clock.mark()
        for i, (x, y) in enumerate(self.data.train):
            x = self._inputs(x)
            ctx.step = p.step - round_start
            out, loss = training_step(model, self.loss_fn, self.optimizer, self.engine, method,
                                      ctx, x, y, scheduler=self.scheduler, autocast=self.autocast,
                                      call_hook=self._timed)
            batch = y.numel() * self.world.size  # FLOPs and examples of the global batch
            p.train_flops += method.step_flops(ctx, self.flop_model) * batch + self.scoring.take_flops()
            p.examples_seen += batch
            loss_sum += loss.detach().float() * y.numel()
            step_correct = (out.detach().argmax(1) == y).sum()
            correct += step_correct
            seen += y.numel()
            if self.check_masks:
                distributed.check_masks(self.engine, p.step)
            self.count_mask_update()
            p.step += 1
            if (i + 1) % DIVERGENCE_CHECK_EVERY == 0 and distributed.any_rank(~torch.isfinite(loss_sum)):
                raise Diverged(f"non-finite training loss at step {p.step}")
            for callback in self.callbacks:
                callback.on_step_end(self, StepEnd(p.step, epoch, round_, loss, out, y.numel(),
                                                       step_correct))
            t_yield = time.perf_counter()
            self.step_clock.add(last, self.step_clock.mark())
            yield
            t_last = time.perf_counter()
            last = self.step_clock.mark()
            t_epoch += t_last - t_yield  # the caller's time is not the epoch's
        ctx.batch = ctx.loss = None
        self._timed(method.end_of_epoch, ctx)
        self.count_mask_update()
        p.update_s += self.hook_clock.take()   # waits for the device
        epoch_time = time.perf_counter() - t_epoch
        times = self.step_clock.take_each()
        if distributed.any_rank(~torch.isfinite(loss_sum)):
            raise Diverged(f"non-finite training loss in epoch {epoch + 1}")
        loss_sum, correct, seen = distributed.sum_counts(loss_sum, correct, seen)
        p.step_times.extend(times)
        return {"train_loss": float(loss_sum) / seen, "train_acc": 100.0 * float(correct) / seen,
                "epoch_time_s": epoch_time}

    # ---- checkpoint --------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / paths.CHECKPOINT

    def save_checkpoint(self) -> None:
        state = checkpoint_state(self)   # on every rank: it gathers each rank's RNG state
        if self.world.is_main:  # all resume from this file
            checkpoints.save(self.checkpoint_path, state)

    def load_checkpoint(self) -> bool:
        """Resume from the newest good checkpoint generation (see sparsebench.storage.checkpoints);
        with several ranks, rank 0 chooses it and the others wait."""
        if not resume_checkpoint(self.checkpoint_path, lambda: checkpoint_state(self, all_ranks=False),
                                  lambda state: apply_checkpoint(self, state),
                                  map_location=self.device, log=self.log):
            return False
        self.log(f"resumed from checkpoint after epoch {self.progress.epoch}")
        self.flop_model.sparse_forward()   # as after init_masks
        return True

    # ---- rounds ------------------------------------------------------------------------------
    def end_round(self) -> None:
        """Summarize the round just finished (its last epoch's row) for result.json."""
        p = self.progress
        last = p.history[-1]
        p.rounds.append({"round": p.round, "final_test_acc": last["test_acc"],
                         "best_test_acc": p.best_test_acc, "density": last["density"],
                         "steps": p.step, "train_flops": p.train_flops})

    def start_next_round(self) -> None:
        """The method's ``start_round`` hook, then a fresh optimizer and schedule."""
        p, t0 = self.progress, time.perf_counter()
        p.round, p.epoch, p.best_test_acc, p.best_val_acc = p.round + 1, 0, -math.inf, -math.inf
        self._timed(lambda _: self.method.start_round(p.round, self.model), None)
        self.count_mask_update()
        self.engine.apply_masks()
        self.reset_optimizer()
        p.elapsed_s += time.perf_counter() - t0
        self.log(f"round {p.round + 1}/{self.rounds}: density {self.engine.global_density():.5f}")

    # ---- epochs ------------------------------------------------------------------------------
    def evaluate_epoch(self, row: dict) -> dict:
        """The epoch's test evaluation: completes and keeps the row ``train_epoch`` returned."""
        cfg, p = self.cfg, self.progress
        test_loss, test_acc = self.evaluate()
        p.epoch += 1
        validation = {}
        if self.data.validation is not None:  # best_*: the test accuracy at the best validation
            val_loss, val_acc = self.evaluate(self.data.validation)
            validation = {"val_loss": val_loss, "val_acc": val_acc}
            if val_acc > p.best_val_acc:
                p.best_val_acc, p.best_test_acc = val_acc, test_acc
        else:
            p.best_test_acc = max(p.best_test_acc, test_acc)
        row = {"epoch": p.round * cfg.epochs + p.epoch, "round": p.round,
               "round_epoch": p.epoch, "step": p.step, **row, "test_loss": test_loss,
               "test_acc": test_acc, **validation, "lr": self.optimizer.param_groups[0]["lr"],
               "density": self.engine.global_density(), "update_time_s": p.update_s}
        p.history.append(row)
        return row

    def record_epoch(self, row: dict) -> None:
        """After an evaluated epoch: the round's summary, metrics.jsonl, checkpoint, log."""
        cfg, p = self.cfg, self.progress
        if p.epoch == cfg.epochs:
            self.end_round()
        if self.world.is_main:
            atomic.write_jsonl(self.run_dir / paths.METRICS, p.history)
        self.save_checkpoint()
        self.log(f"{f'round {p.round + 1}/{self.rounds} ' if self.rounds > 1 else ''}"
                 f"epoch {p.epoch}/{cfg.epochs} train_loss {row['train_loss']:.4f} "
                 f"test_acc {row['test_acc']:.2f}% density {row['density']:.5f}")

    # ---- the run -----------------------------------------------------------------------------
    def run(self, stop_after_epochs: int | None = None) -> str:
        """Train to the end (or for ``stop_after_epochs`` more epochs); returns the status."""
        if not self.load_checkpoint():
            self.init_masks()
        self.seen_mask_version = self.engine.mask_version   # the masks training starts from
        self.warn_few_updates()
        cfg, p = self.cfg, self.progress
        for callback in self.callbacks:
            callback.on_run_start(self)
        status, epochs_this_session = "failed", 0
        try:
            while p.epoch < cfg.epochs or p.round + 1 < self.rounds:
                if p.epoch == cfg.epochs:  # a round is done (checkpointed); the next starts here
                    self.start_next_round()
                if stop_after_epochs is not None and epochs_this_session >= stop_after_epochs:
                    status = "interrupted"
                    return status
                t0 = time.perf_counter()
                row = self.evaluate_epoch(self.train_epoch(p.epoch))
                p.elapsed_s += time.perf_counter() - t0
                epochs_this_session += 1
                self.record_epoch(row)
                for callback in self.callbacks:
                    callback.on_epoch_end(self, row)
            status = "completed"
            return status
        except Diverged:
            status = "diverged"
            raise
        except (KeyboardInterrupt, SystemExit) as stop:  # Ctrl-C, or SIGTERM made an exit
            self.log(f"stopped ({stop_reason(stop)}) in epoch {p.epoch + 1}/{cfg.epochs} at "
                     f"step {p.step}; resumes from the checkpoint after epoch {p.epoch}"
                     + (f" of round {p.round + 1}" if self.rounds > 1 else ""))
            raise
        finally:
            compiling.close(self._train_model)
            for callback in self.callbacks:
                callback.on_run_end(self, status)
