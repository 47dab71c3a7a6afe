"""What a run's ``result.json`` holds (the keys are documented in the README's result schema)."""
from __future__ import annotations

import datetime as dt
import platform
import statistics
import subprocess
from functools import lru_cache
from typing import TYPE_CHECKING

import torch

from .. import distributed, methods
from . import compile as compiling
from ..storage import paths
from ..config.schema import ConfigError, RunConfig, run_id, to_dict

if TYPE_CHECKING:
    from .loop import Trainer

STEP_TIME_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@lru_cache(maxsize=1)
def git_sha() -> str | None:
    if not (paths.repo_root() / ".git").exists():  # an installed wheel: no checkout of its own
        return None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.repo_root(),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def step_time_quantiles(times: list[float]) -> dict[str, float] | None:
    """``{"p10": ms, "p25": ms, ...}`` of the per-step wall-clock: on a shared machine, other
    work only ever slows a step down, so the low quantiles say what a step costs and the
    spread between them how noisy the machine was."""
    if len(times) < 2:
        return None
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return {f"p{round(100 * q)}": 1000 * cuts[round(100 * q) - 1] for q in STEP_TIME_QUANTILES}


def is_dynamic(method_name: str) -> bool | None:
    """The method's ``dynamic`` (its schedule changes the topology while it trains); None
    where the name does not resolve to a method (a run that failed on it)."""
    try:
        return methods.get(method_name).dynamic
    except ConfigError:
        return None


def result_header(cfg: RunConfig, status: str, error: str | None, started_at: str) -> dict:
    """The keys of result.json that are known without training (also for failed runs).

    ``mask_updates`` is 0 here (nothing trained); :func:`run_result` puts the trainer's count:
    the steps (epoch ends, round starts) after which the engine's topology had changed, the
    initial masks not counted (:meth:`sparsebench.training.loop.Trainer.count_mask_update`).
    So 0 for dense, static and pruning at initialization (SNIP, GraSP, SynFlow); one per
    update step of SET, RigL and GSE; one per refresh of Top-KAST's sets (each chooses A and B
    anew; one that keeps them counts too); one per pruning step of gradual magnitude pruning
    after the first step (pruning at t_0 = 0 makes the initial masks; a step whose count
    already holds prunes nothing and does not count); one per round of Lottery after the first
    (its pruning before each retraining round)."""
    return {
        "run_id": run_id(cfg), "sweep": cfg.sweep, "status": status, "error": error,
        "method": cfg.method.name, "method_params": dict(cfg.method.params),
        "dynamic": is_dynamic(cfg.method.name), "mask_updates": 0,
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


def run_result(trainer: "Trainer", status: str, error: str | None, started_at: str) -> dict:
    """result.json of a run that got as far as building its trainer."""
    cfg, p = trainer.cfg, trainer.progress
    last = p.history[-1] if p.history else {}
    return {
        **result_header(cfg, status, error, started_at),
        "actual_density": trainer.engine.global_density(),
        "layer_densities": trainer.engine.layer_densities(),
        "layer_sizes": {layer.name: layer.numel for layer in trainer.engine.layers},
        "epochs_completed": p.round * cfg.epochs + p.epoch,
        "rounds": trainer.rounds,
        "round_final_test_acc": [r["final_test_acc"] for r in p.rounds],
        "round_results": p.rounds,
        "final_test_acc": last.get("test_acc"),
        "best_test_acc": p.best_test_acc if p.history else None,
        # data.validation: best_test_acc is the test accuracy of the epoch best on validation
        "best_selected_on": "validation" if trainer.data.validation is not None else "test",
        "best_val_acc": p.best_val_acc if trainer.data.validation is not None and p.history else None,
        "final_val_acc": last.get("val_acc"),
        "final_train_loss": last.get("train_loss"),
        "wall_clock_s": p.elapsed_s,
        "step_time_ms": 1000 * statistics.median(p.step_times) if p.step_times else None,
        "step_time_quantiles_ms": step_time_quantiles(p.step_times),
        "update_time_s": p.update_s,
        "steps": p.step,
        "mask_updates": p.mask_updates,
        "device": str(trainer.device),
        "precision": trainer.precision.record(),
        **compiling.record(trainer.step_model, trainer.compile),
        "mask_sha256": distributed.mask_digest(trainer.engine),  # the final topology
        "world_size": trainer.world.size,
        "devices": trainer.devices,
    }


def measured_result(trainer: "Trainer", status: str, error: str | None, started_at: str) -> dict:
    """:func:`run_result` with the FLOP keys filled in (a run that trained to an end)."""
    from .. import flops

    result = run_result(trainer, status, error, started_at)
    result.update(flops.measure(trainer))
    return result
