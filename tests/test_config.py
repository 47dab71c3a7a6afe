"""Config: YAML + overrides resolve to validated dataclasses; bad input exits 2 naming the field."""
from __future__ import annotations

import subprocess
import sys

import pytest

from sparsebench import resolve
from sparsebench.config.schema import ConfigError, run_id, to_dict
from sparsebench.config.files import apply_overrides
from sparsebench.train import main as train_main

from .conftest import REPO

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")


def test_overrides_resolve_into_typed_fields():
    cfg = resolve.load(BASE, ["method.name=static", "density=0.05", "optim.lr=0.05",
                              "data.batch_size=64", "sparsity.distribution=er"])
    assert cfg.method.name == "static" and cfg.density == 0.05
    assert cfg.optim.lr == 0.05 and isinstance(cfg.optim.lr, float)
    assert cfg.data.batch_size == 64
    assert cfg.sparsity.distribution == "er"


def test_scientific_notation_is_a_number_not_a_string():
    # PyYAML reads `1e-3` (no dot) as a string; a float field takes it as the number it is.
    cfg = resolve.load(BASE, ["optim.lr=1e-3", "optim.weight_decay=5E-4"])
    assert cfg.optim.lr == 1e-3 and cfg.optim.weight_decay == 5e-4
    with pytest.raises(ConfigError, match="optim.lr"):
        resolve.load(BASE, ["optim.lr=1e-3x"])


def test_auto_distribution_and_fixed_density_are_resolved():
    cfg = resolve.load(BASE, ["method.name=static"])
    assert cfg.sparsity.distribution == "erk"
    dense = resolve.load(BASE, ["method.name=dense", "density=0.05"])
    assert dense.density == 1.0  # dense trains every connection whatever the grid says


def test_run_id_is_stable_and_tracks_every_value():
    a = resolve.load(BASE, ["seed=1"])
    b = resolve.load(BASE, ["seed=1"])
    assert run_id(a) == run_id(b)
    assert run_id(a) != run_id(resolve.load(BASE, ["seed=2"]))
    assert run_id(a) != run_id(resolve.load(BASE, ["seed=1", "optim.momentum=0.8"]))
    # Defaults are hashed too: spelling out a default value changes nothing.
    assert run_id(a) == run_id(resolve.load(BASE, ["seed=1", "optim.gamma=0.1"]))
    # Where results go and whether a bar is shown do not change what is computed.
    assert run_id(a) == run_id(resolve.load(BASE, ["seed=1", "sweep=other", "progress=false"]))


def test_resolved_config_round_trips():
    cfg = resolve.load(BASE, ["density=0.2"])
    again = resolve.resolve(to_dict(cfg))
    assert to_dict(again) == to_dict(cfg) and run_id(again) == run_id(cfg)


@pytest.mark.parametrize("override, field", [
    ("density=0", "density"),
    ("density=1.5", "density"),
    ("density=abc", "density"),
    ("epochs=0", "epochs"),
    ("epochs=2.5", "epochs"),
    ("optim.name=adam", "optim.name"),
    ("optim.lr=-1", "optim.lr"),
    ("optim.momentum=1.0", "optim.momentum"),
    ("optim.schedule=linear", "optim.schedule"),
    ("optim.milestones=[0.5,1.5]", "optim.milestones"),
    ("sparsity.distribution=random", "sparsity.distribution"),
    ("sparsity.engine=gpu", "sparsity.engine"),
    ("data.name=svhn", "data.name"),
    ("data.batch_size=0", "data.batch_size"),
    ("model.name=resnet18", "model.name"),
    ("model.width=0", "model.width"),
    ("method.name=nope", "method.name"),
    ("method.drop_fraction=0.3", "method.drop_fraction"),  # static has no parameters
    ("device=tpu", "device"),
    ("nonsense=1", "nonsense"),
    ("optim.nonsense=1", "optim.nonsense"),
    ("seed=-1", "seed"),
    ("amp=maybe", "amp"),
])
def test_invalid_values_exit_2_naming_the_field(override, field, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        train_main([BASE, override])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f" {field}:" in err or err.startswith(f"error: {field}:")
    assert not (tmp_path / "results").exists()  # nothing ran, nothing written


def test_allowed_values_are_listed():
    with pytest.raises(ConfigError) as exc:
        resolve.load(BASE, ["optim.schedule=linear"])
    assert "cosine" in str(exc.value) and "step" in str(exc.value)


def test_missing_config_file_and_bad_override_syntax():
    with pytest.raises(ConfigError):
        resolve.load("does/not/exist.yaml")
    with pytest.raises(ConfigError):
        resolve.resolve(apply_overrides({}, ["density"]))


def test_cli_subprocess_exit_code_and_help():
    bad = subprocess.run([sys.executable, "-m", "sparsebench.train", BASE, "density=7"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "density" in bad.stderr
    ok = subprocess.run([sys.executable, "-m", "sparsebench.train", "--help"],
                        capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0 and "key=value" in ok.stdout
