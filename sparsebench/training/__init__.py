"""Training one run: the step, the loop, its checkpoint state, its lifecycle.

=================  ==========================================================================
``step``           :func:`training_step`, the one optimizer step every run takes
``loop``           :class:`Trainer`: builds a run's parts, trains epoch by epoch, evaluates
``callbacks``      :class:`Callback`: the hook point for per-step and per-epoch concerns
``state``          :class:`Progress` and the checkpoint that carries it across restarts
``result``         what result.json holds
``lifecycle``      :func:`train`: lock, training, result.json (also for failed runs)
``device``         which device a run trains on
``precision``      autocast, TF32, cuDNN autotuning and memory format: run settings, recorded
``timing``         step and hook times (CUDA events on a GPU), read once per epoch
``schedules``      the optimizer and its learning-rate schedule (warm-up, cosine, steps)
``preflight``      what a resolved config must pass on this machine before a run starts
``tracking``       the trackers a run writes to: TensorBoard, W&B, MLflow
``topology``       how the masks move: the in-time over-parameterization rate
``tracking_callbacks`` the callbacks that write steps.jsonl, topology.jsonl and the trackers
``final``          ``final.pt`` and :func:`load_model`
=================  ==========================================================================

May import config, storage, data, models, sparsity, methods, scoring, flops and distributed;
launch, reporting and the commands import it, never the reverse.
"""
from .callbacks import Callback, StepEnd
from .device import resolve_device
from .lifecycle import run_folder, train
from .loop import Diverged, RunLog, Trainer
from .result import result_header
from .state import Progress
from .step import training_step

__all__ = ["Callback", "Diverged", "Progress", "RunLog", "StepEnd", "Trainer", "resolve_device",
           "result_header", "run_folder", "train", "training_step"]
