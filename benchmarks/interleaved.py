"""Interleaved timing: several callables timed in turn, round after round, in one process.

On a shared machine the speed available to one process drifts by whole factors within a
minute; timing one variant after the other then measures the drift as much as the variants.
Here each round calls every variant once, so a ratio taken within a round compares calls made
seconds apart under the same load, and the spread of those per-round ratios says how far the
result can be trusted.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping

import torch


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(runs: Mapping[str, Callable[[], None]], *, rounds: int, budget_s: float,
                     device: torch.device | str = "cpu") -> dict[str, list[float]]:
    """Seconds per call of each run, one list per name, after one warm-up call each; at most
    ``rounds`` rounds, fewer once ``budget_s`` is spent (at least two)."""
    for run in runs.values():
        run()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in runs}
    spent = 0.0
    while len(next(iter(times.values()))) < rounds and (spent < budget_s or
                                                         len(next(iter(times.values()))) < 2):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            sync(device)
            times[name].append(time.perf_counter() - t0)
            spent += times[name][-1]
    return times


def ratio_summary(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """Median, min and max of the per-round ratios numerator / denominator."""
    ratios = [a / b for a, b in zip(numerator, denominator)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
            "rounds": len(ratios)}
