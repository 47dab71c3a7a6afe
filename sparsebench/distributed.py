"""Data-parallel runs: every rank and collective concern of one run on several processes.

One run may train on N processes (ranks) with PyTorch's own engine, ``torch.distributed`` and
``DistributedDataParallel`` (NCCL on CUDA, gloo on the CPU). The launch gives the ranks:

* ``torchrun --nproc_per_node=N -m sparsebench.train CONFIG.yaml [k=v ...]`` sets ``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
* on SLURM, a sweep's ``slurm: {nodes, tasks_per_node, gpus_per_node}`` makes submitit start one
  task per GPU, and submitit's ``TorchDistributedEnvironment`` exports the same variables from
  the SLURM environment.

Without either, the world is one process and every helper here is a no-op, so the trainer and
the methods call them unconditionally.

What makes N ranks train exactly the run one process trains with the same global batch:

* ``data.batch_size`` is the global batch: every rank draws the same permutation and
  augmentation for the epoch and takes its contiguous share of each global batch (the loaders'
  ``rank`` / ``world_size``);
* DDP averages the gradients, and each rank's loss is the mean over its share, so the averaged
  gradient is the global batch's;
* the scores a method ranks connections by are made global before any top-k (RigL's dense
  gradient is DDP's; GSE's candidate gradients and sampling statistics and SNIP's gradients
  go through :func:`all_reduce_mean` / :func:`all_reduce_sum`), and every random choice comes
  from a generator seeded identically on every rank, so every rank reaches the same masks.
  ``SPARSEBENCH_CHECK_MASKS=1`` compares a hash of the masks across ranks after every step
  (:func:`check_masks`) and fails the run where they differ.

Files: rank 0 alone writes (:func:`is_main`). Faults: collectives time out after
``SPARSEBENCH_COLLECTIVE_TIMEOUT_S`` (default 600 s), a rank that dies closes its connections
so the others' next collective fails at once, and :func:`failure_text` names on rank 0 the rank
that failed first and its error (each rank leaves its error in the process group's store).
A non-finite loss on any rank ends the run as ``diverged`` on all (:func:`any_rank`).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import signal
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .config.schema import ConfigError

ENV_CHECK_MASKS = "SPARSEBENCH_CHECK_MASKS"
ENV_TIMEOUT = "SPARSEBENCH_COLLECTIVE_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 600.0
FAULT_LOOK_S = 5.0  # how long rank 0 looks for the rank that failed before blaming itself
_KEY = "sparsebench"  # prefix of this module's keys in the process group's store


class RankFailure(RuntimeError):
    """This rank cannot go on because another rank failed, or the launcher stopped it."""


class MasksDiffer(RuntimeError):
    """The ranks' masks are no longer identical (the run would be silently wrong)."""


@dataclass(frozen=True)
class World:
    """Where this process stands: its rank among ``size`` ranks and its local rank on the node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


# ---- the world -------------------------------------------------------------------------------

def _launched() -> tuple[str, int] | None:
    """("torchrun" | "slurm", world size) when this process is one rank of several."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:
        return "torchrun", int(os.environ["WORLD_SIZE"])
    # A task of a submitit job only: a plain allocation's shell (salloc) has SLURM_NTASKS too.
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return "slurm", int(os.environ["SLURM_NTASKS"])
    return None


def launched_world_size() -> int:
    """The world size the launch asks for, known before the process group exists."""
    launch = _launched()
    return 1 if launch is None else launch[1]


def current() -> World:
    """This process's place in the run (one rank of one when torch.distributed is not set up)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(),
                 int(os.environ.get("LOCAL_RANK", "0")), dist.get_backend())


def timeout_s() -> float:
    return float(os.environ.get(ENV_TIMEOUT, DEFAULT_TIMEOUT_S))


def setup(device_type: str) -> World:
    """Join the run's process group when launched as one of several ranks (idempotent).

    ``device_type`` ("cuda" or "cpu") picks NCCL or gloo; on CUDA the rank's GPU becomes the
    current device, so ``torch.device("cuda")`` is this rank's GPU.
    """
    launch = _launched()
    if launch is None or (dist.is_available() and dist.is_initialized()):
        return current()
    if launch[0] == "slurm":
        import submitit

        # MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK from the SLURM job (one task per GPU).
        submitit.helpers.TorchDistributedEnvironment().export(
            set_cuda_visible_devices=False, overwrite=True)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    dist.init_process_group(backend, timeout=dt.timedelta(seconds=timeout_s()))
    world = current()
    _store_set(f"pid/{world.rank}", f"{platform.node()} {os.getpid()}")
    if "TORCHELASTIC_RUN_ID" in os.environ:
        # torchrun stops the other ranks with SIGTERM when one fails; unwind instead of dying
        # silently, so rank 0 records the run as failed.
        signal.signal(signal.SIGTERM, _on_launcher_sigterm)
    return world


def _on_launcher_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise RankFailure("stopped by the launcher (SIGTERM): another rank failed or was killed")


def teardown() -> None:
    """Close the process group once every rank got here (a run that ended on all of them).

    The barrier first: gloo aborts a rank (SIGABRT, "terminate called without an active
    exception") whose peer closes the connection while it still uses it."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def validate(cfg, world_size: int) -> None:
    """What a run on ``world_size`` ranks needs of its config; raises ConfigError naming the field."""
    if world_size <= 1:
        return
    if cfg.data.batch_size % world_size:
        raise ConfigError("data.batch_size", f"got {cfg.data.batch_size}; the global batch must "
                                             f"divide by the world size {world_size} (each rank "
                                             "takes an equal share)")
    if cfg.sparsity.engine != "masked":
        raise ConfigError("sparsity.engine", f"got {cfg.sparsity.engine!r}; allowed with "
                                             f"{world_size} ranks: masked (the sparse engine's "
                                             "parameters change shape at every update, which "
                                             "DDP's gradient buckets do not allow)")


def devices(device: torch.device) -> list[str]:
    """Every rank's device, in rank order (for result.json)."""
    name = str(device)
    if device.type == "cuda":
        name = f"cuda:{torch.cuda.current_device()} {torch.cuda.get_device_name()}"
    return gather_objects(f"{platform.node()} {name}")


# ---- the model ---------------------------------------------------------------------------------

def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The module training steps run through: DDP with several ranks, the model itself with one.

    The masks are applied to the weights themselves (the masked engine), so DDP's parameters and
    buckets never change. The trainer wraps the model after it has resumed from its checkpoint
    (or drawn its first masks), so DDP starts from the state every rank trains on. On CUDA, batch norm becomes SyncBatchNorm, so its statistics are the
    global batch's as in one process (gloo has no SyncBatchNorm, so on the CPU each rank
    normalizes by its share's statistics).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return model   # one process: no process group (a group of one rank is wrapped, too)
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[torch.cuda.current_device()])
    return nn.parallel.DistributedDataParallel(model)


# ---- collectives (no-ops on one rank) ----------------------------------------------------------

def _reduce(t: torch.Tensor, op) -> torch.Tensor:
    if current().size == 1:
        return t
    # NCCL reduces GPU tensors only; statistics that live on the CPU make the round trip.
    work = t.detach().clone().contiguous()
    if dist.get_backend() == "nccl" and not work.is_cuda:
        work = work.cuda()
    dist.all_reduce(work, op)
    return work.to(t.device)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over all ranks (a new tensor; ``t`` itself with one rank)."""
    return _reduce(t, dist.ReduceOp.SUM)


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over all ranks: for a gradient of each rank's mean loss over its share,
    the gradient of the global batch's mean loss (what DDP computes for parameters)."""
    world = current()
    if world.size == 1:
        return t
    return _reduce(t, dist.ReduceOp.SUM).div_(world.size)


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """The elementwise maximum of ``t`` over all ranks (``t`` itself with one rank)."""
    return _reduce(t, dist.ReduceOp.MAX)


def any_rank(flag: torch.Tensor | bool) -> bool:
    """Whether ``flag`` holds on any rank (every rank gets the same answer)."""
    if current().size == 1:
        return bool(flag)
    t = torch.as_tensor(flag).to(torch.float32).reshape(1)
    return bool(_reduce(t, dist.ReduceOp.MAX) > 0)


def sum_counts(loss_sum: torch.Tensor, correct: torch.Tensor, count: int):
    """An epoch's or an evaluation's (loss sum, correct, count) summed over the ranks' shares
    (returned unchanged on one rank)."""
    if current().size == 1:
        return loss_sum, correct, count
    sums = all_reduce_sum(torch.stack([loss_sum.double(), correct.double(),
                                       torch.tensor(float(count), device=loss_sum.device)]))
    return sums[0], sums[1], int(sums[2])


def gather_objects(obj) -> list:
    """``obj`` from every rank, in rank order."""
    world = current()
    if world.size == 1:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (the others pass anything and wait for it)."""
    if current().size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(t: torch.Tensor, world: World | None = None) -> torch.Tensor:
    """This rank's contiguous share of ``t`` along dim 0 (every rank's share of one global batch;
    sizes differ by at most one where it does not divide)."""
    world = world or current()
    if world.size == 1:
        return t
    return torch.tensor_split(t, world.size)[world.rank]


# ---- one topology on every rank -----------------------------------------------------------------

def check_masks_enabled() -> bool:
    return os.environ.get(ENV_CHECK_MASKS, "") not in ("", "0")


def mask_digest(engine) -> str:
    """A hash of the topology: every layer's name and active flat indices, in layer order (a
    protocol question, so the same on both engines and on any memory format)."""
    h = hashlib.sha256()
    for layer in engine.layers:
        h.update(layer.name.encode())
        h.update(layer.active_indices().to(torch.int64).cpu().numpy().tobytes())
    return h.hexdigest()


def check_masks(engine, step: int) -> None:
    """Raise MasksDiffer unless every rank holds the same masks (a debug check, one small
    all-gather per call; the trainer calls it after every step under SPARSEBENCH_CHECK_MASKS)."""
    digests = gather_objects(mask_digest(engine))
    if len(set(digests)) > 1:
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        raise MasksDiffer(f"masks differ across ranks after step {step + 1}: rank(s) "
                          f"{', '.join(map(str, differ))} differ from rank 0")


# ---- faults ----------------------------------------------------------------------------------

def _store():
    try:
        return dist.distributed_c10d._get_default_store()  # the process group's own store
    except (AttributeError, RuntimeError, ValueError):
        return None


def _store_set(key: str, value: str) -> None:
    store = _store()
    if store is not None:
        try:
            store.set(f"{_KEY}/{key}", value)
        except Exception:  # the store's host may be gone with the rank that failed
            pass


def _store_get(key: str) -> str | None:
    store = _store()
    if store is None:
        return None
    try:
        full = f"{_KEY}/{key}"
        return store.get(full).decode() if store.check([full]) else None
    except Exception:
        return None


def _process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")  # zombie: dead, unreaped
    except (OSError, IndexError):
        return True


def failure_text(err: BaseException, first_line: str) -> str:
    """The error a failed run records: on one rank ``first_line`` itself. With several ranks,
    every rank leaves its error in the store; rank 0 names the rank that failed first: one that
    raised, else one found dead on this node (killed, out of memory), else itself."""
    world = current()
    if world.size == 1:
        return first_line
    if "TORCHELASTIC_RUN_ID" in os.environ:
        # Recording the failure must not be cut short by torchrun's SIGTERM (it SIGKILLs after
        # a grace period of 30 s, well after this is done).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if not isinstance(err, RankFailure) and not _is_collective_error(err):
        _store_set(f"error/{world.rank}", first_line)
        return f"rank {world.rank}: {first_line}"
    others = [r for r in range(world.size) if r != world.rank]
    pids = {r: (_store_get(f"pid/{r}") or "").split() for r in others}
    # A killed peer's sockets close before the kernel has finished its exit: look for a while.
    deadline = time.monotonic() + FAULT_LOOK_S
    while True:
        for rank in others:
            text = _store_get(f"error/{rank}")
            if text is not None:
                return f"rank {rank}: {text}"
        for rank, where in pids.items():
            if len(where) == 2 and where[0] == platform.node() and _process_gone(int(where[1])):
                return f"rank {rank} died (pid {where[1]}: killed or out of memory); rank " \
                       f"{world.rank} saw: {first_line}"
        if time.monotonic() >= deadline:
            return f"rank {world.rank}: {first_line}"
        time.sleep(0.1)


def _is_collective_error(err: BaseException) -> bool:
    """An error of the communication itself (a peer gone, a timeout), not of this rank's work."""
    names = {cls.__name__ for cls in type(err).__mro__}
    return bool(names & {"DistError", "DistBackendError", "DistNetworkError", "DistStoreError"}) \
        or any(s in str(err) for s in ("Connection closed by peer", "Connection reset by peer",
                                       "Timed out", "timed out", "Broken pipe"))
