"""sparsebench: a fair, reproducible benchmark harness for sparse neural-network training.

For your own analysis of a sweep's results (see :mod:`sparsebench.reporting.results`):

- :func:`load_results` -- one row per run: config, status, final accuracies, FLOPs, times;
- :func:`load_metrics` -- one row per run and epoch (``metrics.jsonl``): test accuracy, train
  loss and accuracy after each epoch, with the run's identity columns;
- :func:`load_model` -- a completed run's trained network from its ``final.pt`` (a
  ``FinalModel``: ``.model``, ``.engine``, ``.config``, ``.test_loader()``, ``.evaluate()``);
- :func:`load_test_data` -- a run's own test set, normalized and batched as the run evaluated it.

What each file of a run folder holds: docs/results.md.
"""
__version__ = "0.1.0"
__all__ = ["load_results", "load_metrics", "load_model", "load_test_data"]


def load_results(sweep: str, root=None):
    """All runs of a sweep (or of a list of sweeps, told apart by the ``sweep`` column) as a
    pandas DataFrame, one row per run; see :mod:`sparsebench.reporting.results`."""
    from .reporting.results import load_results as _load

    return _load(sweep, root)


def load_model(run_dir, device="cpu"):
    """A completed run's trained network (weights and masks) from its final.pt; see
    :mod:`sparsebench.training.final`."""
    from .training.final import load_model as _load

    return _load(run_dir, device)


def load_test_data(run_dir, device="cpu"):
    """The test loader of a run (its own test images, normalized and batched as the run
    evaluated them; (x, y) batches); see :mod:`sparsebench.training.final`."""
    from .training.final import load_test_data as _load

    return _load(run_dir, device)


def load_metrics(runs, root=None, statuses=("completed",)):
    """One row per (run, epoch) of a sweep's runs, from their ``metrics.jsonl``, as a pandas
    DataFrame: ``epoch``, ``test_acc``, ``train_loss`` ... beside the run's ``run_id``,
    ``dataset``, ``model``, ``method_label``, ``density`` and ``seed``.

    ``runs`` is a sweep's name or a DataFrame of :func:`load_results` (e.g. filtered to some
    methods); ``statuses`` are the run statuses read (default: completed runs only).
    """
    from .reporting.results import load_metrics as _metrics, load_results as _load

    df = _load(runs, root) if isinstance(runs, str) else runs
    return _metrics(df, statuses)
