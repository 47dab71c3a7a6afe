"""Sweeps that extend another sweep, and grid axes of fields set together."""
from __future__ import annotations

import pytest

from sparsebench.config import schema as config
from sparsebench.launch import spec as sweep_spec
from sparsebench.paper import width as paper_width

PARENT = {
    "description": "parent", "base": "configs/fmnist_mlp.yaml",
    "overrides": {"epochs": 3, "optim": {"lr": 0.05}},
    "grid": {"method": ["static", "set"], "density": [0.1, 0.05], "seed": [0, 1]},
    "exclude": [{"method.name": "set", "density": 0.05}],
    "slurm": {"time_min": 30, "mem_gb": 2},
}


def test_extends_merges_grid_overrides_and_slurm(write_sweep):
    parent = write_sweep("parent", PARENT)
    write_sweep("child", {"description": "child", "extends": str(parent),
                          "overrides": {"optim.momentum": 0.5},
                          "grid": {"seed": None, "epochs": [4, 5]},
                          "slurm": {"time_min": 90}})
    child = sweep_spec.expand(str(parent.parent / "child.yaml"))
    cells = {(c.config.method.name, c.config.density, c.config.epochs, c.config.seed)
             for c in child.cells}
    # The parent's grid and exclude stay; seed is dropped (default 0), epochs added.
    assert cells == {(m, d, e, 0) for m in ("static", "set") for d in (0.1, 0.05) for e in (4, 5)
                     if not (m == "set" and d == 0.05)}
    cfg = child.cells[0].config
    assert (cfg.optim.lr, cfg.optim.momentum) == (0.05, 0.5)   # overrides merged key by key
    assert (child.spec.slurm.time_min, child.spec.slurm.mem_gb) == (90, 2)
    assert child.name == "child" and child.spec.description == "child"


def test_extends_errors_name_the_field(write_sweep):
    parent = write_sweep("parent", PARENT)
    write_sweep("loop_a", {"description": "a", "extends": str(parent.parent / "loop_b.yaml"),
                           "grid": {"seed": [0]}})
    write_sweep("loop_b", {"description": "b", "extends": str(parent.parent / "loop_a.yaml"),
                           "grid": {"seed": [0]}})
    with pytest.raises(config.ConfigError, match="extends: .*a cycle"):
        sweep_spec.expand(str(parent.parent / "loop_a.yaml"))
    write_sweep("orphan", {"description": "o", "extends": "no_such_sweep", "grid": {"seed": [0]}})
    with pytest.raises(config.ConfigError, match="no sweep named 'no_such_sweep'"):
        sweep_spec.expand(str(parent.parent / "orphan.yaml"))


def test_together_sets_paired_fields_as_one_axis(write_sweep):
    path = write_sweep("paired", {
        "description": "paired", "base": "configs/fmnist_mlp.yaml",
        "grid": {"together": [{"model.width": 1, "density": 0.1},
                              {"model.width": 2, "density": 0.05}], "seed": [0, 1]}})
    sweep = sweep_spec.expand(str(path))
    assert sorted((c.config.model.width, c.config.density, c.config.seed) for c in sweep.cells) == [
        (1, 0.1, 0), (1, 0.1, 1), (2, 0.05, 0), (2, 0.05, 1)]
    write_sweep("bad", {"description": "b", "base": "configs/fmnist_mlp.yaml",
                        "grid": {"together": [0.1, 0.2]}})
    with pytest.raises(config.ConfigError, match="grid.together: expected a list of non-empty mappings"):
        sweep_spec.expand(str(path.parent / "bad.yaml"))


def test_paper_width_sweep_keeps_the_active_connections_of_the_x1_model():
    wide = sweep_spec.expand("paper_fig3_width")
    base = sweep_spec.expand("cifar100_densities")
    for model in {c.config.model.name for c in wide.cells}:
        ref = next(c.config for c in base.cells if c.config.model.name == model
                   and c.config.density == 0.02 and c.config.method.name == "gse")
        target = paper_width.active_connections(ref)
        widths = set()
        for c in wide.cells:
            if c.config.model.name == model and c.config.seed == 0:
                widths.add(c.config.model.width)
                assert abs(paper_width.active_connections(c.config) - target) <= 1e-3 * target, (model, c.config.model.width)
                # Everything else is the CIFAR-100 sweep's GSE cell.
                assert (c.config.optim, c.config.epochs) == (ref.optim, ref.epochs)
        assert widths == {2, 3, 4}
