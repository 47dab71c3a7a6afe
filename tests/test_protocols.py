"""Named protocols: ``protocol: gse_paper`` (protocols/gse_paper.yaml) fills in what a config
leaves unset, ``own`` keeps every method's own defaults; the choice is recorded and shown."""
from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from sparsebench import methods, resolve, sweep
from sparsebench.storage import paths
from sparsebench.launch import spec as sweep_spec
from sparsebench.config.schema import ConfigError

from .conftest import REPO, needs_fmnist

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")
DYNAMIC = {"set", "rigl", "gse"}


def test_cifar100_dry_run_shows_the_gse_protocol_for_each_method(capsys):
    # (CIFAR-100 is not installed here: the data check is not what this test is about)
    assert sweep.main(["cifar100_densities", "--dry-run", "--executor", "inline",
                       "--skip-data-check"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("  [")]
    by_method = {}
    for line in lines:
        protocol, rest = line.strip()[1:].split("] ", 1)
        assert protocol == "gse_paper"
        by_method.setdefault(rest.split(":")[0].split(" |")[0], []).append(rest)
    assert set(by_method) == {"dense", "static", "snip", "magnitude", "set", "rigl", "gse"}
    for name, rows in by_method.items():
        for row in rows:
            assert "sparsity.distribution=er_flat sparsity.init=active_fan_in amp=false" in row
            if name in DYNAMIC:
                for text in ("drop_fraction=0.2", "interval=1000", "end=0.6", "scope=global",
                             "drop_schedule=cosine"):
                    assert text in row, (name, text)
            if name in ("set", "rigl"):
                assert "regrow_dropped=false" in row
            if name in ("rigl", "gse", "snip"):
                assert "score_samples_per_class=10" in row
    assert "ramp=cosine" in by_method["magnitude"][0] and "frequency=1000" in by_method["magnitude"][0]
    assert len(by_method["gse"]) == 3          # uniform, grabo, graest


def test_own_sweeps_give_every_method_its_own_defaults():
    for name in ("cifar100_densities_own", "cifar10_densities_own", "imagenet_resnet50_own"):
        for cell in sweep_spec.expand(name).cells:
            cfg = cell.config
            cls = methods.get(cfg.method.name)
            label = cell.label.get("method")
            given = {k: v for k, v in label.items() if k != "name"} if isinstance(label, dict) else {}
            own = dataclasses.asdict(cls.Params(**given))
            assert cfg.protocol == "own" and cfg.method.params == own
            assert cfg.sparsity.init == "model" and cfg.amp == "auto" and cfg.tf32 is False
            assert cfg.sparsity.distribution == cls.default_distribution


def test_the_config_wins_over_the_protocol_and_auto_defers_to_it():
    cfg = resolve.load(BASE, ["protocol=gse_paper", "method.name=gse", "method.interval=100"])
    assert cfg.method.params["interval"] == 100                  # set in the config: kept
    assert cfg.method.params["score_samples_per_class"] == 10    # unset: the protocol's
    assert cfg.sparsity.distribution == "er_flat"                # `auto` in the file: deferred
    cfg = resolve.load(BASE, ["protocol=gse_paper", "method.name=rigl", "sparsity.distribution=erk",
                              "amp=bf16"])
    assert (cfg.sparsity.distribution, cfg.amp, cfg.sparsity.init) == ("erk", "bf16", "active_fan_in")
    own = resolve.load(BASE, ["method.name=rigl"])
    assert own.protocol == "own" and own.method.params["scope"] == "layer"
    assert own.sparsity.distribution == "erk" and own.sparsity.init == "model"


def test_the_resolved_config_is_a_fixed_point():
    """config.yaml holds the resolved values: resolving it again changes nothing (same run)."""
    from sparsebench.config.schema import run_id, to_dict

    cfg = resolve.load(BASE, ["protocol=gse_paper", "method.name=set"])
    again = resolve.resolve(to_dict(cfg))
    assert to_dict(again) == to_dict(cfg) and run_id(again) == run_id(cfg)
    assert run_id(cfg) != run_id(resolve.load(BASE, ["method.name=set"]))


@pytest.fixture
def protocol_dir(tmp_path, monkeypatch):
    folder = tmp_path / "protocols"
    folder.mkdir()
    monkeypatch.setenv("SPARSEBENCH_PROTOCOLS_PATH", str(folder))

    def write(name, spec):
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, **spec}))
    return write


def test_a_method_joins_a_protocol_with_yaml_only(protocol_dir):
    protocol_dir("mine", {"run": {"sparsity": {"init": "active_fan_in"}}, "methods": {"static": {}}})
    with pytest.raises(ConfigError) as exc:
        resolve.load(BASE, ["protocol=mine", "method.name=set"])
    assert exc.value.field == "method.name" and "mine" in str(exc.value) and "static" in str(exc.value)
    protocol_dir("mine", {"run": {"sparsity": {"init": "active_fan_in"}},
                          "methods": {"static": {}, "set": {"drop_fraction": 0.1}}})
    cfg = resolve.load(BASE, ["protocol=mine", "method.name=set"])
    assert cfg.method.params["drop_fraction"] == 0.1 and cfg.sparsity.init == "active_fan_in"


@pytest.mark.parametrize("spec, text", [
    ({"methods": {"nosuch": {}}}, "methods.nosuch"),
    ({"methods": {"rigl": {"drop_fracton": 0.2}}}, "methods.rigl.drop_fracton"),
    ({"methods": {"rigl": {"scope": "everywhere"}}}, "methods.rigl.scope"),
    ({"run": {"sparsity.distribution": "erk2"}, "methods": {}}, "sparsity.distribution"),
    ({"run": {"method.name": "gse"}, "methods": {}}, "run.method.name"),
    ({"unknown_key": 1}, "unknown_key"),
    ({"methods": {"static": {"run": {"optim.warmup_epochs": -1}}}}, "methods.static.run.optim.warmup_epochs"),
    ({"methods": {"static": {"run": {"method.drop_fraction": 0.1}}}}, "methods.static.run.method"),
    ({"methods": {"static": {"run": 5}}}, "methods.static.run"),
    ({"method_run": {"static": {}}, "methods": {}}, "method_run: unknown field"),
])
def test_a_bad_protocol_file_is_an_error_naming_it(protocol_dir, spec, text, capsys):
    protocol_dir("bad", spec)
    with pytest.raises(ConfigError) as exc:
        resolve.load(BASE, ["protocol=bad", "method.name=static"])
    assert exc.value.field == "protocol"
    assert "protocols/bad.yaml" in str(exc.value) and text in str(exc.value)
    from sparsebench.train import main as train_main

    with pytest.raises(SystemExit) as code:
        train_main([BASE, "protocol=bad"])
    assert code.value.code == 2 and "protocol" in capsys.readouterr().err


def test_the_shipped_protocol_lists_every_compared_method():
    from sparsebench import protocols

    spec = protocols.load("gse_paper")
    assert {"dense", "static", "snip", "magnitude", "set", "rigl", "gse"} <= set(spec.methods)
    assert spec.run["amp"] is False and spec.run["sparsity.distribution"] == "er_flat"
    assert spec.run["tf32"] is True and spec.run["cudnn_benchmark"] is True  # as training.py
    assert "gse_paper" in protocols.available() and "own" in protocols.available()


def test_a_method_s_own_run_settings_beat_the_protocol_s_and_the_config_beats_both(protocol_dir):
    protocol_dir("mine", {"run": {"optim": {"warmup_epochs": 1}, "sparsity.init": "active_fan_in"},
                          "methods": {"static": {},
                                      "set": {"run": {"optim.warmup_epochs": 3,
                                                      "sparsity": {"init": "model"}},
                                              "drop_fraction": 0.1}}})
    base = ["protocol=mine", "optim.warmup_epochs=auto", "sparsity.init=auto"]
    static = resolve.load(BASE, [*base, "method.name=static"])
    assert static.optim.warmup_epochs == 1 and static.sparsity.init == "active_fan_in"
    set_ = resolve.load(BASE, [*base, "method.name=set"])
    assert set_.optim.warmup_epochs == 3 and set_.sparsity.init == "model"
    assert set_.method.params["drop_fraction"] == 0.1 and "run" not in set_.method.params
    mine = resolve.load(BASE, ["protocol=mine", "method.name=set", "sparsity.init=active_fan_in"])
    assert mine.optim.warmup_epochs == 0 and mine.sparsity.init == "active_fan_in"  # the config's


def test_the_gse_paper_protocol_runs_each_method_as_its_authors_script(capsys):
    """No warm-up but GSE's, Lottery's fixed per-round sparsities, Top-KAST with PyTorch's init,
    the unsquared norm penalty, no optimizer decay and 21 exploration epochs: in the resolved
    configs and in what --dry-run shows for each method."""
    base = str(REPO / "configs" / "cifar10_resnet56.yaml")
    got = {m: resolve.load(base, [f"method.name={m}"]) for m in
           ("dense", "static", "snip", "magnitude", "set", "rigl", "gse", "lottery", "grasp",
            "synflow", "topkast")}
    assert {m: c.optim.warmup_epochs for m, c in got.items() if c.optim.warmup_epochs} == {"gse": 5}
    assert got["lottery"].method.params["round_densities"] == [0.5, 0.25, 0.1, 0.05, 0.02]
    top = got["topkast"]
    assert top.sparsity.init == "model" and top.method.params["penalty"] == "norm"
    assert top.method.params["explore_epochs"] == 21 and top.optim.decay_norm_and_bias is False
    assert all(c.sparsity.init == "active_fan_in" for m, c in got.items() if m != "topkast")
    assert sweep.main(["paper_table1_baselines", "--dry-run", "--executor", "inline",
                       "--skip-data-check"]) == 0
    rows = {line.strip().split("] ", 1)[1].split(":")[0]: line
            for line in capsys.readouterr().out.splitlines() if line.startswith("  [gse_paper]")}
    assert "penalty=norm" in rows["topkast"] and "sparsity.init=model" in rows["topkast"]
    assert "optim.decay_norm_and_bias=false" in rows["topkast"]
    # the GSE authors' Top-KAST (issue 32): what --dry-run shows is in effect
    for shown in ("entering_weight=stale", "keep_momentum_outside_b=true", "sets=quantile"):
        assert shown in rows["topkast"]
    assert "optim.warmup_epochs=0" in rows["lottery"] and "round_densities=[0.5, 0.25" in rows["lottery"]
    # the own sweeps keep the recipe's 5 warm-up epochs for every method
    own = {c.config.optim.warmup_epochs for c in sweep_spec.expand("cifar10_densities_own").cells}
    assert own == {5.0}


@needs_fmnist
def test_the_protocol_is_recorded_in_config_yaml_and_result_json():
    from sparsebench.training import run_folder, train

    cfg = resolve.load(BASE, ["protocol=gse_paper", "method.name=gse", "method.interval=5",
                              "data.train_subset=1024", "epochs=1", "progress=false"])
    result = train(cfg)
    assert result["status"] == "completed"
    assert (result["protocol"], result["init"], result["distribution"]) == (
        "gse_paper", "active_fan_in", "er_flat")
    written = yaml.safe_load((run_folder(cfg) / paths.CONFIG).read_text())
    assert written["protocol"] == "gse_paper" and written["method"]["score_samples_per_class"] == 10
    assert json.loads((run_folder(cfg) / paths.RESULT).read_text())["protocol"] == "gse_paper"
