"""The sparse × dense matrix-multiplication benchmark behind figure 8, inside the package.

``python -m sparsebench.paper.kernel_bench`` (what ``make paper`` and ``make paper-mini`` run,
and what an installed wheel runs: the package needs no checkout for figure 8) times every
candidate layout of an n × n weight multiplied by a batch, forward and forward + backward,
and writes one CSV row per (width, sparsity, variant, mode) with the median time of a call
(:mod:`sparsebench.paper.kernels` draws figure 8 from it). ``benchmarks/sparse_layer.py``
(``make bench-width``) runs the same measurements, plus an interleaved headline ratio and
its own figure.

The GSE paper's ``benchmark.py`` multiplies a square weight W (n × n, n ∈ {2048, 4096, 8192,
16384}) with a batch of 128 inputs, dense ``torch.mm`` against ``torch.sparse.mm`` in COO and
CSR, forward only. The variants:

======================  =============================================================================
``dense``               ``x @ W.T`` with a dense W (autograd: dense dX and dense dW)
``coo``                 ``torch.sparse.mm`` with a COO W, torch's own autograd (its weight gradient
                        is the dense product masked afterwards)
``csr``                 ``torch.sparse.mm`` with a CSR W, torch's own autograd (sampled weight
                        gradient; the input gradient multiplies by the transposed CSR view)
``gather``              no sparse tensor: gather the input columns of every active connection and
                        ``index_add_`` them into the output rows; backward by the same
                        gather-and-reduce, chunked (``GATHER_CHUNK`` connections at a time)
``sparse_layer``        :class:`sparsebench.sparsity.sparse_linear.SparseLinear`, the layer the
                        sparse engine uses, on its C kernels (``sparsebench.sparsity.native``): CSR
                        forward, and one pass over the active connections for dW and dX
``sparse_layer_torch``  the same layer on torch's kernels (``SPARSEBENCH_NATIVE=0``, or no C
                        compiler): MKL's CSR forward, CSR of Wᵀ for dX, ``sampled_addmm`` for dW
======================  =============================================================================

Connections are drawn uniformly at an exact count (the paper draws a Bernoulli mask). A
measurement repeats until ``--budget-s`` seconds or ``--reps`` repetitions (median reported); a
sparse variant whose call is predicted (from the previous width, time ∝ n² at a fixed sparsity)
to take over ``--max-call-s`` is not run (status ``skipped``).
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

from ..storage import atomic, paths
from ..sparsity import native
from ..sparsity.sparse_layer import sample_distinct
from ..sparsity.sparse_linear import SparseLinear

VARIANTS = ("dense", "coo", "csr", "gather", "sparse_layer", "sparse_layer_torch")
MODES = ("forward", "forward_backward")
GATHER_CHUNK = 1 << 16
COLUMNS = ["width", "sparsity", "density", "nnz", "batch", "variant", "mode", "time_s",
           "speedup_vs_dense", "reps", "status", "threads", "device"]


def parse_args(argv=None, prog: str | None = None, headline: bool = True):
    """The benchmark's options; ``headline``: also benchmarks/sparse_layer.py's interleaved
    headline ratio (which needs the checkout's benchmarks/interleaved.py)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.99, 0.999])
    p.add_argument("--extra", nargs="*", default=["8192:0.98"],
                   help="more WIDTH:SPARSITY points (default: the issue's 8192 at 98%%)")
    p.add_argument("--batch", type=int, default=128)
    # gather is the slowest by 10-25× wherever it was measured; make bench-width leaves it
    # out to stay within its 30 minutes (--variants ... gather adds it).
    p.add_argument("--variants", nargs="+", choices=VARIANTS,
                   default=[v for v in VARIANTS if v != "gather"])
    p.add_argument("--reps", type=int, default=5, help="at most this many timed calls")
    p.add_argument("--budget-s", type=float, default=1.0, help="time per measurement")
    p.add_argument("--max-call-s", type=float, default=3.0,
                   help="skip a (non-dense) call predicted slower than this from the previous "
                        "width (time grows with n² at a fixed sparsity)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1: stable numbers on a shared machine)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="CSV path (default: "
                   "results/benchmarks/sparse_layer.csv)")
    if headline:
        p.add_argument("--headline-rounds", type=int, default=9,
                       help="interleaved rounds of dense vs sparse_layer at the issue's point "
                            "(0: skip it)")
    p.add_argument("--quick", action="store_true",
                   help="widths 2048 and 8192 at 99 %% (plus the headline point), 3 reps")
    args = p.parse_args(argv)
    if args.quick:
        args.widths, args.sparsities, args.reps, args.budget_s = [2048, 8192], [0.99], 3, 0.5
        if headline:
            args.headline_rounds = 5
    return args


# ---- the variants ------------------------------------------------------------------------------

class Problem:
    """One weight (n × n at a density) and one batch; builds each variant's operands."""

    def __init__(self, n: int, density: float, batch: int, device, generator):
        self.n, self.batch, self.device = n, batch, torch.device(device)
        self.nnz = max(1, round(density * n * n))
        self.idx = sample_distinct(n * n, self.nnz, generator).to(self.device)
        self.rows, self.cols = self.idx // n, self.idx % n
        self.values = (torch.randn(self.nnz, generator=generator) / n ** 0.5).to(self.device)
        self.x = torch.randn(batch, n, generator=generator).to(self.device)
        self.dy = torch.randn(batch, n, generator=generator).to(self.device)

    def callable(self, variant: str, mode: str):
        return getattr(self, f"_{variant}")(mode == "forward_backward")

    def _dense(self, backward):
        w = torch.zeros(self.n * self.n, device=self.device)
        w[self.idx] = self.values
        w = w.view(self.n, self.n).requires_grad_(backward)
        x = self.x.clone().requires_grad_(backward)

        def run():
            w.grad = x.grad = None
            y = x @ w.T
            if backward:
                y.backward(self.dy)
        return run

    def _torch_sparse(self, matrix, backward):
        matrix = matrix.requires_grad_(backward)
        x = self.x.clone().requires_grad_(backward)

        def run():
            matrix.grad = x.grad = None
            y = torch.sparse.mm(matrix, x.t())
            if backward:
                y.backward(self.dy.t())
        return run

    def _coo(self, backward):
        coo = torch.sparse_coo_tensor(torch.stack([self.rows, self.cols]), self.values,
                                      (self.n, self.n), check_invariants=False).coalesce()
        return self._torch_sparse(coo, backward)

    def _csr(self, backward):
        return self._torch_sparse(self._csr_matrix(), backward)

    def _csr_matrix(self):
        crow = torch.zeros(self.n + 1, dtype=torch.long, device=self.device)
        crow[1:] = torch.bincount(self.rows, minlength=self.n).cumsum(0)
        # Built correct here: no invariant checks (and no warning that they are off).
        return torch.sparse_csr_tensor(crow, self.cols, self.values.clone(), (self.n, self.n),
                                       check_invariants=False)

    def _gather(self, backward):
        rows, cols, values, n = self.rows, self.cols, self.values, self.n
        xt, dyt = self.x.t().contiguous(), self.dy.t().contiguous()

        def run():
            y_t = torch.zeros(n, self.batch, device=self.device)
            for s in range(0, self.nnz, GATHER_CHUNK):
                e = min(self.nnz, s + GATHER_CHUNK)
                y_t.index_add_(0, rows[s:e], xt[cols[s:e]] * values[s:e, None])
            if backward:
                dx_t = torch.zeros(n, self.batch, device=self.device)
                dw = torch.empty(self.nnz, device=self.device)
                for s in range(0, self.nnz, GATHER_CHUNK):
                    e = min(self.nnz, s + GATHER_CHUNK)
                    g = dyt[rows[s:e]]
                    dx_t.index_add_(0, cols[s:e], g * values[s:e, None])
                    torch.linalg.vecdot(g, xt[cols[s:e]], out=dw[s:e])
        return run

    def _sparse_layer(self, backward, kernels=contextlib.nullcontext):
        layer = SparseLinear(self.n, self.n, self.idx, self.values, None).to(self.device)
        # batch-fastest layout, as a neighbouring sparse layer produces (the module docstring)
        x = self.x.t().contiguous().t().requires_grad_(backward)
        dy = self.dy.t().contiguous().t()

        def run():
            layer.values.grad = x.grad = None
            with kernels():
                if backward:
                    layer(x).backward(dy)
                else:
                    with torch.no_grad():
                        layer(x)
        return run

    def _sparse_layer_torch(self, backward):
        return self._sparse_layer(backward, native.disabled)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(run, device, reps: int, budget_s: float) -> tuple[float, int]:
    """Median seconds per call after one warm-up call."""
    sync(device)
    t0 = time.perf_counter()
    run()
    sync(device)
    first = time.perf_counter() - t0
    times, spent = [], first
    while len(times) < reps and (spent < budget_s or not times):
        t0 = time.perf_counter()
        run()
        sync(device)
        times.append(time.perf_counter() - t0)
        spent += times[-1]
    return statistics.median(times), len(times)


# ---- the sweep ---------------------------------------------------------------------------------

def points(args) -> list[tuple[int, float]]:
    grid = [(n, s) for n in args.widths for s in args.sparsities]
    for item in args.extra:
        n, s = item.split(":")
        grid.append((int(n), float(s)))
    return sorted(set(grid))


def run_benchmark(args) -> list[dict]:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    # Last measured (width, seconds) per (variant, mode, sparsity): at a fixed sparsity the
    # work grows with n², so a call predicted over --max-call-s at the next width is skipped.
    last: dict[tuple, tuple[int, float]] = {}
    dense_time: dict[tuple[int, str], float] = {}
    for n, sparsity in points(args):
        problem = Problem(n, 1 - sparsity, args.batch, device, generator)
        for variant in args.variants:
            for mode in MODES:
                key = (variant, mode, sparsity if variant != "dense" else None)
                row = {"width": n, "sparsity": sparsity, "density": problem.nnz / n ** 2,
                       "nnz": problem.nnz, "batch": args.batch, "variant": variant, "mode": mode,
                       "threads": args.threads, "device": str(device)}
                if variant == "dense" and (n, mode) in dense_time:
                    row.update(time_s=dense_time[(n, mode)], reps=0, status="ok (same as above)")
                elif variant != "dense" and key in last and \
                        last[key][1] * (n / last[key][0]) ** 2 > args.max_call_s:
                    row.update(time_s=None, reps=0, status="skipped: predicted slower than "
                                                           "--max-call-s from a smaller width")
                else:
                    try:
                        t, reps = measure(problem.callable(variant, mode), device, args.reps,
                                          args.budget_s)
                        row.update(time_s=t, reps=reps, status="ok")
                        last[key] = (n, t)
                    except (RuntimeError, NotImplementedError) as err:
                        row.update(time_s=None, reps=0, status=f"error: {str(err).splitlines()[0]}")
                    if variant == "dense" and row["time_s"] is not None:
                        dense_time[(n, mode)] = row["time_s"]
                rows.append(row)
                t = row["time_s"]
                print(f"n={n:6d} sparsity={sparsity:.4f} {variant:12s} {mode:16s} "
                      + (f"{t * 1e3:10.2f} ms" if t is not None else f"  {row['status']}"),
                      flush=True)
        del problem
    for row in rows:
        dense = dense_time.get((row["width"], row["mode"]))
        row["speedup_vs_dense"] = (dense / row["time_s"] if dense and row["time_s"] else None)
    return rows


def write_table(rows: list[dict], out: Path) -> None:
    """The CSV :mod:`sparsebench.paper.kernels` reads (written atomically)."""
    import pandas as pd

    atomic.write_text(out, pd.DataFrame(rows)[COLUMNS].to_csv(index=False))


def main(argv: list[str] | None = None) -> int:
    from ..cli import prog

    args = parse_args(argv, prog=prog("paper kernels"), headline=False)
    out = args.out or paths.benchmarks_dir() / "sparse_layer.csv"
    t0 = time.perf_counter()
    rows = run_benchmark(args)
    write_table(rows, out)
    print(f"wrote {out} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
