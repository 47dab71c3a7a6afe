"""Checkpoints: two generations, safe loading, and a damaged one moved aside, never sticking."""
from __future__ import annotations

import pathlib

import pytest
import torch

from sparsebench.storage import checkpoints, paths
from sparsebench import resolve
from sparsebench.config.schema import run_id
from sparsebench.training import train

from .conftest import REPO, needs_fmnist

pytestmark = [needs_fmnist, pytest.mark.timeout(240)]

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")
SMALL = ["data.train_subset=1024", "data.batch_size=64", "epochs=3", "progress=false",
         "method.name=set", "density=0.2"]


def _cfg(*extra: str, sweep: str = "adhoc"):
    return resolve.load(BASE, SMALL + [f"sweep={sweep}", *extra])


def _folder(cfg) -> pathlib.Path:
    return paths.run_dir(cfg.sweep, run_id(cfg))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The result of the same run trained in one go (in a results folder of its own)."""
    import os

    old = os.environ.get("SPARSEBENCH_RESULTS")
    os.environ["SPARSEBENCH_RESULTS"] = str(tmp_path_factory.mktemp("reference"))
    try:
        result = train(_cfg())
    finally:
        if old is None:
            del os.environ["SPARSEBENCH_RESULTS"]
        else:
            os.environ["SPARSEBENCH_RESULTS"] = old
    assert result["status"] == "completed"
    return result


def _same_outcome(result: dict, reference: dict) -> None:
    assert result["status"] == "completed"
    for key in ("final_test_acc", "final_train_loss", "steps", "actual_density"):
        assert result[key] == reference[key], key


def test_two_generations_are_kept_and_removed_at_the_end(uninterrupted):
    cfg = _cfg()
    folder = _folder(cfg)
    assert train(cfg, stop_after_epochs=1)["status"] == "interrupted"
    assert (folder / paths.CHECKPOINT).is_file() and not (folder / paths.CHECKPOINT_PREVIOUS).exists()
    assert train(cfg, stop_after_epochs=1)["status"] == "interrupted"
    current = checkpoints.read(folder / paths.CHECKPOINT)
    previous = checkpoints.read(folder / paths.CHECKPOINT_PREVIOUS)
    assert (current["progress"]["epoch"], previous["progress"]["epoch"]) == (2, 1)
    _same_outcome(train(cfg), uninterrupted)
    assert not (folder / paths.CHECKPOINT).exists()
    assert not (folder / paths.CHECKPOINT_PREVIOUS).exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "not a dict"])
def test_damaged_checkpoint_is_moved_aside_and_the_previous_generation_used(
        damage, uninterrupted, capsys):
    cfg = _cfg()
    folder = _folder(cfg)
    train(cfg, stop_after_epochs=2)
    path = folder / paths.CHECKPOINT
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        torch.save([1, 2, 3], path)
    capsys.readouterr()
    result = train(cfg)
    _same_outcome(result, uninterrupted)  # epoch 2 trained again from epoch 1: the same run
    aside, = folder.glob(f"{paths.CHECKPOINT}.corrupt-*")
    err = capsys.readouterr().err
    assert f"warning: checkpoint {path} cannot be used" in err and aside.name in err
    assert f"resuming from the previous checkpoint {paths.CHECKPOINT_PREVIOUS}" in err
    log = (folder / paths.LOG).read_text()
    assert aside.name in log and "resumed from checkpoint after epoch 1" in log


def test_checkpoint_of_another_config_without_a_previous_one_restarts_from_scratch(
        uninterrupted, capsys):
    cfg = _cfg()
    other = _cfg("model.width=0.5", sweep="other")
    train(other, stop_after_epochs=1)
    folder = _folder(cfg)
    folder.mkdir(parents=True)
    # Only the classifier's bias has the same shape in both: a half-applied load would leave
    # it behind if the fresh state were not put back before training from scratch.
    (folder / paths.CHECKPOINT).write_bytes((_folder(other) / paths.CHECKPOINT).read_bytes())
    result = train(cfg)
    _same_outcome(result, uninterrupted)
    assert len(list(folder.glob(f"{paths.CHECKPOINT}.corrupt-*"))) == 1
    err = capsys.readouterr().err
    assert "size mismatch" in err and "training from scratch" in err


class _Planted:
    """An object whose unpickling would create a file: what a malicious checkpoint does."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_planted_checkpoint_cannot_run_code(tmp_path, uninterrupted, capsys):
    marker = tmp_path / "code-ran"
    cfg = _cfg()
    folder = _folder(cfg)
    folder.mkdir(parents=True)
    torch.save({"model": _Planted(marker)}, folder / paths.CHECKPOINT)
    with pytest.raises(Exception):
        checkpoints.read(folder / paths.CHECKPOINT)
    result = train(cfg)
    assert not marker.exists()
    _same_outcome(result, uninterrupted)
    assert "Unpickl" in capsys.readouterr().err  # weights_only refused the global


def test_failed_write_keeps_the_last_good_generation(tmp_path, monkeypatch):
    import errno

    from sparsebench.storage import atomic

    path = tmp_path / paths.CHECKPOINT
    checkpoints.save(path, {"epoch": 1})
    checkpoints.save(path, {"epoch": 2})

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(atomic.WriteError, match=f"No space left on device: cannot write {path}"):
        checkpoints.save(path, {"epoch": 3})
    monkeypatch.undo()
    assert checkpoints.read(path) == {"epoch": 2}
    assert checkpoints.read(checkpoints.previous_of(path)) == {"epoch": 1}
    # no temporary file left behind
    assert {p.name for p in tmp_path.iterdir()} == {paths.CHECKPOINT, paths.CHECKPOINT_PREVIOUS}


@pytest.mark.parametrize("hard_links", [True, False])
def test_a_save_stopped_before_the_new_file_lands_leaves_a_usable_checkpoint(
        tmp_path, monkeypatch, hard_links):
    """Ctrl-C (or a scheduler's SIGTERM) between keeping the older generation and renaming the
    new file into place: with hard links ``checkpoint.pt`` is still there, unchanged; without
    them (a file system that has none) it is the previous generation that a resume finds."""
    from sparsebench.storage import atomic

    path = tmp_path / paths.CHECKPOINT
    checkpoints.save(path, {"epoch": 1})
    checkpoints.save(path, {"epoch": 2})
    replace = atomic.os.replace

    def interrupted(src, dst):
        if str(dst) == str(path):
            raise KeyboardInterrupt
        replace(src, dst)

    def no_links(src, dst):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(atomic.os, "replace", interrupted)
    if not hard_links:
        monkeypatch.setattr(atomic.os, "link", no_links)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(path, {"epoch": 3})
    monkeypatch.undo()
    assert checkpoints.read(checkpoints.previous_of(path)) == {"epoch": 2}
    if hard_links:
        assert checkpoints.read(path) == {"epoch": 2}
        assert {p.name for p in tmp_path.iterdir()} == {paths.CHECKPOINT, paths.CHECKPOINT_PREVIOUS}
    else:
        assert not path.exists()
    state = {}
    assert checkpoints.load(path, lambda: {}, state.update) is not None
    assert state == {"epoch": 2}
