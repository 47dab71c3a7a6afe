"""Experiment trackers behind one small interface: TensorBoard, Weights & Biases, MLflow.

A :class:`Sink` takes named scalars at a step (``log``) and is closed at the end of the run.
:func:`open_sinks` opens those a run's ``tracking`` config asks for:

=================  =========================================================================
TensorBoard        on by default: event files in the run folder (``tensorboard --logdir
                   results/SWEEP/runs`` shows every run of a sweep), through
                   ``torch.utils.tensorboard.SummaryWriter``
Weights & Biases   ``tracking.wandb.project`` set: one W&B run per run (id = run_id, so a
                   resumed run continues it); ``mode: offline`` writes under ``RUN/wandb/``
MLflow             ``tracking.mlflow.tracking_uri`` set: a URI, or a folder for a file store
=================  =========================================================================

W&B and MLflow are optional packages (``pip install sparsebench[tracking]``); asking for one
that is not installed is a one-line configuration error before training starts.
Scalars are grouped by a prefix (``train/loss``, ``epoch/test_acc``, ``density/LAYER``,
``topology/itop_rate``), which TensorBoard and W&B show as sections.
"""
from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Mapping, Protocol

from ..config.schema import ConfigError, RunConfig, run_id, to_dict


class Sink(Protocol):
    def log(self, scalars: Mapping[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class TensorBoardSink:
    def __init__(self, run_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run drops the events it logged after its checkpoint.
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, global_step=step)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, cfg: RunConfig, run_dir: Path):
        import wandb

        w = cfg.tracking.wandb
        self.run = wandb.init(project=w.project, entity=w.entity, mode=w.mode, dir=str(run_dir),
                              id=run_id(cfg), name=f"{cfg.method.name}-d{cfg.density:g}-s{cfg.seed}",
                              group=cfg.sweep, config=to_dict(cfg), resume="allow",
                              reinit="create_new")

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        self.run.log(dict(scalars), step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowSink:
    def __init__(self, cfg: RunConfig, run_dir: Path):
        from mlflow.tracking import MlflowClient

        m = cfg.tracking.mlflow
        uri = m.tracking_uri
        if "://" not in uri and not uri.startswith(("file:", "databricks", "sqlite:")):
            uri = Path(uri).resolve().as_uri()  # a folder: a file store
        if uri.startswith("file:"):
            # MLflow 3 keeps the file store in maintenance mode behind this switch; a folder in
            # the config is the user's explicit choice of it.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(m.experiment)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self.client.create_experiment(m.experiment))
        rid = run_id(cfg)
        found = self.client.search_runs([experiment_id], f"tags.sparsebench_run_id = '{rid}'")
        if found:  # a resumed run continues its MLflow run
            self.run_id = found[0].info.run_id
        else:
            run = self.client.create_run(experiment_id, run_name=rid,
                                         tags={"sparsebench_run_id": rid, "sweep": cfg.sweep})
            self.run_id = run.info.run_id
            from ..config.schema import flat_config

            for key, value in flat_config(cfg).items():
                self.client.log_param(self.run_id, key, str(value)[:500])
        self.status = "RUNNING"

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(name.replace("/", "."), float(value), now, step) for name, value in scalars.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def check_installed(cfg: RunConfig) -> None:
    """A ConfigError (one line, exit 2) when the config asks for a tracker that is missing."""
    wanted = [("tracking.tensorboard", cfg.tracking.tensorboard, "tensorboard"),
              ("tracking.wandb.project", cfg.tracking.wandb.project is not None
               and cfg.tracking.wandb.mode != "disabled", "wandb"),
              ("tracking.mlflow.tracking_uri", cfg.tracking.mlflow.tracking_uri is not None,
               "mlflow")]
    for field, on, package in wanted:
        if on and importlib.util.find_spec(package) is None:
            raise ConfigError(field, f"needs the {package} package, which is not installed "
                                     f"(pip install sparsebench[tracking]); or turn it off")


def open_sinks(cfg: RunConfig, run_dir: Path, resume_step: int | None = None) -> list[Sink]:
    """The sinks ``cfg.tracking`` asks for (see the module's table)."""
    check_installed(cfg)
    t, sinks = cfg.tracking, []
    wanted = [(t.tensorboard, lambda: TensorBoardSink(run_dir, purge_step=resume_step)),
              (t.wandb.project is not None and t.wandb.mode != "disabled",
               lambda: WandbSink(cfg, run_dir)),
              (t.mlflow.tracking_uri is not None, lambda: MlflowSink(cfg, run_dir))]
    try:
        for on, sink in wanted:
            if on:
                sinks.append(sink())
    except BaseException:
        for opened in sinks:  # no W&B run left open when MLflow cannot start
            opened.close()
        raise
    return sinks
