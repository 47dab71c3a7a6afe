"""Every method that allows the always-sparse engine, under every protocol and both scopes, runs
on it through the real trainer (a method that runs on both engines never sees a dense mask).
SET with ``scope: global`` under the GSE paper's protocol crashed here at its first update."""
from __future__ import annotations

import pytest

from sparsebench import methods, protocols, resolve
from sparsebench.sparsity import SparseLayer
from sparsebench.training import Trainer

from .conftest import REPO, needs_fmnist

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")
SMALL = ["data.train_subset=512", "data.batch_size=64", "epochs=2", "progress=false",
         "density=0.1", "sparsity.engine=sparse"]


def _cases():
    for name in methods.available():
        cls = methods.get(name)
        if "sparse" not in cls.engines:
            continue
        fields = cls.Params.__dataclass_fields__
        scopes = ("global", "layer") if "scope" in fields else (None,)
        for protocol in protocols.available():
            for scope in scopes:
                extra = [f"method.name={name}", f"protocol={protocol}"]
                extra += [f"method.scope={scope}"] if scope else []
                extra += ["method.interval=3"] if "interval" in fields else []
                yield pytest.param(extra, "interval" in fields,
                                   id=f"{name}-{protocol}" + (f"-{scope}" if scope else ""))


def test_the_cases_cover_the_sparse_methods_and_the_reported_crash():
    ids = [case.id for case in _cases()]
    assert "set-gse_paper-global" in ids
    assert {i.split("-")[0] for i in ids} == {n for n in methods.available()
                                              if "sparse" in methods.get(n).engines}


@needs_fmnist
@pytest.mark.parametrize("extra, dynamic", list(_cases()))
def test_every_sparse_method_runs_on_the_sparse_engine(extra, dynamic, tmp_path):
    cfg = resolve.load(BASE, SMALL + extra)
    trainer = Trainer(cfg, tmp_path)
    engine, method = trainer.engine, trainer.method
    assert all(isinstance(layer, SparseLayer) for layer in engine.layers)
    total = sum(layer.target_active for layer in engine.layers)
    updates = []
    original = method.after_step, method.before_forward

    def watched(hook):
        def run(ctx):
            version = engine.mask_version
            hook(ctx)
            if engine.mask_version != version:
                updates.append(ctx.step)
        return run
    method.after_step, method.before_forward = (watched(h) for h in original)
    assert trainer.run() == "completed"
    if dynamic:
        assert len(updates) >= 2, "a couple of topology updates happened"
    assert sum(layer.n_active() for layer in engine.layers) == total
    assert sum(layer.target_active for layer in engine.layers) == total
    assert engine.global_density() == pytest.approx(0.1, abs=1 / engine.num_prunable())
