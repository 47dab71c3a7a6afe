"""Every bad input stops before anything is written: exit 2, one line naming the field.

One parametrized test over inputs that used to end in a traceback, a ``failed`` run, a silent
wrong outcome or a path outside the results folder (issue 16), plus the inputs that always
stopped; each case asserts the exit code, the line and that no run folder exists afterwards.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sparsebench import data
from sparsebench.storage import paths
from sparsebench.sweep import main as sweep_main
from sparsebench.train import main as train_main

from .conftest import REPO, needs_fmnist

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")


def _file(text: bytes):
    """A case whose config file holds ``text`` (written into the test's folder)."""
    return ("file", text)


# (arguments after the config, or a config file's bytes, and what the one line must contain)
CASES = {
    # the environment, checked in the same pass as the fields
    "batch larger than the training set": (["data.batch_size=70000"], "data.batch_size: got 70000"),
    "batch larger than the subset": (["data.train_subset=100", "data.batch_size=128"],
                                     "data.batch_size: got 128, more than the data.train_subset=100"),
    "cuda without cuda": (["device=cuda"], "device: got 'cuda' but torch sees no CUDA device"),
    "data.root missing": (["data.root=/nonexistent/fmnist"], "data.root: /nonexistent/fmnist does not exist"),
    "data.root without the data": (["data.root={tmp}"], "data.root: data set 'fashion_mnist' not found"),
    "data set not installed": (["data.name=cifar100", "model.name=resnet20"],
                               "data.name: data set 'cifar100' not found"),
    "width leaves no unit": (["model.width=0.001"], "model.width: got 0.001: layer net.3"),
    "conv width leaves no channel": (["model.name=lenet5", "model.width=0.01"], "model.width: got 0.01"),
    # non-finite numbers anywhere a number is expected
    "lr inf": (["optim.lr=.inf"], "optim.lr: got inf; allowed: a finite number"),
    "lr nan": (["optim.lr=.nan"], "optim.lr: got nan; allowed: a finite number"),
    "lr overflowing": (["optim.lr=1e999"], "optim.lr: got '1e999'; allowed: a finite number"),
    "weight decay -inf": (["optim.weight_decay=-.inf"], "optim.weight_decay: got -inf"),
    "density nan": (["density=.nan"], "density: got nan"),
    "method parameter inf": (["method.name=set", "method.drop_fraction=.inf"],
                             "method.drop_fraction: got inf"),
    "betas with nan": (["optim.name=adamw", "optim.betas=[0.9, .nan]"], "optim.betas[1]: got nan"),
    "milestone inf": (["optim.schedule=step", "optim.milestones=[0.5, .inf]"],
                      "optim.milestones[1]: got inf"),
    "label smoothing nan": (["optim.label_smoothing=.nan"], "optim.label_smoothing: got nan"),
    # nothing escapes the results folder
    "sweep with ..": (["sweep=../x"], "sweep: got '../x'; allowed: a folder name"),
    "sweep absolute": (["sweep=/tmp/elsewhere"], "sweep: got '/tmp/elsewhere'"),
    "sweep with a separator": (["sweep=a/b"], "sweep: got 'a/b'"),
    "sweep is ..": (["sweep=.."], "sweep: got '..'"),
    "sweep hidden": (["sweep=.x"], "sweep: got '.x'"),
    # a key given twice
    "key twice on the command line": (["density=0.1", "density=0.2"],
                                      "density: given twice on the command line (density=0.1 and density=0.2)"),
    "section and field on the command line": (["optim={lr: 0.2}", "optim.lr=0.1"],
                                              "optim.lr: given twice on the command line"),
    "key twice in the file": (_file(b"density: 0.1\nepochs: 2\ndensity: 0.2\n"),
                              "density: given twice in {config} (lines 1 and 3)"),
    "nested key twice in the file": (_file(b"optim:\n  lr: 0.1\n  lr: 0.2\n"),
                                     "lr: given twice in {config} (lines 2 and 3)"),
    # files that are not what they seem
    "file not UTF-8": (_file(b"density: 0.1\nmethod: {name: st\xe4tic}\n"),
                       "{config}: not UTF-8 text (byte 0xe4 at offset 30)"),
    "file empty": (_file(b""), "{config}: empty file"),
    "file of comments only": (_file(b"# nothing here\n"), "{config}: empty file"),
    "file not a mapping": (_file(b"- density\n"), "{config}: expected a mapping"),
    "file not YAML": (_file(b"density: [0.1\n"), "{config}: not valid YAML"),
    "file missing": (["--config-missing"], "config file not found"),
    # ordinary field checks, for the record
    "epochs zero": (["epochs=0"], "epochs: got 0; allowed: a number > 0"),
    "unknown method": (["method.name=nope"], "method.name: unknown method 'nope'"),
    "unknown field": (["optim.lrr=0.1"], "optim.lrr: unknown field"),
    "negative width": (["model.width=-1"], "model.width: got -1.0"),
    "batch zero": (["data.batch_size=0"], "data.batch_size: got 0"),
    # the MLP's hidden sizes and the crop's padding (issue 26)
    "hidden sizes for a model without them": (["model.name=lenet5", "model.hidden=[512, 512]"],
                                              "model.hidden: model 'lenet5' takes no hidden; "
                                              "allowed for: mlp"),
    "hidden size zero": (["model.hidden=[512, 0]"], "model.hidden: got [512, 0]; allowed: null "
                                                    "or a non-empty list of integers > 0"),
    "hidden sizes empty": (["model.hidden=[]"], "model.hidden: got []"),
    "hidden size not a list": (["model.hidden=512"], "model.hidden: expected list or null"),
    "pad value unknown": (["data.pad_value=white"], "data.pad_value: got 'white'; allowed: black, mean"),
}


@pytest.fixture
def no_cuda_no_other_data(monkeypatch, tmp_path):
    """The same outcome on any machine: no CUDA device, and data sets only where the test says."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    system = tmp_path / "datasets"
    system.mkdir()
    fmnist = data.find_root("fashion_mnist")
    (system / "fashion-mnist").symlink_to(fmnist.resolve())
    monkeypatch.setattr(data, "SYSTEM_DIR", system)
    monkeypatch.delenv("SPARSEBENCH_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # ./data is searched: an empty folder here


def _no_run_folder() -> bool:
    root = paths.results_root()
    return not root.exists() or not any(p.name == "runs" for p in root.rglob("*"))


@needs_fmnist
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(name, tmp_path, capsys,
                                                            no_cuda_no_other_data):
    args, expected = CASES[name]
    config = BASE
    empty = tmp_path / "empty"
    empty.mkdir()
    if isinstance(args, tuple):
        config = str(tmp_path / "config.yaml")
        Path(config).write_bytes(args[1])
        args = []
    elif args == ["--config-missing"]:
        config, args = str(tmp_path / "missing.yaml"), []
    args = [a.replace("{tmp}", str(empty)) for a in args]
    with pytest.raises(SystemExit) as exit_:
        train_main([config, *args])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    assert expected.replace("{config}", config) in lines[0], lines[0]
    if expected.startswith("{config}"):  # a message about the whole file names it once
        assert lines[0].count(config) == 1, lines[0]
    assert _no_run_folder()


def test_at_least_thirty_cases():
    assert len(CASES) >= 30


@needs_fmnist
def test_sweep_checks_every_cell_before_submitting_any(write_sweep, capsys, no_cuda_no_other_data):
    # the last cell needs a data set that is not installed: nothing may run, not even the first
    path = write_sweep("mixed", {"base": BASE, "overrides": {"epochs": 1},
                                 "grid": {"data.name": ["fashion_mnist", "cifar100"]}})
    with pytest.raises(SystemExit) as exit_:
        sweep_main([str(path), "--executor", "inline"])
    assert exit_.value.code == 2
    line, = capsys.readouterr().err.strip().splitlines()
    assert "cell {data.name: cifar100}: data.name: data set 'cifar100' not found" in line
    assert _no_run_folder()


@needs_fmnist
@pytest.mark.parametrize("args, expected", [
    (["data.batch_size=100000"], "data.batch_size: got 100000"),
    (["device=cuda"], "device: got 'cuda'"),
    (["epochs=1", "epochs=2"], "epochs: given twice on the command line"),
])
def test_sweep_rejects_environment_problems_and_duplicate_overrides(
        args, expected, write_sweep, capsys, no_cuda_no_other_data):
    path = write_sweep("envcheck", {"base": BASE, "grid": {"seed": [0, 1]}})
    with pytest.raises(SystemExit) as exit_:
        sweep_main([str(path), "--executor", "inline", *args])
    assert exit_.value.code == 2
    line, = capsys.readouterr().err.strip().splitlines()
    assert expected in line
    assert _no_run_folder()


def test_sweep_file_that_is_not_utf8_or_names_a_path(tmp_path, capsys):
    bad = tmp_path / "sweeps" / "latin.yaml"
    bad.parent.mkdir()
    bad.write_bytes(b"name: latin\ngrid: {seed: [0]}\ndescription: caf\xe9\n")
    with pytest.raises(SystemExit) as exit_:
        sweep_main([str(bad), "--dry-run"])
    assert exit_.value.code == 2
    assert "not UTF-8 text (byte 0xe9" in capsys.readouterr().err
    dots = tmp_path / "sweeps" / "...yaml"  # stem ".."
    dots.write_text("name: ..\ngrid: {seed: [0]}\n")
    with pytest.raises(SystemExit) as exit_:
        sweep_main([str(dots), "--dry-run"])
    assert exit_.value.code == 2
    assert "name: got '..'; allowed: a folder name" in capsys.readouterr().err
    assert _no_run_folder()


def test_paths_refuse_names_that_leave_the_results_root(tmp_path):
    for name in ("../x", "/abs", "a/b", "..", ".", "", "a\\b"):
        with pytest.raises(paths.OutsideResults):
            paths.sweep_dir(name, tmp_path)
    with pytest.raises(paths.OutsideResults):
        paths.run_dir("ok", "../../x", tmp_path)
    # a symbolic link inside the root that points outside it is caught too
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked").symlink_to(outside)
    with pytest.raises(paths.OutsideResults, match="lies outside the results folder"):
        paths.sweep_dir("linked", root)
    assert paths.run_dir("fine", "abc123", root) == root / "fine" / "runs" / "abc123"


def test_cifar_reader_says_it_reads_pickles_from_trusted_files_only(tmp_path):
    from sparsebench.data import cifar

    folder = tmp_path / cifar.CIFAR10_DIR
    folder.mkdir()
    for name in cifar.CIFAR10_TRAIN + cifar.CIFAR10_TEST:
        (folder / name).write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="read with pickle, which runs code from the file: "
                                         "use only the archives of a source you trust"):
        cifar.load_cifar10(tmp_path)
