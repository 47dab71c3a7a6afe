"""The one training loop every method runs under.

One step: ``before_forward`` hook, forward, loss, backward, ``after_backward`` hook (dense
gradients visible), gradients of inactive weights zeroed by the engine, optimizer step,
schedule step, ``after_step`` hook. After each epoch: ``end_of_epoch`` hook, evaluation, a
line in ``metrics.jsonl`` and an atomic checkpoint, from which a restarted run resumes and
ends with exactly the result an uninterrupted run gets (on CPU; the data order and
augmentation of an epoch depend only on the seed and the epoch, the rest is in the checkpoint).

Rounds: a method whose ``rounds()`` is R > 1 (Lottery) gets the whole schedule R times in
the same loop. Between rounds its ``start_round`` hook runs (prune, rewind), then the
optimizer and the learning-rate schedule start afresh. Steps, FLOPs and wall-clock add up
over the rounds; metrics rows carry their round; a checkpoint taken in any round resumes there.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import platform
import statistics
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from . import atomic, checkpoints, distributed, locks, methods, paths, preflight
from .config import ConfigError, RunConfig, run_id, to_dict
from .data import build_data
from .flops import FlopModel
from .models import build_model
from .schedules import build_optimizer, build_scheduler
from .scoring import ScoreBatches
from .sparsity.init import apply_init
from .sparsity.sparse_engine import build_engine

# Check for a non-finite loss every this many steps (each check synchronizes a GPU).
DIVERGENCE_CHECK_EVERY = 25


class Diverged(Exception):
    """The training loss became NaN or infinite."""


@lru_cache(maxsize=1)
def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.repo_root(),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for but torch sees no CUDA device")
    return torch.device(name)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class RunLog:
    """Appends timestamped lines to the run's ``log`` file."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, message: str) -> None:
        atomic.append_text(self.path, f"{now_iso()} {message}\n")


@dataclass
class Progress:
    """Everything about where a run stands that a checkpoint must carry."""

    epoch: int = 0                  # epochs completed
    step: int = 0                   # optimizer steps completed
    elapsed_s: float = 0.0          # training wall-clock over all sessions
    update_s: float = 0.0           # of which in method hooks (mask updates)
    best_test_acc: float = -math.inf
    history: list[dict] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    examples_seen: int = 0          # training examples processed (steps x batch)
    train_flops: float = 0.0        # summed over the actual run, see sparsebench.flops
    round: int = 0                  # current round (methods with several rounds, e.g. Lottery)
    rounds: list[dict] = field(default_factory=list)   # one summary per finished round


def _call(hook, ctx) -> None:
    hook(ctx)


def training_step(model: nn.Module, loss_fn, optimizer, engine, method, ctx, x, y, *,
                  scheduler=None, autocast=contextlib.nullcontext, call_hook=_call):
    """One optimizer step exactly as the trainer takes it (benchmarks and tests call this too):
    ``before_forward``, forward and loss, backward, ``after_backward``, gradients of inactive
    weights masked by the engine, optimizer (and schedule) step, ``after_step``.
    ``call_hook(hook, ctx)`` runs each hook (the trainer times them). Returns (output, loss)."""
    ctx.batch = (x, y)
    call_hook(method.before_forward, ctx)
    with autocast():
        out = model(x)
        loss = loss_fn(out, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    ctx.loss = loss
    call_hook(method.after_backward, ctx)
    engine.mask_gradients()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    call_hook(method.after_step, ctx)
    return out, loss


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: Path):
        self.cfg = cfg
        self.run_dir = run_dir
        # Data-parallel runs: rank 0 alone writes (sparsebench.distributed).
        self.world = distributed.current()
        self.log = RunLog(run_dir / paths.LOG) if self.world.is_main else (lambda message: None)
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.data = build_data(cfg.data.name, batch_size=cfg.data.batch_size,
                               test_batch_size=cfg.data.test_batch_size, device=self.device,
                               seed=cfg.seed, augment=cfg.data.augment, root=cfg.data.root,
                               train_subset=cfg.data.train_subset, rank=self.world.rank,
                               world_size=self.world.size)
        info = self.data.info
        self.model = build_model(cfg.model.name, num_classes=info.num_classes,
                                 in_shape=info.in_shape, width=cfg.model.width).to(self.device)
        self.cuda = self.device.type == "cuda"
        self.channels_last = self.cuda and cfg.channels_last and len(info.in_shape) == 3
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
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
        self.reset_optimizer()
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
        self.flop_model = FlopModel(self.model, self.engine, info.in_shape, self.device)
        self.scoring = ScoreBatches(
            self.data.train, model=self.model, samples_per_class=getattr(self.method.params, "score_samples_per_class", 0),
            num_classes=info.num_classes, seed=cfg.seed, flop_model=self.flop_model,
            loss_fn=self.loss_fn, autocast=self.autocast, prepare=self._inputs)
        self.train_model = distributed.wrap(self.model, self.device)  # DDP with several ranks
        self.check_masks = distributed.check_masks_enabled()
        self.devices = distributed.devices(self.device)  # every rank's (a collective: not in result())
        self.progress = Progress()

    def reset_optimizer(self) -> None:
        """A fresh optimizer and learning-rate schedule (at the start and of every round)."""
        self.optimizer = build_optimizer(
            self.cfg.optim, self.model, self.method.regularized_parameters(self.cfg.optim.weight_decay))
        self.engine.attach_optimizer(self.optimizer)
        self.scheduler = build_scheduler(self.cfg.optim, self.optimizer, self.steps_per_epoch,
                                         self.total_steps)

    # ---- pieces of the loop ------------------------------------------------------------------
    def autocast(self):
        if self.cuda and self.cfg.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

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
        self.log(f"initial masks: global density {self.engine.global_density():.5f}, per layer "
                 + ", ".join(f"{n}={d:.4f}" for n, d in self.engine.layer_densities().items()))

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        count = 0
        for x, y in self.data.test:
            with self.autocast():
                out = self.model(self._inputs(x))
            loss_sum += nn.functional.cross_entropy(out.float(), y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
            count += y.numel()
        self.model.train()
        loss_sum, correct, count = distributed.sum_counts(loss_sum, correct, count)  # sharded evaluation
        return float(loss_sum) / count, 100.0 * float(correct) / count

    def _timed(self, hook, ctx) -> None:
        t0 = time.perf_counter()
        hook(ctx)
        self.progress.update_s += time.perf_counter() - t0

    def train_epoch(self, epoch: int, bar) -> dict:
        """One epoch of training; returns its row (train loss and accuracy, epoch time)."""
        steps = self.epoch_steps(epoch)
        while True:
            try:
                next(steps)
            except StopIteration as end:
                return end.value
            if bar is not None:
                bar.update(1)

    def epoch_steps(self, epoch: int):
        """The epoch as a generator: it yields after every step and returns the epoch's row.
        A step's time runs from the generator's resumption to its next yield (so whatever the
        caller does in between is not counted): the benchmarks interleave several trainers
        step by step this way, so that a noisy machine slows all of them alike."""
        model, opt, sched, method, engine = (self.train_model, self.optimizer, self.scheduler,
                                             self.method, self.engine)
        model.train()
        round_, round_start = self.progress.round, self.progress.round * self.total_steps
        self.data.train.set_epoch(round_ * self.cfg.epochs + epoch)  # each round its own order
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        ctx = methods.StepContext(step=self.progress.step - round_start, epoch=epoch,
                                  total_steps=self.total_steps,
                                  steps_per_epoch=self.steps_per_epoch, model=model, round=round_,
                                  scoring=self.scoring)
        times = []  # per step, from the end of the previous one: fetching the batch included
        t_epoch = t_last = time.perf_counter()
        for i, (x, y) in enumerate(self.data.train):
            x = self._inputs(x)
            ctx.step = self.progress.step - round_start
            out, loss = training_step(model, self.loss_fn, opt, engine, method, ctx, x, y,
                                      scheduler=sched, autocast=self.autocast,
                                      call_hook=self._timed)
            batch = y.numel() * self.world.size  # FLOPs and examples of the global batch
            self.progress.train_flops += (method.step_flops(ctx, self.flop_model) * batch
                                          + self.scoring.take_flops())
            self.progress.examples_seen += batch
            loss_sum += loss.detach().float() * y.numel()
            correct += (out.detach().argmax(1) == y).sum()
            seen += y.numel()
            if self.check_masks:
                distributed.check_masks(engine, self.progress.step)
            self.progress.step += 1
            if (i + 1) % DIVERGENCE_CHECK_EVERY == 0 and distributed.any_rank(~torch.isfinite(loss_sum)):
                raise Diverged(f"non-finite training loss at step {self.progress.step}")
            t_yield = time.perf_counter()
            times.append(t_yield - t_last)
            yield
            t_last = time.perf_counter()
            t_epoch += t_last - t_yield  # the caller's time is not the epoch's
        ctx.batch = ctx.loss = None
        self._timed(method.end_of_epoch, ctx)
        if self.cuda:
            torch.cuda.synchronize()
        epoch_time = time.perf_counter() - t_epoch
        if distributed.any_rank(~torch.isfinite(loss_sum)):
            raise Diverged(f"non-finite training loss in epoch {epoch + 1}")
        loss_sum, correct, seen = distributed.sum_counts(loss_sum, correct, seen)
        self.progress.step_times.extend(times)
        return {"train_loss": float(loss_sum) / seen, "train_acc": 100.0 * float(correct) / seen,
                "epoch_time_s": epoch_time}

    # ---- checkpoint --------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / paths.CHECKPOINT

    def checkpoint_state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "engine": self.engine.state_dict(),
            "method": self.method.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if self.cuda else None,
            "progress": self.progress.__dict__,
        }

    def apply_checkpoint(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.engine.load_state_dict(state["engine"])
        self.method.load_state_dict(state["method"])
        torch.set_rng_state(state["rng_cpu"].cpu())
        if self.cuda and state["rng_cuda"] is not None:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
        self.progress = Progress(**state["progress"])

    def save_checkpoint(self) -> None:
        if not self.world.is_main:  # every rank holds the same state; all resume from this file
            return
        checkpoints.save(self.checkpoint_path, self.checkpoint_state())

    def load_checkpoint(self) -> bool:
        """Resume from the newest good checkpoint generation (see sparsebench.checkpoints)."""
        if not checkpoints.load(self.checkpoint_path, self.checkpoint_state, self.apply_checkpoint,
                                map_location=self.device, log=self.log):
            return False
        self.log(f"resumed from checkpoint after epoch {self.progress.epoch}")
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
        p.round, p.epoch, p.best_test_acc = p.round + 1, 0, -math.inf
        self._timed(lambda _: self.method.start_round(p.round, self.model), None)
        self.engine.apply_masks()
        self.reset_optimizer()
        p.elapsed_s += time.perf_counter() - t0
        self.log(f"round {p.round + 1}/{self.rounds}: density {self.engine.global_density():.5f}")

    def evaluate_epoch(self, row: dict) -> dict:
        """The epoch's test evaluation: completes and keeps the row ``train_epoch`` returned."""
        cfg, p = self.cfg, self.progress
        test_loss, test_acc = self.evaluate()
        p.epoch += 1
        p.best_test_acc = max(p.best_test_acc, test_acc)
        row = {"epoch": p.round * cfg.epochs + p.epoch, "round": p.round,
               "round_epoch": p.epoch, "step": p.step, **row, "test_loss": test_loss,
               "test_acc": test_acc, "lr": self.optimizer.param_groups[0]["lr"],
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
        cfg, p = self.cfg, self.progress
        bar = tqdm(total=self.total_steps * self.rounds, initial=p.step,
                   desc=f"{cfg.method.name} d={cfg.density:g}", unit="step",
                   disable=not cfg.progress or not self.world.is_main, leave=False,
                   dynamic_ncols=True)
        epochs_this_session = 0
        try:
            while p.epoch < cfg.epochs or p.round + 1 < self.rounds:
                if p.epoch == cfg.epochs:  # a round is done (checkpointed); the next starts here
                    self.start_next_round()
                if stop_after_epochs is not None and epochs_this_session >= stop_after_epochs:
                    return "interrupted"
                t0 = time.perf_counter()
                row = self.evaluate_epoch(self.train_epoch(p.epoch, bar))
                p.elapsed_s += time.perf_counter() - t0
                epochs_this_session += 1
                self.record_epoch(row)
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row['test_acc']:.2f}")
        finally:
            bar.close()
        return "completed"

    def result(self, status: str, error: str | None, started_at: str) -> dict:
        cfg, p = self.cfg, self.progress
        last = p.history[-1] if p.history else {}
        return {
            **result_header(cfg, status, error, started_at),
            "actual_density": self.engine.global_density(),
            "layer_densities": self.engine.layer_densities(),
            "layer_sizes": {layer.name: layer.numel for layer in self.engine.layers},
            "epochs_completed": p.round * cfg.epochs + p.epoch,
            "rounds": self.rounds,
            "round_final_test_acc": [r["final_test_acc"] for r in p.rounds],
            "round_results": p.rounds,
            "final_test_acc": last.get("test_acc"),
            "best_test_acc": p.best_test_acc if p.history else None,
            "final_train_loss": last.get("train_loss"),
            "wall_clock_s": p.elapsed_s,
            "step_time_ms": 1000 * statistics.median(p.step_times) if p.step_times else None,
            "step_time_quantiles_ms": step_time_quantiles(p.step_times),
            "update_time_s": p.update_s,
            "steps": p.step,
            "device": str(self.device),
            "mask_sha256": distributed.mask_digest(self.engine),  # the final topology
            "world_size": self.world.size,
            "devices": self.devices,
        }


STEP_TIME_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def step_time_quantiles(times: list[float]) -> dict[str, float] | None:
    """``{"p10": ms, "p25": ms, ...}`` of the per-step wall-clock: on a shared machine, other
    work only ever slows a step down, so the low quantiles say what a step costs and the
    spread between them how noisy the machine was."""
    if len(times) < 2:
        return None
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return {f"p{round(100 * q)}": 1000 * cuts[round(100 * q) - 1] for q in STEP_TIME_QUANTILES}


def result_header(cfg: RunConfig, status: str, error: str | None, started_at: str) -> dict:
    """The keys of result.json that are known without training (also for failed runs)."""
    return {
        "run_id": run_id(cfg), "sweep": cfg.sweep, "status": status, "error": error,
        "method": cfg.method.name, "method_params": dict(cfg.method.params),
        "model": cfg.model.name, "width": cfg.model.width, "dataset": cfg.data.name,
        "protocol": cfg.protocol, "init": cfg.sparsity.init,
        "density": cfg.density, "distribution": cfg.sparsity.distribution,
        "engine": cfg.sparsity.engine, "seed": cfg.seed, "epochs": cfg.epochs,
        "config": to_dict(cfg), "git_sha": git_sha(), "torch_version": torch.__version__,
        "python_version": platform.python_version(), "hostname": platform.node(),
        "started_at": started_at, "finished_at": now_iso(),
        # Filled from the trainer's FLOP accounting for runs that trained (sparsebench.flops).
        "train_flops": None, "train_flops_rel_dense": None,
        "inference_flops": None, "inference_flops_rel_dense": None,
    }


def run_folder(cfg: RunConfig) -> Path:
    return paths.run_dir(cfg.sweep, run_id(cfg))


def train(cfg: RunConfig, *, stop_after_epochs: int | None = None, force: bool = False) -> dict:
    """Run one config to completion (resuming if a checkpoint exists) and write its results.

    Returns the result dict. A completed run is not repeated unless ``force``. A run that
    raises is recorded with status ``failed`` and its error, then the error propagates.
    One process trains a run at a time: a second raises :class:`sparsebench.locks.Busy`
    without touching the run's files.
    Launched as one rank of several (torchrun, SLURM tasks), it joins the run's process group
    and trains data-parallel; rank 0 alone writes (see sparsebench.distributed).
    """
    world = distributed.setup(resolve_device(cfg.device).type)
    distributed.validate(cfg, world.size)
    run_dir = run_folder(cfg)
    with run_lock(cfg, run_dir, world):
        return _train_locked(cfg, run_dir, world, stop_after_epochs, force)


def run_lock(cfg: RunConfig, run_dir: Path, world):
    """The run's one-writer lock (sparsebench.locks). Of a data-parallel run only rank 0 takes
    it: the other ranks of the same run are not a second writer."""
    if not world.is_main:
        return contextlib.nullcontext()
    log = RunLog(run_dir / paths.LOG)
    return locks.hold(
        run_dir / paths.RUN_LOCK,
        lambda holder: f"run {run_id(cfg)} of sweep {cfg.sweep} is being trained by {holder} "
                       f"(lock {run_dir / paths.RUN_LOCK}); wait for it to end or stop it first",
        on_takeover=lambda previous: log(f"took over the lock of a process that is gone "
                                         f"({previous})"))


def _train_locked(cfg: RunConfig, run_dir: Path, world, stop_after_epochs: int | None,
                  force: bool) -> dict:
    result_path = run_dir / paths.RESULT
    existing = atomic.read_json(result_path)
    if existing and existing.get("status") == "completed" and not force:
        return existing
    write = world.is_main
    started_at = now_iso()
    trainer = None
    try:
        if write:
            atomic.write_yaml(run_dir / paths.CONFIG, to_dict(cfg))
        # Again here for jobs whose launcher could not see the data (sweep --skip-data-check).
        preflight.check(cfg)
        trainer = Trainer(cfg, run_dir)
        status = trainer.run(stop_after_epochs)
        if status == "interrupted":
            return {"status": "interrupted", "run_id": run_id(cfg)}
        result = trainer.result("completed", None, started_at)
        _add_measurements(result, trainer)
    except Diverged as err:
        result = trainer.result("diverged", str(err), started_at)
        _add_measurements(result, trainer)
        if write:
            RunLog(run_dir / paths.LOG)(f"diverged: {err}")
    except Exception as err:
        # Best effort: on a full or read-only disk these writes fail too, and the error that
        # propagates must stay the first one.
        error = (str(err) if isinstance(err, (atomic.WriteError, ConfigError))
                 else distributed.failure_text(err, _first_line(err)))  # names the rank that failed
        if write:
            with contextlib.suppress(OSError):
                RunLog(run_dir / paths.LOG)(f"failed: {error}\n" + traceback.format_exc())
            result = (trainer.result("failed", error, started_at) if trainer is not None
                      else result_header(cfg, "failed", error, started_at))
            with contextlib.suppress(OSError):
                atomic.write_json(result_path, result)
        raise
    if write:
        atomic.write_json(result_path, result)
        if result["status"] in ("completed", "diverged"):
            checkpoints.remove(trainer.checkpoint_path)
    return result


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _add_measurements(result: dict, trainer: Trainer) -> None:
    from . import flops

    result.update(flops.measure(trainer))
