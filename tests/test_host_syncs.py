"""A training step forces no host-device synchronization outside the method's update steps.

On CUDA an operator whose result decides a size or a Python value (``.item()``, ``int(t)``,
``nonzero``, boolean indexing, ``unique``, ...) makes the CPU wait for the GPU to drain its
queue. :class:`HostSyncs` counts those operators as the dispatcher sees them, so the count is
the same on the CPU as on a GPU. A step counts as an update step when the method changed the
topology in it (``engine.mask_version``); Top-KAST's per-step refresh of its sets is part of
its ordinary step and is held to zero. The trainer's periodic divergence check (every
``DIVERGENCE_CHECK_EVERY`` steps) is its one planned sync.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sparsebench import methods, resolve
from sparsebench.training import Trainer, run_folder
from sparsebench.training.loop import DIVERGENCE_CHECK_EVERY

from .conftest import REPO
from .synthetic_cifar import use_synthetic_cifar100

aten = torch.ops.aten
# Operators that read a device value on the host or size their output by the data.
SYNCING = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
           aten._unique2.default, aten.unique_dim.default, aten.unique_consecutive.default,
           aten.bincount.default, aten.equal.default, aten.is_nonzero.default,
           aten.repeat_interleave.Tensor, aten.histc.default}
# Indexing with a boolean mask runs a nonzero inside the kernel.
INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default,
            aten._index_put_impl_.default}


class HostSyncs(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SYNCING or (func in INDEXING and any(
                i is not None and i.dtype == torch.bool for i in args[1])):
            self.seen.append(str(func))
        return func(*args, **kwargs)


def test_the_counter_sees_what_syncs():
    x = torch.randn(10)
    with HostSyncs() as syncs:
        float(x.sum())
        x[x > 0]
        x.nonzero()
        torch.where(x > 0, x, 0.0)       # these three do not sync
        x.topk(3)
        x.masked_fill(x > 0, 0.0)
    assert syncs.seen == ["aten._local_scalar_dense.default", "aten.index.Tensor",
                          "aten.nonzero.default"]


BASE = str(REPO / "configs" / "fmnist_mlp.yaml")
STEPS = 10   # an epoch of 10 batches of 20 generated 32 x 32 images, LeNet-5
# Each method with updates inside the measured epoch.
METHOD_PARAMS = {
    "rigl": ["method.interval=3"], "set": ["method.interval=3"],
    "gse": ["method.interval=3"], "magnitude": ["method.frequency=3", "method.start=0.0"],
    "topkast": ["method.explore_epochs=0.5", "method.interval=3"],
    "synflow": ["method.iterations=2"], "lottery": ["method.rounds=1"],
}
CASES = [(name, extra) for name in methods.available() if name != "gse"
         for extra in [METHOD_PARAMS.get(name, [])]]
CASES += [("gse", METHOD_PARAMS["gse"] + [f"method.sampler={s}"]) for s in ("uniform", "grabo", "graest")]


@pytest.mark.parametrize("name, extra", CASES, ids=[" ".join([n, *e[-1:]]) for n, e in CASES])
def test_no_host_sync_outside_update_steps(name, extra, tmp_path, monkeypatch):
    use_synthetic_cifar100(tmp_path / "data", monkeypatch)
    cfg = resolve.load(BASE, [f"method.name={name}", *extra, "data.name=cifar100",
                              "model.name=lenet5", "density=0.2", "epochs=2", "data.batch_size=20",
                              "progress=false"])
    run_dir = run_folder(cfg)
    run_dir.mkdir(parents=True)
    trainer = Trainer(cfg, run_dir, callbacks=[])
    trainer.callbacks = []   # no progress bar: the epoch runs outside Trainer.run
    trainer.init_masks()
    assert trainer.steps_per_epoch == STEPS < DIVERGENCE_CHECK_EVERY
    steps, found, updates = trainer.epoch_steps(0), {}, 0
    for step in range(STEPS):
        version = trainer.engine.mask_version
        with HostSyncs() as syncs:
            next(steps)
        if trainer.engine.mask_version != version and name != "topkast":
            updates += 1     # a topology update: syncs allowed
        elif syncs.seen:
            found[step] = syncs.seen
    assert found == {}, f"{name}: host syncs in ordinary steps: {found}"
    if name in ("rigl", "set", "gse", "magnitude"):
        assert updates >= 2          # the updates happened and were told apart
