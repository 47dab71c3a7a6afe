"""Runs that do what their label says (issue 32): result.json's ``mask_updates`` and ``dynamic``,
the schedule's count each dynamic method declares, and the warning for a dynamic method whose
schedule changes the topology fewer than twice (in ``--dry-run`` and in the run's log)."""
from __future__ import annotations

import math

import pytest

from sparsebench import methods, resolve, sweep
from sparsebench.config.schema import run_id
from sparsebench.storage import paths
from sparsebench.training import preflight, train

from .conftest import REPO, needs_fmnist

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")
# 512 examples in batches of 64: 8 steps per epoch, 16 in the run.
SMALL = ["data.train_subset=512", "data.batch_size=64", "epochs=2", "progress=false",
         "density=0.05", "tracking.tensorboard=false"]
DYNAMIC = {"set", "rigl", "gse", "topkast", "magnitude"}


def test_exactly_the_methods_whose_schedule_moves_the_topology_are_dynamic():
    assert {name for name in methods.available() if methods.get(name).dynamic} == DYNAMIC


# Each method with a schedule that fits the 16-step run, and the count its schedule makes.
RUNS = {
    "dense": (["method.name=dense"], 0),
    "static": (["method.name=static"], 0),
    "snip": (["method.name=snip"], 0),
    "set": (["method.name=set", "method.interval=3"], 5),              # after 3, 6, ..., 15
    "set-epochs": (["method.name=set"], 1),                           # end of epoch 1 only
    "rigl": (["method.name=rigl", "method.interval=3"], 3),           # 3, 6, 9 (end 0.75)
    "gse": (["method.name=gse", "method.interval=3"], 3),             # 3, 6, 9 (end 0.6)
    # before steps 1, 2, 3 (exploring: 4 steps), then 5, 10, 15
    "topkast": (["method.name=topkast", "method.explore_epochs=0.5", "method.interval=5"], 6),
    # t_0 = 1 prunes to d_i = 1 (no change), then t = 4, 7, 10 and t_end = 12
    "magnitude": (["method.name=magnitude", "method.frequency=3"], 4),
    "lottery": (["method.name=lottery", "method.rounds=2"], 2),       # before rounds 2 and 3
}


@needs_fmnist
@pytest.mark.parametrize("key", sorted(RUNS))
def test_mask_updates_counts_the_topology_changes_the_schedule_makes(key):
    extra, expected = RUNS[key]
    cfg = resolve.load(BASE, SMALL + extra + ["sweep=counts"])
    result = train(cfg)
    assert result["status"] == "completed"
    assert result["mask_updates"] == expected
    method = methods.get(cfg.method.name)
    assert result["dynamic"] is method.dynamic
    if method.dynamic:  # what the dry run and the log predict is what happened
        assert method.scheduled_mask_updates(method.Params(**cfg.method.params), total_steps=16,
                                             steps_per_epoch=8) == expected
        assert preflight.steps_per_epoch(cfg) == 8


def test_top_kast_count_matches_its_refresh_rule():
    cls = methods.get("topkast")
    for explore in (0.0, 0.5, 1.0, 3.0, 100.0):
        for interval in (0, 1, 4, 7, 1000):
            for total, per_epoch in ((1, 1), (16, 8), (30, 10), (97, 13)):
                params = cls.Params(explore_epochs=explore, interval=interval)
                method_like = type("M", (), {"explore_steps": math.ceil(explore * per_epoch),
                                              "interval": interval or per_epoch})
                brute = sum(cls.is_refresh(method_like, s) for s in range(total))
                assert cls.scheduled_mask_updates(params, total_steps=total,
                                                  steps_per_epoch=per_epoch) == brute


def test_magnitude_count_matches_its_pruning_steps():
    cls = methods.get("magnitude")
    for start, end, frequency, total in ((0.0, 0.6, 3, 20), (0.1, 0.8, 100, 128),
                                         (0.2, 0.5, 1, 40), (0.0, 1.0, 7, 50)):
        params = cls.Params(start=start, end=end, frequency=frequency)
        t0, t_end = cls.window(params, total)
        # a pruning step at t_0 ≥ 1 prunes to d_i = 1: nothing changes
        brute = sum(cls.pruning_step(t, t0, t_end, frequency) for t in range(1, total + 1)
                    if t != t0)
        assert cls.scheduled_mask_updates(params, total_steps=total, steps_per_epoch=10) == brute


@needs_fmnist
def test_gse_with_an_interval_longer_than_the_run_warns_in_its_log_and_updates_nothing(capsys):
    cfg = resolve.load(BASE, SMALL + ["method.name=gse", "sweep=long_interval"])  # ΔT 1000
    result = train(cfg)
    assert result["status"] == "completed"
    assert result["mask_updates"] == 0 and result["dynamic"] is True
    log = (paths.run_dir(cfg.sweep, run_id(cfg)) / paths.LOG).read_text()
    line = ("warning: gse: its schedule changes the topology 0 times in 16 steps (8 per epoch; "
            "method.interval=1000")
    assert line in log
    assert line in capsys.readouterr().err
    # A schedule that fits the run says nothing.
    fits = resolve.load(BASE, SMALL + ["method.name=gse", "method.interval=3", "sweep=short"])
    train(fits)
    assert "warning" not in (paths.run_dir(fits.sweep, run_id(fits)) / paths.LOG).read_text()


@needs_fmnist
def test_dry_run_warns_for_the_issues_example(capsys):
    """`sweep fmnist_smoke method.name=set,rigl,gse density=0.05 epochs=2 --dry-run`: 64 steps
    per epoch, 128 in all: RigL (ΔT 100, until 75 %) and GSE (ΔT 1000) never update, SET
    (end of every epoch, never after the last step) updates once."""
    code = sweep.main(["fmnist_smoke", "method.name=set,rigl,gse", "density=0.05", "epochs=2",
                       "--dry-run", "--executor", "inline"])
    assert code == 0
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 3
    assert any("gse: its schedule changes the topology 0 times in 128 steps" in w for w in warnings)
    assert any("rigl: its schedule changes the topology 0 times in 128 steps" in w for w in warnings)
    assert any("set: its schedule changes the topology 1 time in 128 steps" in w for w in warnings)
    # three epochs give SET two updates, and it is no longer warned about
    sweep.main(["fmnist_smoke", "method.name=set", "density=0.05", "epochs=3", "--dry-run",
                "--executor", "inline"])
    assert "warning: " not in capsys.readouterr().out


def test_failed_run_header_records_dynamic_and_no_updates():
    from sparsebench.training import result_header

    cfg = resolve.load(BASE, ["method.name=rigl"])
    header = result_header(cfg, "failed", "boom", "2026-01-01T00:00:00+00:00")
    assert header["dynamic"] is True and header["mask_updates"] == 0
    cfg = resolve.load(BASE, ["method.name=static"])
    assert result_header(cfg, "failed", "boom", "x")["dynamic"] is False
