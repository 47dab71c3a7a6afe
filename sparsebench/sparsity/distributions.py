"""How a global density is shared among layers: ``uniform``, ``er``, ``er_flat`` and ``erk``.

Erdős–Rényi (Mocanu et al. 2018) gives layer l a density proportional to
(n_in + n_out) / (n_in · n_out). ``er`` is RigL's ``erdos_renyi``: for a conv it counts only the
channels, n_in = C_in, n_out = C_out. ``er_flat`` is the GSE authors' (Heddes et al., their
``layers.get_active_param_scaler``): every weight is viewed as the (out, fan_in) matrix it
multiplies, fan_in = C_in·k_h·k_w, so a conv gets (out + fan_in) / (out · fan_in); on a model
of linear layers only the two coincide. ERK (Evci et al. 2020, "Rigging the Lottery", Sec. 3) adds the
kernel dimensions: (n_in + n_out + k_h + k_w) / (n_in · n_out · k_h · k_w), i.e. sum over product
of the weight's dimensions. One scale ε is solved so that the active parameters add up to the
global budget:

    Σ_l ε · raw_l · N_l = density · Σ_l N_l.

If ε · raw_l > 1 for some layer, that layer cannot hold its share: it is made dense, its
parameters leave the budget, and ε is solved again over the rest (RigL's ``sparse_utils``
loop). The result never has a layer above density 1.

Densities are then turned into whole counts of active weights by largest-remainder rounding,
so that the counts add up exactly to round(density · N).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

DISTRIBUTIONS = ("uniform", "er", "er_flat", "erk")


def _raw_score(shape: Sequence[int], kind: str) -> float:
    if kind == "erk":
        return sum(shape) / math.prod(shape)
    if kind == "er_flat":
        n_out, fan_in = shape[0], math.prod(shape[1:])
        return (n_out + fan_in) / (n_out * fan_in)
    # ER counts only fan-out and fan-in: torch weights are (out, in, *kernel).
    n_out, n_in = shape[0], shape[1] if len(shape) > 1 else 1
    return (n_in + n_out) / (n_in * n_out)


def layer_densities(shapes: Mapping[str, Sequence[int]], density: float, kind: str) -> dict[str, float]:
    """Per-layer densities whose parameter-weighted mean is ``density``; none above 1."""
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {kind!r}")
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    if kind == "uniform" or density == 1:
        return {name: density for name in shapes}
    raw = {name: _raw_score(shape, kind) for name, shape in shapes.items()}
    dense: set[str] = set()
    while True:
        budget = density * sum(sizes.values()) - sum(sizes[n] for n in dense)
        divisor = sum(raw[n] * sizes[n] for n in shapes if n not in dense)
        if divisor == 0:  # every layer dense: only possible when density == 1
            break
        eps = budget / divisor
        too_dense = [n for n in shapes if n not in dense and eps * raw[n] > 1]
        if not too_dense:
            break
        # Make the densest layer(s) dense, then solve again (RigL: the max-probability layers).
        top = max(raw[n] for n in too_dense)
        dense.update(n for n in too_dense if raw[n] == top)
    return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}


def active_counts(shapes: Mapping[str, Sequence[int]], densities: Mapping[str, float],
                  total_density: float | None = None) -> dict[str, int]:
    """Whole numbers of active weights per layer (at least 1) that add up to the global target.

    Largest-remainder rounding: floor every layer's share, then hand the remaining units to
    the layers with the largest fractional parts.
    """
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    exact = {n: densities[n] * sizes[n] for n in shapes}
    target = round(sum(exact.values()) if total_density is None else total_density * sum(sizes.values()))
    counts = {n: min(sizes[n], max(1, math.floor(exact[n]))) for n in shapes}
    remainder = target - sum(counts.values())
    order = sorted(shapes, key=lambda n: exact[n] - math.floor(exact[n]), reverse=True)
    for n in order:
        if remainder <= 0:
            break
        if counts[n] < sizes[n]:
            counts[n] += 1
            remainder -= 1
    return counts
