"""Resuming a data-parallel run (2 CPU processes on gloo, started with torchrun): rank 0 alone
deals with a damaged checkpoint while the other waits, and every rank restores its own
random-number generator state (sparsebench.training.state.resume_checkpoint, sparsebench.training.state)."""
from __future__ import annotations

import json

import pytest
import torch

from sparsebench.storage import checkpoints, paths
from sparsebench import distributed, resolve
from sparsebench.training import run_folder, train

from .conftest import needs_fmnist
from .test_distributed import CONFIG, STOP_AFTER_ONE_EPOCH, _env, _run_dir, torchrun

SMALL = ["method.name=static", "data.train_subset=512", "data.batch_size=128", "epochs=2",
         "density=0.1", "progress=false"]

# Each rank seeds its own stream at the start and draws from it after every step, writing the
# draws to its own file: a rank that resumed with another rank's state continues that stream.
RANK_RNG_METHOD = '''
import os
import torch
from sparsebench import distributed
from sparsebench.methods import Method, register


@register
class RankRng(Method):
    name = "rank_rng"

    def init_masks(self, ctx):
        super().init_masks(ctx)
        torch.manual_seed(1000 + distributed.current().rank)

    def after_step(self, ctx):
        with open(os.path.join(os.environ["RNG_LOG"], f"rank{distributed.current().rank}"), "a") as f:
            f.write(f"{ctx.step} {torch.rand(1).item()!r}\\n")
'''


def stop_after_one_epoch(tmp_path, overrides, env):
    driver = tmp_path / "stop_after_one_epoch.py"
    driver.write_text(STOP_AFTER_ONE_EPOCH)
    first = torchrun(overrides, env, target=[str(driver)])
    assert first.returncode == 0, first.stderr[-3000:]


@needs_fmnist
@pytest.mark.timeout(400)
def test_rank_0_alone_moves_a_damaged_checkpoint_aside(tmp_path, monkeypatch):
    env = _env(tmp_path / "results")
    stop_after_one_epoch(tmp_path, SMALL, env)
    run_dir = _run_dir(tmp_path / "results", SMALL, monkeypatch)
    checkpoint = run_dir / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])     # truncated by a crash, say
    second = torchrun(SMALL, env)
    assert second.returncode == 0, second.stderr[-3000:]
    moved = list(run_dir.glob("checkpoint.pt.corrupt-*"))
    assert len(moved) == 1 and len(moved[0].read_bytes()) == 100
    assert second.stderr.count("cannot be used") == 1            # said once, by rank 0
    log = (run_dir / "log").read_text()
    assert log.count("cannot be used") == 1 and "training from scratch" in log
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["world_size"] == 2


@needs_fmnist
@pytest.mark.timeout(600)
def test_each_rank_resumes_its_own_random_state(tmp_path, monkeypatch):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "rank_rng.py").write_text(RANK_RNG_METHOD)
    overrides = ["method.name=rank_rng"] + SMALL[1:]
    draws = {}
    for name in ("uninterrupted", "resumed"):
        logs = tmp_path / f"draws_{name}"
        logs.mkdir()
        env = _env(tmp_path / name, SPARSEBENCH_METHODS_PATH=str(plugins), RNG_LOG=str(logs))
        if name == "resumed":
            stop_after_one_epoch(tmp_path, overrides, env)
        run = torchrun(overrides, env)
        assert run.returncode == 0, run.stderr[-3000:]
        draws[name] = {rank: (logs / f"rank{rank}").read_text().splitlines() for rank in (0, 1)}
    assert len(draws["uninterrupted"][0]) == 8                    # 2 epochs of 4 steps
    assert draws["uninterrupted"][0] != draws["uninterrupted"][1]   # two streams
    assert draws["resumed"] == draws["uninterrupted"]


@needs_fmnist
def test_ddp_wraps_the_model_after_the_checkpoint_is_loaded(monkeypatch):
    """DDP broadcasts rank 0's weights when it wraps: they must be the resumed ones."""
    at_wrap = []

    def wrap(model, device):
        at_wrap.append({k: v.clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(distributed, "wrap", wrap)
    cfg = resolve.load(CONFIG, SMALL)
    assert train(cfg, stop_after_epochs=1)["status"] == "interrupted"
    saved = checkpoints.read(run_folder(cfg) / paths.CHECKPOINT)["model"]
    assert train(cfg)["status"] == "completed"
    assert len(at_wrap) == 2
    assert all(torch.equal(at_wrap[1][k], saved[k]) for k in saved)        # resumed, then wrapped
    assert not all(torch.equal(at_wrap[0][k], saved[k]) for k in saved)
