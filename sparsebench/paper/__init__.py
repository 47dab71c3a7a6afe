"""The GSE paper (Heddes et al., arXiv 2401.06898), every table and figure from one command.

    python -m sparsebench.report --paper          results/paper/ from the paper's sweeps
    python -m sparsebench.paper.mini               the same pipeline in miniature on a CPU
                                                   (results/paper_mini/, ``make paper-mini``)

Modules, one per kind of artifact:

  artifacts.py     the twelve artifacts: what each shows and the sweeps (and cells) it needs
  runs.py          needed runs vs landed runs: completed / failed / running / missing
  published.py     the paper's own numbers (``published.csv``) and ours-minus-theirs
  names.py         the paper's names for methods, data sets and models
  tables.py        tables 1–4 in the paper's layout
  fig_accuracy.py  accuracy vs γ (fig2), vs width (fig3), uniform vs ER (fig5)
  fig_curves.py    accuracy per epoch: every method (fig6), every width (fig7)
  fig_layers.py    per-layer density at the end of training (fig9)
  flops_model.py   training FLOPs of GSE and RigL vs sparsity, no training (fig4)
  kernels.py       sparse × dense matmul times (fig8), measured by kernel_bench.py
  report.py        writes the artifacts and index.md
  mini.py          trains the miniature sweeps and writes their report
  mini_spec.py     sweeps/mini/*.yaml parsed; a full sweep turned cell by cell into its miniature
  fashion_cifar.py Fashion-MNIST in the CIFAR file format: the miniature's data (not CIFAR)
  width.py         densities that keep the active connections constant across widths (fig3)

On top, beside the commands: may import launch (the sweeps it derives and runs), reporting,
storage, config, data, models, sparsity and flops; nothing but the commands imports it.
"""
