"""A sweep file's ``slurm:`` block: how each of its runs is submitted, validated like a config.

Every field maps onto one of submitit's SLURM parameters (:meth:`SlurmSpec.submitit_parameters`);
``additional`` passes further sbatch options, except those a field already sets. The named
fields cover what clusters commonly require (account, qos, constraint, exclude, nodelist,
reservation, gres, mail, comment, exclusive); each value is one word, so a sweep file cannot
slip a second option into an ``#SBATCH`` line.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from ..config.schema import ConfigError, checked, non_negative, parse_dataclass, positive
from ..config.files import set_dotted

# sbatch options that a dedicated SlurmSpec field (or submitit itself) sets; giving them again
# under `additional` would silently override one of the two.
_RESERVED_SBATCH = {"job-name", "partition", "time", "cpus-per-task", "gpus-per-node", "mem",
                    "array", "signal", "output", "error", "open-mode", "nodes", "ntasks-per-node",
                    "account", "qos", "constraint", "exclude", "nodelist", "reservation", "gres",
                    "mail-user", "mail-type", "comment", "exclusive"}
# --mail-type values (sbatch(1)); several may be given, comma-separated.
MAIL_TYPES = ("NONE", "BEGIN", "END", "FAIL", "REQUEUE", "ALL", "INVALID_DEPEND", "STAGE_OUT",
              "TIME_LIMIT", "TIME_LIMIT_90", "TIME_LIMIT_80", "TIME_LIMIT_50", "ARRAY_TASKS")
# One sbatch value: no spaces, quotes or line breaks (each becomes one #SBATCH line).
_SBATCH_WORD = re.compile(r"[A-Za-z0-9_.,:=+@%/|&*!()\[\]-]+")


def _sbatch_options_ok(options: dict) -> bool:
    return all(isinstance(k, str) and k and isinstance(v, (str, int, float, bool))
               and k.replace("_", "-") not in _RESERVED_SBATCH for k, v in options.items())


def _word_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and _SBATCH_WORD.fullmatch(value) is not None)


def sbatch_word(help: str, example: str) -> Any:
    """An optional sbatch value of one word (None: the option is not given)."""
    return checked(None, _word_or_none, f"null or one word without spaces or quotes, e.g. "
                                        f"{example}", help)


def _mail_types_ok(value: Any) -> bool:
    return value is None or (isinstance(value, str)
                             and all(t in MAIL_TYPES for t in value.upper().split(",")))


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
                                       "delivers it up to 60 s early); the run trains on and "
                                       "requeues at its last epoch boundary before the limit "
                                       "(sparsebench.launch.requeue)")
    max_timeouts: int = non_negative(10, "time-limit requeues of one run before it gives up")
    runs_per_task: int = positive(1, "runs that share one array task (and its GPU), each in "
                                     "its own process with its own folder, lock, checkpoint and "
                                     "requeue; the array has ceil(runs / runs_per_task) tasks")
    # What clusters commonly ask for, by name (sbatch(1)); None leaves the option out.
    account: str | None = sbatch_word("the account charged (--account)", "myproject")
    qos: str | None = sbatch_word("quality of service (--qos)", "normal")
    constraint: str | None = sbatch_word("node features required (--constraint)", "a100|h100")
    exclude: str | None = sbatch_word("nodes never to use (--exclude)", "node[01-03]")
    nodelist: str | None = sbatch_word("nodes to use (--nodelist)", "node07")
    reservation: str | None = sbatch_word("the reservation to run in (--reservation)", "mytalk")
    gres: str | None = sbatch_word("generic resources (--gres), for clusters that count GPUs "
                                   "as GRES instead of gpus_per_node", "gpu:a100:1")
    mail_user: str | None = sbatch_word("who is mailed (--mail-user)", "me@example.org")
    mail_type: str | None = checked(None, _mail_types_ok,
                                    f"null or comma-separated from {', '.join(MAIL_TYPES)}",
                                    "when mail is sent (--mail-type)")
    comment: str | None = sbatch_word("a note shown by squeue/sacct (--comment)", "paper-rerun")
    exclusive: bool = field(default=False, metadata={
        "help": "whole nodes only, shared with no other job (--exclusive)"})
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
        if self.runs_per_task > 1 and self.world_size > 1:
            raise ConfigError("slurm.runs_per_task",
                              f"got {self.runs_per_task}; allowed: 1 for data-parallel runs "
                              f"(nodes x tasks_per_node = {self.world_size})")

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
        for name in ("account", "qos", "constraint", "exclude", "nodelist", "gres", "mail_user",
                     "comment"):
            if getattr(self, name) is not None:
                params[f"slurm_{name}"] = getattr(self, name)
        if self.mail_type is not None:
            params["slurm_mail_type"] = self.mail_type.upper()
        if self.reservation is not None:  # no submitit parameter of its own
            params["slurm_additional_parameters"]["reservation"] = self.reservation
        if self.exclusive:
            params["slurm_exclusive"] = True
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
