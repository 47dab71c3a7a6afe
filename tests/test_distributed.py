"""Data-parallel runs (sparsebench.distributed): 2 CPU processes on gloo, started by the test
with torchrun, train the run 1 process trains with the same global batch; faults end the run
as ``failed`` on rank 0 within bounded time; a resumed 2-process run matches."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sparsebench import distributed, resolve
from sparsebench.config.schema import ConfigError
from sparsebench.data.imagenet import GlobalBatchShards
from sparsebench.data.loader import TensorLoader, share
from sparsebench.training import run_folder, train

from .conftest import REPO, needs_fmnist, spawn_two_ranks

CONFIG = REPO / "configs" / "fmnist_mlp.yaml"
# Small and fast: 16 steps an epoch, mask updates every 5 steps.
COMMON = ["data.train_subset=2048", "data.batch_size=128", "epochs=2", "density=0.1",
          "progress=false"]
METHODS = {
    "static": ["method.name=static"],
    "rigl": ["method.name=rigl", "method.interval=5"],
    "gse_uniform": ["method.name=gse", "method.interval=5", "method.sampler=uniform"],
    "gse_grabo": ["method.name=gse", "method.interval=5", "method.sampler=grabo"],
    # 3 score batches of 128: rank 0 scores two, rank 1 one (sparsebench.scoring).
    "gse_graest_score_batches": ["method.name=gse", "method.interval=5", "method.sampler=graest",
                                 "method.score_samples_per_class=30"],
}
# GraBo draws its candidates from probabilities made of the batch's activations: float32 rounding
# (DDP averages two half-batch gradients where one process sums one batch) moves a few draws
# across their bucket boundaries, and the runs then drift apart as two seeds of the same run
# would. Its statistics match one process to float precision
# (test_gse_statistics_on_two_ranks_are_the_global_batchs); end to end it is held to the ranks
# agreeing exactly and the run agreeing within this noise.
STOCHASTIC = {"gse_grabo": {"loss_rel": 1e-2, "acc_points": 2.0}}
TORCHRUN_TIMEOUT_S = 240

# Plug-in methods that break the rules on purpose, to show the checks catch it.
FAULTY_METHODS = '''
import torch
from sparsebench import distributed
from sparsebench.methods import Method, register


@register
class RankSkew(Method):
    """Each rank draws its own topology (a rank-dependent generator)."""
    name = "rank_skew"

    def init_masks(self, ctx):
        self.engine.random_masks(torch.Generator().manual_seed(distributed.current().rank))


@register
class RankRaise(Method):
    """Rank 1 raises in its fourth step."""
    name = "rank_raise"

    def after_step(self, ctx):
        if distributed.current().rank == 1 and ctx.step == 3:
            raise ValueError("boom on rank 1")


@register
class RankNan(Method):
    """Rank 1's share of the fourth batch is NaN."""
    name = "rank_nan"

    def before_forward(self, ctx):
        if distributed.current().rank == 1 and ctx.step == 3:
            ctx.batch[0].fill_(float("nan"))
'''

# A driver that stops a 2-process run after one epoch through the trainer's own interruption.
STOP_AFTER_ONE_EPOCH = '''
import sys
from sparsebench import resolve
from sparsebench.training import train
cfg = resolve.load(sys.argv[1], sys.argv[2:])
assert train(cfg, stop_after_epochs=1)["status"] == "interrupted"
'''


@pytest.fixture
def faulty_methods(tmp_path) -> Path:
    """A folder for $SPARSEBENCH_METHODS_PATH holding FAULTY_METHODS."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "faulty.py").write_text(FAULTY_METHODS)
    return folder


def _env(results: Path, **extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "SPARSEBENCH_RESULTS": str(results),
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def _torchrun_command(target: list[str], overrides: list[str], nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", *target, str(CONFIG), *overrides]


def torchrun(overrides: list[str], env: dict, target=("-m", "sparsebench.train")):
    return subprocess.run(_torchrun_command(list(target), overrides), capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=TORCHRUN_TIMEOUT_S)


def one_process(overrides: list[str], results: Path, monkeypatch) -> tuple[dict, list[dict]]:
    monkeypatch.setenv("SPARSEBENCH_RESULTS", str(results))
    torch.set_num_threads(1)
    cfg = resolve.load(CONFIG, overrides)
    result = train(cfg)
    return result, _metrics(run_folder(cfg))


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _run_dir(results: Path, overrides: list[str], monkeypatch) -> Path:
    monkeypatch.setenv("SPARSEBENCH_RESULTS", str(results))
    return run_folder(resolve.load(CONFIG, overrides))


def _only_run(results: Path) -> Path:
    """The one run folder under ``results`` (for plug-in methods this process has not loaded)."""
    run_dir, = results.glob("*/runs/*/")
    return run_dir


def assert_same_run(one: tuple[dict, list[dict]], two: tuple[dict, list[dict]], *,
                    loss_rel: float = 1e-4, acc_points: float = 0.2) -> None:
    (r1, m1), (r2, m2) = one, two
    assert r1["status"] == r2["status"] == "completed"
    assert r2["world_size"] == 2 and len(r2["devices"]) == 2 and r1["world_size"] == 1
    if loss_rel <= 1e-4:
        assert r1["mask_sha256"] == r2["mask_sha256"]          # the same final topology
    assert len(m1) == len(m2) == r1["epochs"]
    for e1, e2 in zip(m1, m2):
        assert e2["train_loss"] == pytest.approx(e1["train_loss"], rel=loss_rel)
        assert e2["test_loss"] == pytest.approx(e1["test_loss"], rel=loss_rel)
        assert e2["density"] == e1["density"]
    assert abs(r2["final_test_acc"] - r1["final_test_acc"]) <= acc_points
    # FLOPs of the global batch, counted once (GraBo's candidate counts follow its draws).
    assert r2["train_flops"] == pytest.approx(r1["train_flops"], rel=1e-9 if loss_rel <= 1e-4 else 1e-3)
    assert r2["steps"] == r1["steps"]


# ---- shares of the global batch ---------------------------------------------------------------

@pytest.mark.parametrize("batch,world", [(128, 2), (10, 3), (2, 4)])
def test_shares_cover_the_batch_in_rank_order(batch, world):
    bounds = [share(batch, r, world) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == batch
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert max(h - l for l, h in bounds) - min(h - l for l, h in bounds) <= 1


def test_two_ranks_of_the_tensor_loader_see_the_one_process_batches():
    x = torch.randn(50, 3, 8, 8)
    y = torch.arange(50)
    kw = dict(shuffle=True, drop_last=False, augment="crop_flip", seed=3)
    one = TensorLoader(x, y, 16, **kw)
    ranks = [TensorLoader(x, y, 16, rank=r, world_size=2, **kw) for r in range(2)]
    for loader in (one, *ranks):
        loader.set_epoch(5)
    for (xb, yb), *shares in zip(one, *ranks):
        assert torch.equal(torch.cat([s[1] for s in shares]), yb)
        assert torch.equal(torch.cat([s[0] for s in shares]), xb)   # augmentation too
    assert len(ranks[0]) == len(one) == 4


def test_imagenet_batch_sampler_shards_each_global_batch():
    gens = [torch.Generator().manual_seed(7) for _ in range(3)]
    one = list(GlobalBatchShards(37, 8, shuffle=True, drop_last=True, generator=gens[0]))
    ranks = [list(GlobalBatchShards(37, 8, shuffle=True, drop_last=True, generator=g, rank=r,
                                    world_size=2)) for r, g in enumerate(gens[1:])]
    assert len(one) == 4 and [a + b for a, b in zip(*ranks)] == one


def test_the_world_size_comes_from_torchrun_or_a_submitit_task(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "SUBMITIT_EXECUTOR", "SLURM_NTASKS", "SLURM_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.launched_world_size() == 1
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert distributed.launched_world_size() == 1  # an allocation's shell, not a submitit task
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert distributed.launched_world_size() == 4
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert distributed.launched_world_size() == 2  # torchrun inside an allocation


def test_one_process_helpers_are_no_ops():
    t = torch.tensor([1.0, 2.0])
    assert distributed.current().size == 1
    assert distributed.all_reduce_sum(t) is t and distributed.all_reduce_mean(t) is t
    assert distributed.shard(t) is t and distributed.any_rank(torch.tensor(True))
    assert distributed.gather_objects("x") == ["x"]


# ---- GSE's statistics and SNIP-like gradients are the global batch's -------------------------

def _gse_scores(rank: int, world_size: int, out: str) -> dict:
    """GraBo's and GraEst's sampling weights and the candidates' gradients of one global batch
    of 16, computed on ``world_size`` ranks (each on its share) as GSE computes them."""
    from torch import nn

    from sparsebench.sparsity import SparsityEngine
    from sparsebench.sparsity.sampling import ActivationCapture, candidate_gradients

    from .test_sampling import one_batch_weights

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(6 * 8 * 8, 10))
    engine = SparsityEngine.for_model(model, 0.3, "uniform")
    engine.random_masks(torch.Generator().manual_seed(1))
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.arange(16) % 10
    capture = ActivationCapture(engine.layers)
    capture.arm()
    x, y = distributed.shard(x), distributed.shard(y)
    nn.functional.cross_entropy(model(x), y).backward()  # each rank's mean loss, as under DDP
    scores = {}
    for layer in engine.layers:
        cap = capture[layer.name]
        for name in ("grabo", "graest"):
            (p_out, p_in), _ = one_batch_weights(name, layer, cap, torch.Generator().manual_seed(3))
            scores[f"{layer.name}/{name}/out"], scores[f"{layer.name}/{name}/in"] = p_out, p_in
        cands = layer.inactive_indices()
        scores[f"{layer.name}/grad"] = distributed.all_reduce_mean(candidate_gradients(cap, cands))
        scores[f"{layer.name}/dense"] = distributed.all_reduce_mean(
            layer.weight.grad.reshape(-1)[cands])  # what DDP averages (SNIP's, RigL's)
    if rank == 0 and out:
        torch.save(scores, out)
    return scores


@pytest.mark.slow
def test_gse_statistics_on_two_ranks_are_the_global_batchs(tmp_path):
    out = tmp_path / "scores.pt"
    spawn_two_ranks(_gse_scores, out)
    two = torch.load(out)
    one = _gse_scores(0, 1, "")
    assert set(two) == set(one) and len(one) == 12
    for key, value in one.items():
        torch.testing.assert_close(two[key], value, rtol=1e-5, atol=1e-7, msg=key)
    for layer in ("0", "3"):  # candidates' gradients are the dense gradient's entries
        torch.testing.assert_close(one[f"{layer}/grad"], one[f"{layer}/dense"], rtol=1e-5, atol=1e-7)


# ---- validation (exit 2 before anything is written) ----------------------------------------

def test_a_global_batch_that_does_not_divide_is_refused(tmp_path):
    env = _env(tmp_path / "results", WORLD_SIZE="3", RANK="0")
    proc = subprocess.run([sys.executable, "-m", "sparsebench.train", str(CONFIG), *COMMON],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert "data.batch_size: got 128; the global batch must divide by the world size 3" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_the_sparse_engine_is_refused_with_several_ranks():
    cfg = resolve.load(CONFIG, ["sparsity.engine=sparse"])
    with pytest.raises(ConfigError, match="sparsity.engine"):
        distributed.validate(cfg, 2)
    distributed.validate(cfg, 1)


@pytest.mark.parametrize("slurm,grid,expected", [
    ({"tasks_per_node": 8, "gpus_per_node": 4}, {"density": [0.1]},
     "slurm.tasks_per_node: got 8; allowed: at most gpus_per_node (4), one task per GPU"),
    ({"nodes": 2, "tasks_per_node": 2}, {"data.batch_size": [128, 90]},
     "cell {data.batch_size: 90}: data.batch_size: got 90; the global batch must divide by "
     "the world size 4"),
])
def test_a_sweep_whose_runs_cannot_split_exits_2_before_submitting(slurm, grid, expected,
                                                                   write_sweep, capsys):
    from sparsebench.sweep import main

    path = write_sweep("split", {"base": "configs/fmnist_mlp.yaml", "grid": grid, "slurm": slurm})
    with pytest.raises(SystemExit) as exit_info:
        main([str(path), "--executor", "slurm", "--dry-run"])
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err


def test_the_slurm_block_asks_for_one_task_per_gpu():
    from sparsebench.launch.slurm_spec import SlurmSpec

    params = SlurmSpec(nodes=2, tasks_per_node=8, gpus_per_node=8).submitit_parameters()
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 8, 8)
    assert SlurmSpec(nodes=2, tasks_per_node=8).world_size == 16


# ---- 2 processes = 1 process ----------------------------------------------------------------

@needs_fmnist
@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("method", list(METHODS))
def test_two_processes_train_the_one_process_run(method, tmp_path, monkeypatch):
    overrides = METHODS[method] + COMMON
    # The mask check compares a hash of the masks across the ranks after every step; a
    # difference would fail the run (see test_the_mask_check_catches_ranks_that_differ).
    proc = torchrun(overrides, _env(tmp_path / "two", SPARSEBENCH_CHECK_MASKS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = _run_dir(tmp_path / "two", overrides, monkeypatch)
    two = json.loads((run_dir / "result.json").read_text()), _metrics(run_dir)
    one = one_process(overrides, tmp_path / "one", monkeypatch)
    assert_same_run(one, two, **STOCHASTIC.get(method, {}))
    if method != "static":
        assert one[0]["mask_sha256"] != _static_digest(tmp_path, monkeypatch)  # masks moved


def _static_digest(tmp_path, monkeypatch) -> str:
    result, _ = one_process(METHODS["static"] + COMMON, tmp_path / "static", monkeypatch)
    return result["mask_sha256"]


@needs_fmnist
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_mask_check_catches_ranks_that_differ(tmp_path, faulty_methods):
    overrides = ["method.name=rank_skew", *COMMON]
    env = _env(tmp_path / "results", SPARSEBENCH_CHECK_MASKS="1",
               SPARSEBENCH_METHODS_PATH=str(faulty_methods))
    proc = torchrun(overrides, env)
    assert proc.returncode != 0
    result = json.loads((_only_run(tmp_path / "results") / "result.json").read_text())
    assert result["status"] == "failed"
    assert "MasksDiffer: masks differ across ranks after step 1: rank(s) 1" in result["error"]


# ---- faults --------------------------------------------------------------------------------

@needs_fmnist
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_rank_that_raises_fails_the_run_naming_it(tmp_path, faulty_methods):
    overrides = ["method.name=rank_raise", *COMMON]
    env = _env(tmp_path / "results", SPARSEBENCH_METHODS_PATH=str(faulty_methods))
    proc = torchrun(overrides, env)
    assert proc.returncode != 0
    run_dir = _only_run(tmp_path / "results")
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "failed"
    assert result["error"] == "rank 1: ValueError: boom on rank 1"
    assert "failed: rank 1: ValueError: boom on rank 1" in (run_dir / "log").read_text()


@needs_fmnist
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_nan_on_one_rank_ends_the_run_as_diverged(tmp_path, faulty_methods):
    overrides = ["method.name=rank_nan", *COMMON]
    env = _env(tmp_path / "results", SPARSEBENCH_METHODS_PATH=str(faulty_methods))
    proc = torchrun(overrides, env)
    assert proc.returncode != 0  # every rank ends (sparsebench.train exits 1 unless completed)
    result = json.loads((_only_run(tmp_path / "results") / "result.json").read_text())
    assert result["status"] == "diverged" and result["epochs_completed"] == 0
    assert "non-finite training loss in epoch 1" in result["error"]


def _rank_pids(launcher_pid: int, timeout_s: float = 120) -> dict[int, int]:
    """rank -> pid of the launcher's worker processes, once both exist."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = {}
        for child in Path(f"/proc/{launcher_pid}/task").glob("*/children"):
            for pid in child.read_text().split():
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                ranks = [e[5:] for e in env if e.startswith(b"RANK=")]
                if ranks:
                    pids[int(ranks[0])] = int(pid)
        if len(pids) == 2:
            return pids
        time.sleep(0.2)
    raise AssertionError("torchrun did not start its two ranks")


@needs_fmnist
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill_9_of_one_rank_fails_the_run_within_two_minutes(tmp_path, monkeypatch):
    overrides = ["method.name=static", "data.train_subset=4096", "data.batch_size=128",
                 "epochs=200", "progress=false"]
    results = tmp_path / "results"
    run_dir = _run_dir(results, overrides, monkeypatch)
    launcher = subprocess.Popen(_torchrun_command(["-m", "sparsebench.train"], overrides),
                                env=_env(results), cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    try:
        pids = _rank_pids(launcher.pid)
        deadline = time.monotonic() + 180
        while not (run_dir / "metrics.jsonl").is_file():  # training is under way
            assert time.monotonic() < deadline and launcher.poll() is None
            time.sleep(0.2)
        os.kill(pids[1], signal.SIGKILL)
        killed_at = time.monotonic()
        launcher.communicate(timeout=120)
        assert time.monotonic() - killed_at < 120
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode != 0
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "failed"
    assert result["error"].startswith(f"rank 1 died (pid {pids[1]}: killed or out of memory)")
    assert 0 < result["epochs_completed"] < 200


# ---- resume -----------------------------------------------------------------------------------

@needs_fmnist
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_resumed_two_process_run_matches_an_uninterrupted_one(tmp_path, monkeypatch):
    overrides = METHODS["rigl"] + [o for o in COMMON if not o.startswith("epochs=")] + ["epochs=3"]
    driver = tmp_path / "stop_after_one_epoch.py"
    driver.write_text(STOP_AFTER_ONE_EPOCH)
    env = _env(tmp_path / "two", SPARSEBENCH_CHECK_MASKS="1")
    first = torchrun(overrides, env, target=[str(driver)])
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = _run_dir(tmp_path / "two", overrides, monkeypatch)
    assert (run_dir / "checkpoint.pt").is_file() and not (run_dir / "result.json").exists()
    assert len(_metrics(run_dir)) == 1
    second = torchrun(overrides, env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from checkpoint after epoch 1" in (run_dir / "log").read_text()
    two = json.loads((run_dir / "result.json").read_text()), _metrics(run_dir)
    assert_same_run(one_process(overrides, tmp_path / "one", monkeypatch), two)
