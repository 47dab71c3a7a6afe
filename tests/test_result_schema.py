"""docs/results.md documents every key of result.json, metrics.jsonl, steps.jsonl and
topology.jsonl: checked against the keys a real (tiny) run writes, both ways, and against the
keys a run that fails early writes; its table of files names every file a run folder holds."""
from __future__ import annotations

import json
import re

import pytest

from sparsebench.storage import paths
from sparsebench import resolve
from sparsebench.config.schema import run_id
from sparsebench.training import result_header, train

from .conftest import REPO, needs_fmnist

DOC = REPO / "docs" / "results.md"


def documented(section: str) -> dict[str, list[str]]:
    """key -> the row's other cells, from the table under ``## `section` ``."""
    text = DOC.read_text().split(f"## `{section}`", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`(\w+)`", cells[0]) if line.startswith("|") else None
        if match:
            rows[match[1]] = cells[1:]
    return rows


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP: a second thread mostly waits on a shared CPU
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARSEBENCH_RESULTS", str(tmp_path_factory.mktemp("schema")))
        cfg = resolve.load(REPO / "configs" / "fmnist_mlp.yaml", [
            "data.train_subset=512", "data.batch_size=128", "epochs=2", "progress=false",
            "method.name=rigl", "method.interval=2", "density=0.1", "sweep=schema",
            "tracking.tensorboard=false", "tracking.step_interval=2"])
        result = train(cfg)
        folder = paths.run_dir(cfg.sweep, run_id(cfg))
    torch.set_num_threads(threads)
    assert result["status"] == "completed"
    return cfg, folder


@needs_fmnist
def test_every_result_key_is_documented_and_every_documented_key_written(run):
    cfg, folder = run
    result = json.loads((folder / paths.RESULT).read_text())
    rows = documented("result.json")
    assert set(result) - set(rows) == set(), "written but not in docs/results.md"
    assert set(rows) - set(result) == set(), "in docs/results.md but not written"
    # Nested keys are named in their row.
    for key in ("round_results", "step_time_quantiles_ms"):
        value = result[key][0] if isinstance(result[key], list) else result[key]
        for inner in value:
            assert f"`{inner}`" in " ".join(rows[key]), (key, inner)
    # The keys marked "header" are those a run that fails before training writes.
    header = {key for key, cells in rows.items() if cells[0] == "header"}
    assert header == set(result_header(cfg, "failed", "boom", "now"))


@needs_fmnist
def test_every_metrics_key_is_documented_and_written(run):
    _, folder = run
    lines = [json.loads(line) for line in (folder / paths.METRICS).read_text().splitlines()]
    assert len(lines) == 2
    rows = documented("metrics.jsonl")
    for line in lines:
        assert set(line) == set(rows), sorted(set(line) ^ set(rows))


@needs_fmnist
@pytest.mark.parametrize("section,name", [("steps.jsonl", paths.STEPS),
                                          ("topology.jsonl", paths.TOPOLOGY)])
def test_every_tracking_key_is_documented_and_written(run, section, name):
    _, folder = run
    lines = [json.loads(line) for line in (folder / name).read_text().splitlines()]
    assert lines
    rows = documented(section)
    for line in lines:
        assert set(line) == set(rows), sorted(set(line) ^ set(rows))


@needs_fmnist
def test_the_table_of_files_names_every_file_a_run_folder_holds(run):
    _, folder = run
    table = DOC.read_text().split("## `result.json`", 1)[0]
    for name in (paths.CONFIG, paths.RESULT, paths.METRICS, paths.STEPS, paths.TOPOLOGY,
                 paths.FINAL, paths.LOG, paths.CHECKPOINT, paths.CHECKPOINT_PREVIOUS,
                 paths.RUN_LOCK, paths.SLURM_JOB, "events.out.tfevents.*"):
        assert f"`{name}`" in table, name
    for written in folder.iterdir():
        assert f"`{written.name}`" in table, written.name
