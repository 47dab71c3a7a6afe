"""A sweep file's ``slurm:`` block: how each of its runs is submitted, validated like a config.

Every field maps onto one of submitit's SLURM parameters (:meth:`SlurmSpec.submitit_parameters`);
``additional`` passes further sbatch options, except those a field already sets.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..config.schema import ConfigError, checked, non_negative, parse_dataclass, positive
from ..config.files import set_dotted

# sbatch options that a dedicated SlurmSpec field (or submitit itself) sets; giving them again
# under `additional` would silently override one of the two.
_RESERVED_SBATCH = {"job-name", "partition", "time", "cpus-per-task", "gpus-per-node", "mem",
                    "array", "signal", "output", "error", "open-mode", "nodes", "ntasks-per-node"}


def _sbatch_options_ok(options: dict) -> bool:
    return all(isinstance(k, str) and k and isinstance(v, (str, int, float, bool))
               and k.replace("_", "-") not in _RESERVED_SBATCH for k, v in options.items())


@dataclass
class SlurmSpec:
    """The sweep's ``slurm:`` block, mapped onto submitit's SLURM parameters (one per run)."""

    partition: str | None = field(default=None, metadata={"help": "None: the cluster's default"})
    time_min: int = positive(60, "time limit of one run in minutes (--time); a longer run is "
                                 "checkpointed, requeued and resumed")
    cpus_per_task: int = positive(1, "CPU cores per task (per run with one task); also its "
                                     "torch threads")
    gpus_per_node: int = non_negative(0, "GPUs per node of one run")
    nodes: int = positive(1, "nodes per run (--nodes)")
    tasks_per_node: int = positive(1, "processes per node of one run (--ntasks-per-node), one "
                                      "per GPU: with nodes x tasks_per_node > 1 the run is "
                                      "data-parallel (sparsebench.distributed)")
    mem_gb: float = positive(4, "memory per run in GB (--mem)")
    array_parallelism: int = positive(16, "most runs of the array job at once (--array=...%N)")
    signal_delay_s: int = positive(90, "USR2 this many seconds before the time limit (SLURM "
                                       "delivers it up to 60 s early); the run then requeues")
    max_timeouts: int = non_negative(10, "time-limit requeues of one run before it gives up")
    setup: list[str] = field(default_factory=list, metadata={
        "help": "shell lines run before each run, e.g. `module load cuda`"})
    additional: dict = checked(dict, _sbatch_options_ok,
                               "a mapping of further sbatch options (e.g. {qos: high}) with "
                               "string, number or boolean values, not the ones set above "
                               f"({', '.join(sorted(_RESERVED_SBATCH))})",
                               "extra sbatch options")

    @property
    def world_size(self) -> int:
        """Ranks of one run."""
        return self.nodes * self.tasks_per_node

    def check(self) -> None:
        """Cross-field checks; raises ConfigError naming the field."""
        if self.gpus_per_node and self.tasks_per_node > self.gpus_per_node:
            raise ConfigError("slurm.tasks_per_node",
                              f"got {self.tasks_per_node}; allowed: at most gpus_per_node "
                              f"({self.gpus_per_node}), one task per GPU")

    def submitit_parameters(self) -> dict:
        """Keyword arguments for ``submitit.AutoExecutor.update_parameters``."""
        params = {
            "timeout_min": self.time_min, "cpus_per_task": self.cpus_per_task,
            "nodes": self.nodes, "tasks_per_node": self.tasks_per_node,
            "mem_gb": self.mem_gb,
            "slurm_array_parallelism": self.array_parallelism,
            "slurm_signal_delay_s": self.signal_delay_s,
            "slurm_additional_parameters": {k.replace("_", "-"): v
                                            for k, v in self.additional.items()},
        }
        if self.gpus_per_node:  # no --gpus-per-node=0: clusters without GPU GRES refuse it
            params["gpus_per_node"] = self.gpus_per_node
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.setup:
            params["slurm_setup"] = list(self.setup)
        return params

    def overridden(self, items: list[tuple[str, Any]]) -> "SlurmSpec":
        """These settings with ``slurm.FIELD=value`` overrides (validated alike)."""
        data = dataclasses.asdict(self)
        for key, value in items:
            if key == "slurm":
                raise ConfigError(key, "name a field, e.g. slurm.partition=gpu")
            set_dotted(data, key[len("slurm."):], value)
        out = parse_dataclass(SlurmSpec, data, "slurm.")
        out.check()
        return out
