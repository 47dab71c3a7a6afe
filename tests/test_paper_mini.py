"""The miniature paper: derived cell by cell from the full sweeps, and end to end (tiny)."""
from __future__ import annotations

import pytest

from sparsebench.storage import atomic
from sparsebench.launch import spec as sweep_spec
from sparsebench.config.schema import to_dict
from sparsebench.paper import mini, mini_spec
from sparsebench.paper.artifacts import ARTIFACTS, paper_sweeps
from sparsebench.paper.width import active_connections

from .conftest import needs_fmnist


def test_every_full_cell_has_its_miniature_and_only_the_declared_fields_change(tmp_path):
    spec = mini_spec.MiniSpec.load()
    for name in ("cifar100_densities", "paper_table3_epochs", "paper_table2_imagenet",
                 "paper_table1_baselines"):
        full = sweep_spec.expand(name)
        derived = mini_spec.derive(name, spec)
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
    spec = mini_spec.MiniSpec.load()
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
    spec = mini_spec.MiniSpec.load()
    keys = spec.paper_keys({"model": "resnet20", "epochs": 3, "width": 0.5, "method": "dense"})
    assert keys == {"model": "resnet56", "epochs": 300, "width": 2.0, "method": "dense"}


@needs_fmnist
def test_fashion_mnist_is_written_in_cifar_format_balanced_padded_black(tmp_path):
    """The miniature's data: real Fashion-MNIST images, 32 × 32 × 3 with three equal channels and
    a black 2-pixel border, the first of each class, read back by the CIFAR readers."""
    import torch

    from sparsebench.data import cifar, find_root, idx
    from sparsebench.paper import fashion_cifar

    source = find_root("fashion_mnist")
    fashion_cifar.write_cifar10_format(tmp_path / "c10", source, train=95, test=20)
    fashion_cifar.write_cifar100_format(tmp_path / "c100", source, train=30, test=10)
    x, y, xt, yt = cifar.load_cifar10(tmp_path / "c10")
    assert x.shape == (95, 3, 32, 32) and xt.shape == (20, 3, 32, 32)
    assert torch.bincount(y, minlength=10).tolist() == [10] * 5 + [9] * 5
    assert torch.bincount(yt, minlength=10).tolist() == [2] * 10
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert int(x[:, :, :2].max()) == int(x[:, :, :, -2:].max()) == 0        # the black border
    raw_x, raw_y, _, _ = idx.load_mnist_like(source)
    first = int(torch.nonzero(raw_y == int(y[0]))[0])                  # the class's first image
    assert torch.equal(x[0, 0, 2:30, 2:30], raw_x[first, 0])
    x100, y100, _, _ = cifar.load_cifar100(tmp_path / "c100")
    assert x100.shape == (30, 3, 32, 32) and set(y100.tolist()) == set(range(10))
    assert (tmp_path / "c10" / cifar.CIFAR10_DIR / fashion_cifar.MARKER).is_file()


@pytest.mark.slow
@needs_fmnist
def test_tiny_miniature_writes_every_artifact_and_the_index(tmp_path, monkeypatch, capsys):
    import matplotlib

    matplotlib.use("Agg")
    index = mini.run(tmp_path, tiny=True, workers=2)
    # It talks while it trains: a line per finished run with done/total, failures and ETA.
    out = capsys.readouterr().out
    ended = [l for l in out.splitlines() if " runs, " in l and l.startswith("[")]
    total = int(ended[0].split("/")[1].split()[0])
    assert len(ended) == total and ended[0].startswith(f"[1/{total} runs, 0 failed, ETA ")
    assert ended[-1].startswith(f"[{total}/{total} runs, 0 failed, all done] ")
    assert "sparsity" in ended[0] and "seed" in ended[0] and ": completed, test_acc" in ended[0]
    top = index.parent
    text = index.read_text()
    assert text.startswith("# The GSE paper's artifacts — MINIATURE")
    assert "This is a miniature of the paper, not its results" in text
    assert "FMNIST as CIFAR-100 (10 classes)" in text
    assert "Data: Fashion-MNIST, not CIFAR." in text and "128 training and 64 test" in text
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
