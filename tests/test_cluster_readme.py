"""README "On a GPU cluster": every command of its blocks marked `# tested: STEP`, run as written
against the local one-node SLURM cluster, in a folder laid out like the user's checkout.

The sweep file is the README's own `sweeps/my_cluster.yaml`, with the fields the local cluster
cannot honour replaced (it has no GPU, no partition `gpu`, no accounts or QOS, no `module`
command, two cores): partition, account, qos, gpus_per_node, cpus_per_task, mem_gb, setup.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sparsebench.storage import atomic

from .conftest import REPO, needs_fmnist
from .test_sweep_slurm import LIMIT_S, slurm_cluster  # noqa: F401

pytestmark = [pytest.mark.slurm, needs_fmnist, pytest.mark.timeout(LIMIT_S)]

STEPS = ("check", "submit", "cancel", "cost")  # the README's tested blocks, in order


def section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("\n## On a GPU cluster\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


def blocks() -> tuple[dict, dict[str, str]]:
    """The section's sweep file (as YAML) and its tested command blocks by step name."""
    fenced = re.findall(r"```(\w+)\n(.*?)```", section(), re.S)
    sweep, = [yaml.safe_load(body) for lang, body in fenced
              if lang == "yaml" and body.startswith("# sweeps/my_cluster.yaml")]
    steps = {}
    for lang, body in fenced:
        first, _, rest = body.partition("\n")
        if lang == "bash" and first.startswith("# tested: "):
            steps[first[len("# tested: "):].strip()] = rest
    return sweep, steps


def local_sweep(sweep: dict) -> dict:
    slurm = dict(sweep["slurm"])
    for name in ("partition", "account", "qos"):
        slurm.pop(name)
    slurm.update(gpus_per_node=0, cpus_per_task=1, mem_gb=2, setup=["echo setup ran"])
    return {**sweep, "slurm": slurm}


@pytest.fixture
def checkout(tmp_path):
    """A user's checkout: the repository's configs, methods, protocols and sweeps, plus the
    README's sweep file; results/ is created by the commands."""
    home = tmp_path / "checkout"
    (home / "sweeps").mkdir(parents=True)
    for folder in ("configs", "methods", "protocols"):
        (home / folder).symlink_to(REPO / folder)
    for path in (REPO / "sweeps").glob("*.yaml"):
        (home / "sweeps" / path.name).symlink_to(path)
    sweep, _ = blocks()
    (home / "sweeps" / "my_cluster.yaml").write_text(yaml.safe_dump(local_sweep(sweep),
                                                                    sort_keys=False))
    yield home
    for records in home.glob("results/*/jobs/submitted.json"):  # this test's jobs only
        ids = sorted({r["job_id"].split("_")[0] for r in (atomic.read_json(records) or {}).values()})
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


def run_step(name: str, home: Path, timeout_s: float) -> str:
    _, steps = blocks()
    env = {k: v for k, v in os.environ.items() if k != "SPARSEBENCH_RESULTS"}
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    out = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", steps[name]], cwd=home, env=env,
                         capture_output=True, text=True, timeout=timeout_s)
    assert out.returncode == 0, f"README step {name!r} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


def test_the_readme_marks_the_steps_this_test_runs():
    sweep, steps = blocks()
    assert tuple(steps) == STEPS
    assert sweep["slurm"]["partition"] and sweep["slurm"]["account"] and sweep["slurm"]["setup"]


def test_the_readme_cluster_commands_check_submit_cancel_and_resume(slurm_cluster, checkout):
    out = run_step("check", checkout, 120)
    assert "dry run: nothing submitted" in out and "one SLURM array job of 4 tasks" in out
    assert "device: auto: checked on the node where each run starts" in out
    assert not (checkout / "results").exists() or not list((checkout / "results").rglob("*.json"))

    out = run_step("submit", checkout, 120)
    assert "submitted array job" in out and '"job_id"' in out and "submitted.json" in out
    assert "sb-my_cl" in out  # squeue --me lists the sweep's job (names cut to 8 characters)

    out = run_step("cancel", checkout, LIMIT_S - 120)
    assert "sweep my_cluster: all 4 runs completed" in out
    runs = list((checkout / "results" / "my_cluster" / "runs").glob("*/result.json"))
    assert len(runs) == 4 and all(atomic.read_json(r)["status"] == "completed" for r in runs)
    logs = "".join(p.read_text() for p in (checkout / "results" / "my_cluster" / "jobs")
                   .glob("*_log.out"))
    assert "setup ran" in logs  # the slurm.setup lines ran in the jobs


def test_the_readme_cost_command(checkout):
    out = run_step("cost", checkout, LIMIT_S - 60)
    total, = [l for l in out.splitlines() if l.startswith("total")]
    assert int(total.split()[1]) == 896  # the paper's runs
