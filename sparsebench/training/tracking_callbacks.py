"""The callbacks that record a run beyond its per-epoch rows (``tracking`` in the config).

:class:`Tracking` writes, in the run folder:

* ``steps.jsonl``: every ``tracking.step_interval`` steps, the mean training loss and accuracy
  over the interval, the learning rate and the mean step time, with the epoch the step is in
  (from 1, as ``metrics.jsonl`` counts; :func:`sparsebench.storage.run_files.read_steps` also
  reads the files of older versions, which counted from 0). Loss and correct counts add up
  on the device and are read once per interval (one synchronization per interval, none per
  step);
* ``topology.jsonl``: at every change of the topology, per layer and over all layers, the
  connections pruned and grown, the survival of the previous change's grown connections and the
  in-time over-parameterization rate (:mod:`.topology`);

and sends the same scalars, the epoch rows and the per-layer densities to the trackers
(:mod:`sparsebench.training.tracking`: TensorBoard by default, W&B, MLflow). Rank 0 alone tracks.
A resumed run first drops the rows it wrote after its checkpoint.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..storage import atomic, paths
from ..config.schema import RunConfig
from ..storage.run_files import read_metrics
from .tracking import open_sinks
from .callbacks import Callback, StepEnd
from .topology import TopologyTracker

if TYPE_CHECKING:
    from .loop import Trainer

EPOCH_SCALARS = ("train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc", "lr",
                 "density", "epoch_time_s")


class Tracking(Callback):
    def __init__(self, cfg: RunConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, run_dir
        self.interval = cfg.tracking.step_interval
        self.sinks: list = []
        self.topology: TopologyTracker | None = None
        self.restored: dict | None = None  # the topology tracker's state from the checkpoint
        self.topology_step: int | None = None  # the step of the last topology observation

    # ---- moments -----------------------------------------------------------------------------
    def on_run_start(self, trainer: "Trainer") -> None:
        resumed = trainer.progress.step
        for name in (paths.STEPS, paths.TOPOLOGY):
            _drop_rows_after(self.run_dir / name, resumed)
        # TensorBoard drops the events from the step after the checkpoint's on (redone now).
        self.sinks = open_sinks(self.cfg, self.run_dir, resume_step=resumed + 1 if resumed else None)
        self.last_step = resumed
        if self.cfg.tracking.topology:
            self.topology = TopologyTracker(trainer.engine)
            if self.restored is not None and resumed:
                self.topology.load_state_dict(self.restored)
        self._reset(trainer.device)
        if not resumed:
            self._log({f"density/{n}": d for n, d in trainer.engine.layer_densities().items()}, 0)

    def on_step_end(self, trainer: "Trainer", step: StepEnd) -> None:
        self.last_step = step.step
        if self.interval:
            self.loss_sum += step.loss.detach().float()
            self.correct += step.correct
            self.seen += step.batch_size
            self.steps += 1
            if step.step % self.interval == 0:
                self._flush(trainer, step)
        if self.topology is not None and self.topology.changed():
            self._observe_topology(step.step)

    def on_epoch_end(self, trainer: "Trainer", row: dict[str, Any]) -> None:
        if self.topology is not None and self.topology.changed():  # end-of-epoch updates
            self._observe_topology(row["step"])
        scalars = {f"epoch/{k}": row[k] for k in EPOCH_SCALARS if row.get(k) is not None}
        scalars.update({f"density/{n}": d for n, d in trainer.engine.layer_densities().items()})
        if self.topology is not None and self.topology_step != row["step"]:
            # (an update at the epoch's last step logged the rate at this step already)
            scalars["topology/itop_rate"] = self.topology.itop_rate()
        self._log(scalars, row["step"])

    def on_run_end(self, trainer: "Trainer", status: str) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []

    def state_dict(self) -> dict | None:
        if self.topology is None:
            return None
        if self.topology.changed():  # the checkpoint comes before on_epoch_end: the end-of-epoch
            self._observe_topology(self.last_step)  # update is recorded with the state it leaves
        return self.topology.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.restored = state

    # ---- pieces ------------------------------------------------------------------------------
    def _reset(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.seen = self.steps = 0
        self.t0 = time.perf_counter()

    def _flush(self, trainer: "Trainer", step: StepEnd) -> None:
        loss_sum, correct = torch.stack([self.loss_sum, self.correct.float()]).tolist()  # one sync
        # Epochs count from 1 as in metrics.jsonl: the rows of a run's Nth epoch (over all
        # rounds) say epoch N; round_epoch is N within the round.
        row = {"step": step.step, "epoch": step.round * self.cfg.epochs + step.epoch + 1,
               "round": step.round, "round_epoch": step.epoch + 1,
               "train_loss": loss_sum / self.steps,
               "train_acc": 100.0 * correct / self.seen,
               "lr": trainer.optimizer.param_groups[0]["lr"],
               "step_time_ms": 1000.0 * (time.perf_counter() - self.t0) / self.steps}
        atomic.append_text(self.run_dir / paths.STEPS, json.dumps(row, sort_keys=True) + "\n")
        self._log({f"train/{k}": row[k] for k in ("train_loss", "train_acc", "lr", "step_time_ms")
                   if row[k] is not None}, step.step)
        self._reset(trainer.device)

    def _observe_topology(self, step: int) -> None:
        self.topology_step = step
        rows = self.topology.observe(step)
        atomic.append_text(self.run_dir / paths.TOPOLOGY,
                           "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        total = rows[-1]
        scalars = {f"topology/{k}": total[k] for k in ("pruned", "grown", "grown_survival",
                                                      "itop_rate") if total[k] is not None}
        scalars.update({f"itop/{r['layer']}": r["itop_rate"] for r in rows[:-1]})
        self._log(scalars, step)

    def _log(self, scalars: dict, step: int) -> None:
        for sink in self.sinks:
            sink.log(scalars, step)


def _drop_rows_after(path: Path, step: int) -> None:
    """Keep the rows of ``path`` up to ``step`` (a resumed run redoes the steps after it)."""
    if not path.exists():
        return
    rows = read_metrics(path)
    kept = [r for r in rows if r.get("step", 0) <= step]
    if len(kept) != len(rows) or step == 0:
        atomic.write_jsonl(path, kept)


def tracking_callbacks(cfg: RunConfig, run_dir: Path) -> list[Callback]:
    """The callbacks a run's config asks for (all of them on rank 0 only)."""
    t = cfg.tracking
    wanted = (t.tensorboard or t.step_interval or t.topology or t.wandb.project is not None
              or t.mlflow.tracking_uri is not None)
    return [Tracking(cfg, run_dir)] if wanted else []
