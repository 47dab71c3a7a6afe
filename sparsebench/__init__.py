"""sparsebench: a fair, reproducible benchmark harness for sparse neural-network training."""
__version__ = "0.1.0"


def load_results(sweep: str, root=None):
    """All runs of a sweep as a pandas DataFrame (one row per run); see :mod:`sparsebench.results`."""
    from .results import load_results as _load

    return _load(sweep, root)
