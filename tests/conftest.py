"""Shared fixtures: every test writes results under its own temporary folder, on the CPU."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

FMNIST = Path("/usr/share/datasets/fashion-mnist")
REPO = Path(__file__).resolve().parent.parent
# Under SPARSEBENCH_STRICT=1 (CI sets it) a test never skips for want of Fashion-MNIST or of
# the local SLURM cluster: set-up provides both there, so their absence is a failure.
STRICT = os.environ.get("SPARSEBENCH_STRICT") == "1"


@pytest.fixture(autouse=True)
def _isolated_results(tmp_path, monkeypatch):
    """No test writes into the repository's results/ folder."""
    monkeypatch.setenv("SPARSEBENCH_RESULTS", str(tmp_path / "results"))
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _fmnist_available() -> bool:
    if (FMNIST / "train-images-idx3-ubyte.gz").is_file():
        return True
    try:
        from sparsebench.data import find_root

        find_root("fashion_mnist")
        return True
    except (FileNotFoundError, ValueError):
        return False


needs_fmnist = pytest.mark.skipif(
    not STRICT and not _fmnist_available(),
    reason="Fashion-MNIST not found (make setup installs Debian's dataset-fashion-mnist)")


def load_benchmark(name: str):
    """A script of ``benchmarks/`` imported as a module (they are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def write_sweep(tmp_path):
    """Write a sweep file ``tmp_path/sweeps/NAME.yaml`` from a dict (``name`` defaults to NAME)."""
    import yaml

    def write(name: str, spec: dict | str) -> Path:
        path = tmp_path / "sweeps" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, dict):
            spec = yaml.safe_dump({"name": name, **spec}, sort_keys=False)
        path.write_text(spec)
        return path

    return write


@pytest.fixture(params=["native", "torch"])
def kernels(request):
    """Run a test on the C sparse kernels and again on torch's (``sparsebench.sparsity.native``).
    Without a C compiler the native half skips, except under SPARSEBENCH_STRICT (CI has gcc)."""
    from sparsebench.sparsity import native

    if request.param == "torch":
        with native.disabled():
            yield "torch"
        return
    if native.library() is None:
        if STRICT:
            pytest.fail("the C sparse kernels could not be built (see the warning)")
        pytest.skip("no C compiler: the sparse kernels run on torch's (tested by the other half)")
    yield "native"


def spawn_two_ranks(fn, out) -> None:
    """Run ``fn(rank, 2, str(out))`` on two spawned processes, each in a gloo process group
    that meets at a free local port (rank 0 writes what it found to out)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.multiprocessing.start_processes(_in_group, args=(fn, port, str(out)), nprocs=2,
                                          start_method="spawn")


def _in_group(rank: int, fn, port: int, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                         rank=rank, world_size=2)
    try:
        fn(rank, 2, out)
        # Both ranks done before either tears down: gloo aborts a rank whose peer closes the
        # connection first ("terminate called without an active exception", SIGABRT; seen
        # in full suites when a rank simply returned).
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()
