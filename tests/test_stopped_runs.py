"""A run folder without result.json is ``running`` only while a live process holds its lock;
a trainer that was interrupted or killed leaves a ``stopped`` run, and the tables say so."""
from __future__ import annotations

from sparsebench import load_results, resolve
from sparsebench.storage import locks, paths
from sparsebench.reporting import tables
from sparsebench.reporting.results import load_run
from sparsebench.training import run_folder, train

from .conftest import REPO, needs_fmnist
from .fake_results import write_run


def test_running_needs_a_live_lock_holder_and_the_tables_count_stopped_runs(tmp_path):
    sweep = "live"
    write_run(tmp_path, sweep, "static", 0.1, 0, acc=80.0)
    write_run(tmp_path, sweep, "static", 0.1, 1, status="running")
    write_run(tmp_path, sweep, "static", 0.1, 2, status="stopped")          # interrupted
    killed = write_run(tmp_path, sweep, "static", 0.1, 3, status="stopped")
    # A killed trainer leaves its lock file behind, naming it; nothing holds the lock.
    (killed / paths.RUN_LOCK).write_text("pid 999999 on node3 since 2026-01-01T00:00:00+00:00\n")
    assert locks.holder(killed / paths.RUN_LOCK) is None

    df = load_results(sweep, tmp_path)
    assert df.groupby("seed")["status"].first().to_dict() == {
        0: "completed", 1: "running", 2: "stopped", 3: "stopped"}

    row = tables.main_table(df).iloc[0]
    assert (row["n"], row["running"], row["stopped"], row["failed"]) == (1, 1, 2, 0)
    assert int(tables.not_in_mean(row)) == 3
    text = tables.to_markdown(tables.main_display(tables.main_table(df)))
    assert "80.00 †" in text and "stopped" in text.splitlines()[0]
    assert "stopped or running" in tables.FOOTNOTE


@needs_fmnist
def test_an_interrupted_run_reads_as_stopped_then_completed_after_resuming(tmp_path):
    cfg = resolve.load(str(REPO / "configs" / "fmnist_mlp.yaml"),
                       ["data.train_subset=256", "data.batch_size=64", "epochs=2",
                        "progress=false", "method.name=static", "density=0.2", "sweep=resume"])
    assert train(cfg, stop_after_epochs=1)["status"] == "interrupted"
    row = load_run(run_folder(cfg))
    assert (row["status"], row["epochs_completed"]) == ("stopped", 1)
    assert train(cfg)["status"] == "completed"
    assert load_run(run_folder(cfg))["status"] == "completed"
