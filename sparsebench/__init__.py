"""sparsebench: a fair, reproducible benchmark harness for sparse neural-network training."""
__version__ = "0.1.0"


def load_results(sweep: str, root=None):
    """All runs of a sweep (or of a list of sweeps, told apart by the ``sweep`` column) as a
    pandas DataFrame, one row per run; see :mod:`sparsebench.results`."""
    from .results import load_results as _load

    return _load(sweep, root)


def load_model(run_dir, device="cpu"):
    """A completed run's trained network (weights and masks) from its final.pt; see
    :mod:`sparsebench.training.final`."""
    from .training.final import load_model as _load

    return _load(run_dir, device)
