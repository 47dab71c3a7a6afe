"""The paper's twelve artifacts: what each shows, the runs it needs, and how it is built.

Numbering follows the paper's arXiv version (2401.06898) and its supplementary. The runs of
an artifact are named by :class:`~sparsebench.paper.runs.Source` entries, so an artifact may
reuse another's runs (figure 2's γ = 1 points and its RigL reference are Table 1's CIFAR-100
runs at 98 %; Table 3's 200 epochs too) instead of training them twice.

The CIFAR sweeps ``cifar10_densities`` and ``cifar100_densities`` are the paper's Table 1
sweeps (GSE protocol), with ``paper_table1_baselines`` for the four baselines they do not
run; the other sweeps are ``sweeps/paper_*.yaml``, each extending one of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import fig_accuracy, fig_curves, fig_layers, tables
from .runs import Source

C10, C100 = "cifar10_densities", "cifar100_densities"
BASELINES = "paper_table1_baselines"  # Lottery, GraSP, SynFlow, Top-KAST on both data sets
SPARSEST = 0.02   # the paper's 98 %
GSE_UNIFORM = dict(method__name="gse", method__sampler="uniform")


@dataclass(frozen=True)
class Artifact:
    id: str
    kind: str                  # "table", "figure", "flops" (fig4), "kernels" (fig8)
    title: str
    sources: tuple[Source, ...] = ()
    build: Callable | None = None   # (Evidence or completed rows, context) -> Table | Drawn

    @property
    def sweeps(self) -> list[str]:
        return list(dict.fromkeys(s.sweep for s in self.sources))


ARTIFACTS: tuple[Artifact, ...] = (
    Artifact("table1", "table", "Final test accuracy of every method on CIFAR-10/100, three "
             "models, 90 / 95 / 98 % sparsity",
             (Source.of(C10), Source.of(C100), Source.of(BASELINES)), tables.table1),
    Artifact("table2", "table", "ImageNet ResNet-50 top-1 accuracy at 80 / 90 % sparsity, with "
             "published rows",
             (Source.of("paper_table2_imagenet"),), tables.table2),
    Artifact("fig2", "figure", "Accuracy vs the subset factor γ for each sampler, RigL for "
             "reference (CIFAR-100, 98 %)",
             (Source.of("paper_fig2_gamma"),
              Source.of(C100, "γ = 1", method__name="gse", method__subset_factor=1.0,
                        density=SPARSEST),
              Source.of(C100, "RigL reference", method__name="rigl", density=SPARSEST)),
             fig_accuracy.gamma),
    Artifact("fig3", "figure", "Accuracy vs width at a constant number of active connections "
             "(CIFAR-100, GSE)",
             (Source.of("paper_fig3_width"),
              Source.of(C100, "width ×1", density=SPARSEST, **GSE_UNIFORM)),
             fig_accuracy.width),
    Artifact("fig4", "flops", "Training FLOPs of GSE and RigL vs sparsity, ResNet-50 / "
             "ImageNet, ΔT = 1000 (FLOP model, no training)"),
    Artifact("fig5", "figure", "Uniform vs Erdős–Rényi layer-wise sparsity for SET, RigL and "
             "GSE (CIFAR-10/100, 98 %)",
             (Source.of("paper_fig5_uniform"),
              Source.of(C10, "Erdős–Rényi runs of Table 1", density=SPARSEST,
                        method__name=["set", "rigl"]),
              Source.of(C10, "Erdős–Rényi runs of Table 1", density=SPARSEST, **GSE_UNIFORM),
              Source.of(C100, "Erdős–Rényi runs of Table 1", density=SPARSEST,
                        method__name=["set", "rigl"]),
              Source.of(C100, "Erdős–Rényi runs of Table 1", density=SPARSEST, **GSE_UNIFORM)),
             fig_accuracy.distribution),
    Artifact("fig6", "figure", "Test accuracy per epoch at 98 % for every method",
             (Source.of(C10, density=[SPARSEST, 1.0]), Source.of(C100, density=[SPARSEST, 1.0]),
              Source.of(BASELINES, density=SPARSEST)),
             fig_curves.per_method),
    Artifact("table3", "table", "Extended training: GSE at 98 % on CIFAR-100 for 200 / 300 / "
             "400 epochs",
             (Source.of(C100, "200 epochs", density=SPARSEST, **GSE_UNIFORM),
              Source.of("paper_table3_epochs")), tables.table3),
    Artifact("fig7", "figure", "Train and test accuracy per epoch for each width of figure 3",
             (Source.of("paper_fig3_width"),
              Source.of(C100, "width ×1", density=SPARSEST, **GSE_UNIFORM)),
             fig_curves.per_width),
    Artifact("table4", "table", "Dense ViT at width 1–4× on CIFAR-100",
             (Source.of("paper_table4_dense_vit"),), tables.table4),
    Artifact("fig8", "kernels", "Sparse × dense matrix-multiplication time: dense, COO and CSR "
             "weights, n = 2048 … 16384, batch 128, 80 % … 99.9 % sparsity"),
    Artifact("fig9", "figure", "Sparsity of each layer at the end of training, per method, "
             "averaged over CIFAR-10/100",
             (Source.of(C10), Source.of(C100), Source.of(BASELINES)), fig_layers.layer_density),
)

BY_ID = {a.id: a for a in ARTIFACTS}


def paper_sweeps() -> list[str]:
    """Every sweep the paper needs, in the order of first use (what ``make paper`` runs)."""
    return list(dict.fromkeys(s for a in ARTIFACTS for s in a.sweeps))
