"""Figure 4: training FLOPs of GSE and RigL against sparsity, from the FLOP model (no training).

Per-layer dense forward FLOPs f_l of the model come from ``torch.utils.flop_counter`` on one
example (:func:`sparsebench.flops.forward_flops_by_module`), f_D = Σ_l f_l + the non-prunable
rest. At density d every prunable layer holds d of its weights (uniform: at 1 − 10⁻⁸ no
distribution can do better than spread the few weights evenly), so the sparse forward is
f_S = f_D − Σ_l f_l + d·Σ_l f_l. Per training example, averaged over one update period of ΔT
steps, as in Evci et al. 2020 (App. H; the same accounting as our ``rigl`` and ``gse`` methods'
``step_flops``):

    RigL:  (3·f_S·ΔT + 2·f_S + f_D) / (ΔT + 1)
           an update step computes the dense weight gradient (f_D) instead of the sparse one
    GSE:   (3·f_S·ΔT + 3·f_S + γ·d·Σ_l f_l) / (ΔT + 1)
           an update step adds the gradients of γ·|A_l| sampled candidates per layer, a
           multiply-add per candidate and output position: 2·L_l·γ·d·N_l = γ·d·f_l

(uniform sampler; GraBo and GraEst add (fan_in + fan_out)·L_l per layer for their
distributions, negligible here). Updates are assumed to run for the whole of training, as in
RigL's formula; both methods stop earlier in practice, which moves both curves toward 3·f_S.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..flops import forward_flops_by_module
from ..reporting.plotting import METHOD_COLORS
from .names import MODELS

DELTA_T = 1000


@dataclass(frozen=True)
class LayerFlops:
    """Dense forward FLOPs per example: prunable layers' total and the non-prunable rest."""

    prunable: float
    rest: float

    @property
    def dense(self) -> float:
        return self.prunable + self.rest

    def sparse_forward(self, density: float) -> float:
        return self.rest + density * self.prunable


def count(model_name: str = "resnet50", num_classes: int = 1000,
          in_shape: tuple[int, ...] = (3, 224, 224), width: float = 1.0) -> LayerFlops:
    """f_l summed over the model's Linear/Conv2d layers (every one prunable), and the rest."""
    import torch

    from .. import models
    from ..sparsity.engine import prunable_modules

    model = models.build_model(model_name, num_classes=num_classes, in_shape=in_shape, width=width)
    total, per_module = forward_flops_by_module(model, torch.zeros(1, *in_shape))
    prunable = sum(per_module.get(name, 0.0) for name, _ in prunable_modules(model))
    return LayerFlops(prunable, total - prunable)


def rigl(fl: LayerFlops, density: float, delta_t: int = DELTA_T) -> float:
    f_s = fl.sparse_forward(density)
    return (3 * f_s * delta_t + 2 * f_s + fl.dense) / (delta_t + 1)


def gse(fl: LayerFlops, density: float, delta_t: int = DELTA_T, gamma: float = 1.0) -> float:
    f_s = fl.sparse_forward(density)
    return (3 * f_s * delta_t + 3 * f_s + gamma * density * fl.prunable) / (delta_t + 1)


def sparsities(low: float = 0.5, high_exponent: int = 8, per_decade: int = 8) -> np.ndarray:
    """50 % to 1 − 10^-high_exponent, evenly spaced in log(1 − sparsity)."""
    densities = np.logspace(np.log10(1 - low), -high_exponent,
                            per_decade * (high_exponent - 1) + 3)
    return 1 - densities


def curve(fl: LayerFlops, delta_t: int = DELTA_T, gamma: float = 1.0) -> pd.DataFrame:
    """Training FLOPs per example (and relative to dense training, 3·f_D) at each sparsity."""
    rows = []
    for s in sparsities():
        d = 1 - s
        for method, value in (("RigL", rigl(fl, d, delta_t)), ("GSE", gse(fl, d, delta_t, gamma))):
            rows.append({"sparsity": s, "density": d, "method": method, "train_flops": value,
                         "train_flops_rel_dense": value / (3 * fl.dense)})
    return pd.DataFrame(rows)


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def sparsity_tick(density: float) -> str:
    """0.5 -> "50%", 1e-3 -> "99.9%", 1e-6 -> "1−10⁻⁶" (a percentage would be all nines)."""
    k = -np.log10(density)
    if density >= 1e-4 or abs(k - round(k)) > 1e-6:
        return f"{100 * (1 - density):.6g}%"
    return "1−10" + f"-{int(round(k))}".translate(_SUPERSCRIPT)


def figure(data: pd.DataFrame, model: str = "resnet50", dataset: str = "ImageNet",
           delta_t: int = DELTA_T) -> Figure:
    from matplotlib.ticker import FixedLocator, FuncFormatter

    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    colors = {"RigL": METHOD_COLORS["rigl"], "GSE": METHOD_COLORS["gse (uniform)"]}
    for method in ("RigL", "GSE"):
        rows = data[data["method"] == method]
        ax.plot(rows["density"], rows["train_flops"], label=method, color=colors[method],
                linestyle="--" if method == "RigL" else "-", linewidth=2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.invert_xaxis()  # sparsity grows to the right
    ticks = [0.5, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda d, _: sparsity_tick(d)))
    ax.xaxis.set_minor_locator(FixedLocator([]))
    ax.tick_params(axis="x", labelrotation=30)
    ax.set_xlabel("sparsity (log scale in 1 − sparsity)")
    ax.set_ylabel("training FLOPs per example (log)")
    ax.grid(True, which="major", alpha=0.4)
    ax.legend(title="method")
    ax.set_title(f"Training FLOPs vs sparsity, {MODELS.get(model, model)} / {dataset}, "
                 f"ΔT = {delta_t}", fontsize=10)
    return fig
