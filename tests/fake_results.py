"""Tiny result trees with known numbers, written the way the trainer writes them.

``result.json`` starts from the trainer's own ``result_header`` (so its keys stay those of a real
run) and ``config.yaml`` is the resolved config's ``to_dict``; the measured numbers are the
caller's. Used by the report and notebook tests.
"""
from __future__ import annotations

import fcntl
from pathlib import Path

from sparsebench.storage import atomic, paths
from sparsebench.config.schema import from_dict, run_id, to_dict
from sparsebench.training import result_header

MLP_LAYERS = {"net.1": 784 * 300, "net.3": 300 * 100, "net.5": 100 * 10}
_HELD = []  # the run locks this process holds for its "running" runs, as a live trainer would


def hold_run_lock(run: Path) -> None:
    """Hold ``run``'s train.lock from this process for the rest of the session (a live trainer)."""
    f = open(run / paths.RUN_LOCK, "a+")
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    f.write("pid 4242 on node7 since 2026-01-01T00:00:00+00:00\n")
    f.flush()
    _HELD.append(f)


def config_for(sweep: str, method: str, density: float, seed: int, *, sampler: str | None = None,
               width: float = 1.0, epochs: int = 3, **method_params):
    params = dict(method_params)
    if sampler is not None:
        params["sampler"] = sampler
    return from_dict({"sweep": sweep, "method": {"name": method, **params},
                      "density": 1.0 if method == "dense" else density, "seed": seed,
                      "epochs": epochs, "model": {"name": "mlp", "width": width}})


def write_run(root: Path, sweep: str, method: str, density: float, seed: int, *,
              acc: float | None = None, status: str = "completed", curve: list[float] | None = None,
              layer_densities: dict[str, float] | None = None, wall_clock_s: float = 10.0,
              step_time_ms: float = 2.0, update_time_s: float = 0.1,
              train_flops_rel_dense: float | None = None, mask_updates: int | None = None,
              dynamic: bool | None = None, **config_kw) -> Path:
    """One run folder (``mask_updates``/``dynamic`` left out of result.json where None, as in
    results written before runs recorded them). ``status="running"`` writes config.yaml (and metrics so far) only and
    holds the run's lock as its trainer would; ``status="stopped"`` is the same without the lock
    (a trainer that was killed)."""
    cfg = config_for(sweep, method, density, seed, **config_kw)
    return write_config_run(root, cfg, acc=acc, status=status, curve=curve,
                            layer_densities=layer_densities, wall_clock_s=wall_clock_s,
                            step_time_ms=step_time_ms, update_time_s=update_time_s,
                            train_flops_rel_dense=train_flops_rel_dense,
                            mask_updates=mask_updates, dynamic=dynamic)


def write_config_run(root: Path, cfg, *, acc: float | None = None, status: str = "completed",
                     curve: list[float] | None = None,
                     layer_densities: dict[str, float] | None = None, wall_clock_s: float = 10.0,
                     step_time_ms: float = 2.0, update_time_s: float = 0.1,
                     train_flops_rel_dense: float | None = None, mask_updates: int | None = None,
                     dynamic: bool | None = None) -> Path:
    """The run folder of a given (e.g. a sweep cell's resolved) config, as :func:`write_run`."""
    run = paths.run_dir(cfg.sweep, run_id(cfg), root)
    atomic.write_yaml(run / paths.CONFIG, to_dict(cfg))
    if curve:
        atomic.write_jsonl(run / paths.METRICS, [
            {"epoch": i + 1, "step": 10 * (i + 1), "test_acc": a, "train_acc": a + 5.0,
             "train_loss": 1.0 / (i + 1)}
            for i, a in enumerate(curve)])
    if status == "running":
        hold_run_lock(run)
    if status in ("running", "stopped"):
        return run
    result = result_header(cfg, status, None if status == "completed" else "boom", "t0")
    densities = layer_densities or {name: cfg.density for name in MLP_LAYERS}
    rel = cfg.density if train_flops_rel_dense is None else train_flops_rel_dense
    dense_forward = 2.0 * sum(MLP_LAYERS.values())
    result.update({
        "actual_density": cfg.density, "layer_densities": densities, "layer_sizes": MLP_LAYERS,
        "epochs_completed": len(curve or []) if status != "completed" else cfg.epochs,
        "final_test_acc": acc if status != "failed" else None,
        "best_test_acc": acc if status != "failed" else None, "final_train_loss": 0.5,
        "wall_clock_s": wall_clock_s, "step_time_ms": step_time_ms,
        "update_time_s": update_time_s, "steps": 100, "device": "cpu",
        "train_flops": rel * 3 * dense_forward * 1000, "train_flops_rel_dense": rel,
        "inference_flops": cfg.density * dense_forward, "inference_flops_rel_dense": cfg.density,
        "dense_forward_flops": dense_forward,
    })
    for key, value in (("mask_updates", mask_updates), ("dynamic", dynamic)):
        if value is None:   # left out, as a run written before issue 32 (the header has them)
            result.pop(key, None)
        else:
            result[key] = value
    atomic.write_json(run / paths.RESULT, result)
    return run
