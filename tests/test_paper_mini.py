"""The miniature paper: derived cell by cell from the full sweeps, and end to end (tiny)."""
from __future__ import annotations

import pytest

from sparsebench import atomic, sweep_spec
from sparsebench.config import to_dict
from sparsebench.paper import mini
from sparsebench.paper.artifacts import ARTIFACTS, paper_sweeps
from sparsebench.paper.width import active_connections


def test_every_full_cell_has_its_miniature_and_only_the_declared_fields_change(tmp_path):
    spec = mini.MiniSpec.load()
    for name in ("cifar100_densities", "paper_table3_epochs", "paper_table2_imagenet"):
        full = sweep_spec.expand(name)
        derived = mini.derive(name, spec)
        kept = [c for c in full.cells if c.config.seed in spec.seeds]
        assert len(derived.spec["include"]) == len(kept) > 0
        for cell, small in zip(kept, derived.spec["include"]):
            big = to_dict(cell.config)
            assert small["data"]["name"] == spec.stand_in(big["data"]["name"])
            assert small["epochs"] == max(2, round(big["epochs"] / 100))
            to = spec.models.get(big["model"]["name"], {})
            assert small["model"]["name"] == to.get("name", big["model"]["name"])
            assert small["method"] == {**big["method"],
                                       **spec.method_params.get(big["method"]["name"], {})}
            # Everything not declared in sweeps/mini/common.yaml is the full cell's.
            for section in ("optim", "sparsity"):
                a, b = dict(big[section]), dict(small[section])
                a.pop("warmup_epochs", None), b.pop("warmup_epochs", None)
                assert a == b
            assert small["density"] == big["density"] and small["seed"] == big["seed"]
        # The derived file is a sweep of its own: it expands to exactly those cells.
        path = tmp_path / f"{name}.yaml"
        atomic.write_yaml(path, derived.spec)
        assert len(sweep_spec.expand(str(path)).cells) == len(kept)


def test_the_miniature_width_sweep_keeps_its_active_connections_constant(tmp_path):
    spec = mini.MiniSpec.load()
    layout = mini.Layout(tmp_path)
    mini.derive_all(layout, spec, ["paper_fig3_width", "cifar100_densities"])
    wide = sweep_spec.expand(str(layout.sweep_file("paper_fig3_width")))
    base = sweep_spec.expand(str(layout.sweep_file("cifar100_densities")))
    for model in {c.config.model.name for c in wide.cells}:
        ref = next(c.config for c in base.cells if c.config.model.name == model
                   and c.config.density == 0.02 and c.config.method.name == "gse")
        target = active_connections(ref)
        for c in wide.cells:
            if c.config.model.name == model:
                assert c.config.model.width > ref.model.width
                assert abs(active_connections(c.config) - target) <= 2e-3 * target + 1


def test_paper_keys_map_a_miniature_cell_back_to_the_full_one():
    spec = mini.MiniSpec.load()
    keys = spec.paper_keys({"model": "resnet20", "epochs": 3, "width": 0.5, "method": "dense"})
    assert keys == {"model": "resnet56", "epochs": 300, "width": 2.0, "method": "dense"}


@pytest.mark.slow
def test_tiny_miniature_writes_every_artifact_and_the_index(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    index = mini.run(tmp_path, tiny=True, workers=2)
    top = index.parent
    text = index.read_text()
    assert text.startswith("# The GSE paper's artifacts — MINIATURE")
    assert "This is a miniature of the paper, not its results" in text
    assert "synth-100 (not CIFAR-100)" in text
    for artifact in ARTIFACTS:
        exts = ("md", "tex", "csv") if artifact.kind == "table" else ("png", "pdf")
        for ext in exts:
            path = top / f"{artifact.id}.{ext}"
            assert path.is_file() and path.stat().st_size > 0, path
        assert f"## {artifact.id}" in text
        section = text.split(f"## {artifact.id}\n", 1)[1].split("\n## ", 1)[0]
        assert "- state: complete" in section, section
        if artifact.kind in ("figure", "kernels", "flops"):
            assert "- caption: " in section
    for name in paper_sweeps():  # each derived sweep is runnable on its own
        assert sweep_spec.expand(str(top / "sweeps" / f"{name}.yaml")).cells
