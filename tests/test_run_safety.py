"""One writer per run, full and read-only disks, Ctrl-C: each ends in one clear line."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
import time

import pytest

from sparsebench.storage import atomic, locks, paths
from sparsebench import resolve
from sparsebench.config.schema import run_id
from sparsebench.train import main as train_main

from .conftest import REPO, needs_fmnist

pytestmark = [needs_fmnist, pytest.mark.timeout(180)]

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")
SMALL = ["data.train_subset=512", "data.batch_size=64", "epochs=2", "progress=false"]


def _folder(*extra):
    cfg = resolve.load(BASE, SMALL + list(extra))
    return paths.run_dir(cfg.sweep, run_id(cfg))


# ---- one run, one writer -------------------------------------------------------------------

def test_second_process_of_the_same_run_is_refused_and_touches_nothing(capsys):
    folder = _folder()
    folder.mkdir(parents=True)
    with open(folder / paths.RUN_LOCK, "w") as held:  # another process trains the run
        held.write("pid 4242 on node7 since 2026-12-01T09:00:00+00:00\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        assert train_main([BASE, *SMALL]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"error: run {folder.name} of sweep adhoc is being trained by "
                                  "pid 4242 on node7")
        assert sorted(p.name for p in folder.iterdir()) == [paths.RUN_LOCK]
    assert train_main([BASE, *SMALL]) == 0  # released: it trains


def test_stale_lock_of_a_dead_process_is_taken_over(capsys):
    folder = _folder()
    folder.mkdir(parents=True)
    (folder / paths.RUN_LOCK).write_text("pid 999999 on gone-host since 2026-01-01T00:00:00+00:00\n")
    assert train_main([BASE, *SMALL]) == 0
    log = (folder / paths.LOG).read_text()
    assert "took over the lock of a process that is gone (pid 999999 on gone-host" in log
    assert json.loads((folder / paths.RESULT).read_text())["status"] == "completed"
    assert not (folder / paths.RUN_LOCK).exists()  # a finished run folder holds no lock file


def test_lock_waits_for_its_holder_when_asked(tmp_path):
    path = tmp_path / "x.lock"
    released = []

    def holder():
        with locks.hold(path, str):
            time.sleep(0.5)
        released.append(time.monotonic())

    thread = threading.Thread(target=holder)
    thread.start()
    time.sleep(0.1)
    with pytest.raises(locks.Busy) as busy:
        with locks.hold(path, lambda h: f"held by {h}"):
            pass
    assert str(busy.value).startswith(f"held by pid {os.getpid()} on ")
    with locks.hold(path, str, wait_s=10):
        assert released  # got it only once the holder let go
    thread.join()


# ---- full disk, read-only folder -----------------------------------------------------------

def _fail_writes(monkeypatch, code: int, matching: str):
    """Make every atomic write whose target name contains ``matching`` fail with ``code``."""
    real_fsync = os.fsync

    def fsync(fd):
        if matching in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(code, os.strerror(code))
        return real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "No space left on device"),
                                         (errno.EROFS, "Read-only file system")])
def test_full_disk_at_the_checkpoint_names_it_in_the_last_line_and_the_result(
        code, words, monkeypatch, capsys):
    folder = _folder()
    _fail_writes(monkeypatch, code, paths.CHECKPOINT)
    assert train_main([BASE, *SMALL]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"error: {words}: cannot write {folder / paths.CHECKPOINT}"
    result = json.loads((folder / paths.RESULT).read_text())
    assert result["status"] == "failed"
    assert result["error"] == f"{words}: cannot write {folder / paths.CHECKPOINT}"
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_full_disk_for_every_file_still_ends_in_one_clear_line(monkeypatch, capsys):
    folder = _folder()
    _fail_writes(monkeypatch, errno.ENOSPC, "")  # config.yaml, metrics, result.json: all fail
    assert train_main([BASE, *SMALL]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"error: No space left on device: cannot write {folder / paths.CONFIG}"
    assert not (folder / paths.RESULT).exists() and not (folder / paths.CONFIG).exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_log_append_on_a_full_disk_is_a_write_error(tmp_path, monkeypatch):
    import builtins

    def full_open(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(args[0]))

    monkeypatch.setattr(builtins, "open", full_open)
    with pytest.raises(atomic.WriteError, match=f"No space left on device: cannot write {tmp_path}"):
        atomic.append_text(tmp_path / "log", "x\n")


# ---- Ctrl-C --------------------------------------------------------------------------------

def test_ctrl_c_in_train_is_one_line_and_exit_130(monkeypatch, capsys):
    from sparsebench import training

    def interrupted(self, stop_after_epochs=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(training.Trainer, "run", interrupted)
    assert train_main([BASE, *SMALL]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"interrupted: run {_folder()} stopped")
    assert "Traceback" not in err[0]
