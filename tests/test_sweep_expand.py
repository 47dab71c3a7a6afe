"""Sweep files -> cells: grid product, include/exclude, overrides, dedupe by run_id (no training)."""
from __future__ import annotations

import pytest

from sparsebench.config import schema as config
from sparsebench import models, resolve
from sparsebench.launch import spec as sweep_spec
from sparsebench.sparsity.engine import SparsityEngine

from .conftest import REPO

BASE = "configs/fmnist_mlp.yaml"


def labels(sweep):
    return [c.label for c in sweep.cells]


def test_grid_is_the_cartesian_product_first_key_slowest(write_sweep):
    path = write_sweep("g", {"base": BASE, "grid": {"method.name": ["static", "set"],
                                                     "density": [0.2, 0.1], "seed": [0, 1]}})
    sweep = sweep_spec.expand(str(path))
    assert sweep.n_cells == 8 and len(sweep.cells) == 8
    assert labels(sweep)[:3] == [{"method.name": "static", "density": 0.2, "seed": 0},
                                 {"method.name": "static", "density": 0.2, "seed": 1},
                                 {"method.name": "static", "density": 0.1, "seed": 0}]
    assert labels(sweep)[-1] == {"method.name": "set", "density": 0.1, "seed": 1}
    for cell in sweep.cells:
        cfg = cell.config
        assert (cfg.method.name, cfg.density, cfg.seed) == tuple(cell.label.values())
        assert cfg.sweep == "g" and cfg.progress is False
        assert cfg.optim.nesterov is True  # from the base config
        assert cell.run_id == config.run_id(cfg)


def test_cells_resolve_to_the_run_id_of_the_same_single_run(write_sweep):
    """A cell is exactly the run `python -m sparsebench.train BASE key=value ...` would make."""
    path = write_sweep("same", {"base": BASE, "overrides": {"epochs": 3},
                                "grid": {"method": [{"name": "rigl", "interval": 50}],
                                         "density": [0.05]}})
    cell, = sweep_spec.expand(str(path)).cells
    single = resolve.load(REPO / BASE, ["epochs=3", "method.name=rigl", "method.interval=50",
                                        "density=0.05"])
    assert cell.run_id == config.run_id(single)
    assert cell.config.method.params == single.method.params


def test_exclude_drops_grid_cells_before_include_adds(write_sweep):
    path = write_sweep("ie", {
        "base": BASE,
        "grid": {"method.name": ["static", "set"], "density": [0.2, 0.1]},
        "exclude": [{"method.name": "set", "density": 0.2}],
        "include": [{"method.name": "set", "density": 0.2, "seed": 7},
                    {"method": {"name": "rigl", "interval": 10}, "density": 0.05}]})
    got = labels(sweep_spec.expand(str(path)))
    assert {"method.name": "set", "density": 0.2} not in got
    assert got[-2:] == [{"method.name": "set", "density": 0.2, "seed": 7},
                        {"method": {"name": "rigl", "interval": 10}, "density": 0.05}]
    assert len(got) == 3 + 2


def test_exclude_matches_defaults_and_whole_sections(write_sweep):
    path = write_sweep("ex", {
        "base": BASE,
        "grid": {"method": [{"name": "set", "drop_fraction": 0.5}, "static"], "seed": [0, 1]},
        # seed 0 is the base config's value, method a section given as a mapping
        "exclude": [{"method": {"name": "set"}, "seed": 0}, {"method.name": "static", "seed": 1}]})
    got = labels(sweep_spec.expand(str(path)))
    assert got == [{"method": {"name": "set", "drop_fraction": 0.5}, "seed": 1},
                   {"method": "static", "seed": 0}]


def test_cells_that_are_the_same_run_are_run_once_and_listed_once(write_sweep):
    path = write_sweep("d", {"base": BASE, "grid": {"method.name": ["dense", "static"],
                                                     "density": [0.5, 0.1, 0.05]}})
    sweep = sweep_spec.expand(str(path))
    assert sweep.n_cells == 6 and len(sweep.cells) == 4
    dense = [c for c in sweep.cells if c.config.method.name == "dense"]
    assert len(dense) == 1 and dense[0].config.density == 1.0
    assert dense[0].aliases == [{"method.name": "dense", "density": 0.1},
                                {"method.name": "dense", "density": 0.05}]
    assert len({c.run_id for c in sweep.cells}) == 4


def test_overrides_dotted_and_nested_keep_the_rest_of_the_section(write_sweep):
    path = write_sweep("o", {"base": BASE,
                             "overrides": {"epochs": 2, "data": {"train_subset": 512},
                                           "optim.lr": 0.05},
                             "grid": {"seed": [0]}})
    cfg = sweep_spec.expand(str(path)).cells[0].config
    assert (cfg.epochs, cfg.data.train_subset, cfg.optim.lr) == (2, 512, 0.05)
    assert cfg.data.name == "fashion_mnist" and cfg.data.batch_size == 128  # kept from the base


def test_a_method_mapping_replaces_the_method_section(write_sweep):
    path = write_sweep("m", {"base": BASE, "overrides": {"method": {"name": "set", "drop_fraction": 0.5}},
                             "grid": {"method": ["dense", {"name": "rigl", "interval": 100}]}})
    cells = sweep_spec.expand(str(path)).cells
    assert [c.config.method.name for c in cells] == ["dense", "rigl"]
    assert cells[0].config.method.params == {}
    assert cells[1].config.method.params["interval"] == 100
    assert cells[1].config.method.params["drop_fraction"] == 0.3  # rigl's default, not set's 0.5


def test_command_line_overrides_apply_to_every_cell_last(write_sweep):
    path = write_sweep("c", {"base": BASE, "overrides": {"epochs": 5},
                             "grid": {"method.name": ["static", "set"]}})
    plain = sweep_spec.expand(str(path))
    over = sweep_spec.expand(str(path), ["epochs=1", "data.train_subset=256"])
    assert all(c.config.epochs == 1 and c.config.data.train_subset == 256 for c in over.cells)
    assert {c.run_id for c in plain.cells}.isdisjoint({c.run_id for c in over.cells})


def test_sweep_found_by_name_and_missing_ones_listed():
    assert sweep_spec.find("fmnist_smoke") == REPO / "sweeps" / "fmnist_smoke.yaml"
    with pytest.raises(config.ConfigError, match="available: .*fmnist_smoke"):
        sweep_spec.find("no_such_sweep")


SHIPPED = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_sweep_validates(name):
    """Validation needs no data: CIFAR and ImageNet sweeps expand on a laptop without them."""
    sweep = sweep_spec.expand(name)
    assert sweep.name == name and sweep.cells
    assert sweep.spec.description


def test_default_sweep_is_all_eleven_methods_five_densities_three_seeds():
    sweep = sweep_spec.expand("fmnist_densities")
    methods = {c.config.method.name for c in sweep.cells}
    assert methods == {"dense", "static", "snip", "magnitude", "set", "rigl", "gse",
                       "lottery", "grasp", "synflow", "topkast"}
    assert sweep.n_cells == 11 * 5 * 3 and len(sweep.cells) == 10 * 5 * 3 + 3
    for cell in sweep.cells:
        assert cell.config.epochs == 10
        if cell.config.method.name in ("rigl", "gse"):
            assert cell.config.method.params["interval"] == 100
        if cell.config.method.name == "topkast":  # more often: see the sweep file
            assert cell.config.method.params["interval"] == 10
        if cell.config.method.name == "lottery":  # 3 pruned rounds of 10 epochs after the dense one
            assert cell.config.method.params["rounds"] == 3


@pytest.mark.parametrize("suffix, protocol", [("", "gse_paper"), ("_own", "own")])
def test_paper_sweeps_use_the_gse_recipe(suffix, protocol):
    for name in ("cifar10_densities" + suffix, "cifar100_densities" + suffix):
        sweep = sweep_spec.expand(name)
        assert {c.config.model.name for c in sweep.cells} == {"resnet56", "vgg16_small",
                                                              "simple_vit_tiny"}
        assert {c.config.protocol for c in sweep.cells} == {protocol}
        assert {c.config.method.name for c in sweep.cells} == {
            "dense", "static", "snip", "magnitude", "set", "rigl", "gse"}
        assert {c.config.density for c in sweep.cells} == {0.1, 0.05, 0.02, 1.0}  # 1.0: dense
        samplers = {c.config.method.params.get("sampler") for c in sweep.cells
                    if c.config.method.name == "gse"}
        assert samplers == {"uniform", "grabo", "graest"}
        for c in sweep.cells:
            o = c.config.optim
            # The GSE authors warm up GSE alone; each baseline script has none (issue 26). Under
            # each method's own defaults every method gets the paper configs' 5 epochs.
            warmup = 5 if protocol == "own" or c.config.method.name == "gse" else 0
            assert (c.config.epochs, o.schedule, o.milestones, o.warmup_epochs) == (200, "step", [0.4, 0.6], warmup)
            assert o.lr == (0.01 if c.config.model.name == "simple_vit_tiny" else 0.1)
            assert (o.momentum, o.weight_decay, c.config.data.batch_size) == (0.9, 1e-4, 128)


def _active_weights(cfg) -> int:
    model = models.build_model(cfg.model.name, num_classes=10, in_shape=(1, 28, 28),
                               width=cfg.model.width)
    engine = SparsityEngine.for_model(model, cfg.density, cfg.sparsity.distribution,
                                      dense_first_layer=cfg.sparsity.dense_first_layer,
                                      dense_last_layer=cfg.sparsity.dense_last_layer)
    return sum(layer.target_active for layer in engine.layers)


def test_width_scaling_keeps_the_active_connections_constant():
    sweep = sweep_spec.expand("width_scaling")
    widths = sorted({c.config.model.width for c in sweep.cells})
    assert widths == [1, 2, 4, 8]
    for method in ("rigl", "gse"):
        counts = {c.config.model.width: _active_weights(c.config) for c in sweep.cells
                  if c.config.method.name == method and c.config.seed == 0}
        assert len(counts) == 4
        assert max(counts.values()) <= 1.02 * min(counts.values()), counts
