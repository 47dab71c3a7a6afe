"""The sparse layers' CPU kernels in C (``csr_kernels.c``): compiled on first use, called
through ctypes, with torch's own kernels as the fallback.

Why: on CPU, torch's CSR × dense is MKL's, and ``sampled_addmm`` a generic loop; on this
repository's machine (AMD EPYC, AVX2) they reach 5-8 GFLOP/s, and the input gradient through
them needs the transposed CSR and a gather of the values in its order. The C loops run about
2× faster each, and the linear layer's backward does both its products in one pass over the
active connections, scattering the input gradient instead of building Wᵀ (about 1.3-1.5×
faster again; ``benchmarks/sparse_layer.py``). No well-kept library offers these kernels for
torch tensors on CPU (scipy's are single-threaded and unvectorized; torch-sparse has no wheel
for this torch), so they are ~100 lines of C.

How: the source is compiled once per machine type with the system C compiler (``$CC`` or
``cc``; ``-O3 -march=native``) into ``$SPARSEBENCH_CACHE`` (default
``~/.cache/sparsebench/native``), under a name that hashes the source, the flags, the compiler
and the CPU's flags, so nodes of different kinds sharing a home never load each other's
build; compiling takes under a second and is written atomically. Where no compiler works,
or ``SPARSEBENCH_NATIVE=0``, every caller uses torch's kernels (one warning says why). CUDA
tensors always use torch's (cuSPARSE).

Threads: a product is split over ``torch.get_num_threads()`` Python threads (ctypes releases
the GIL): SpMM and SDDMM by rows, balanced by active connections; the fused backward by
columns of the batch (its input gradient is written at random rows), each thread with its own
share of the weight gradient, summed at the end.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("csr_kernels.c")
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fassociative-math",
         "-fno-signed-zeros", "-shared", "-fPIC"]
# Below this many multiply-adds a product runs on one thread (a thread hand-off costs ~50 µs).
PARALLEL_MIN_WORK = 1 << 21

_P, _I = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES = {
    "sb_spmm": [_I, _I, _P, _P, _P, _P, _I, _P, _I, _I, _P, _I],
    "sb_sddmm": [_I, _I, _P, _P, _P, _I, _P, _I, _I, _P],
    "sb_linear_backward": [_I, _I, _P, _P, _P, _P, _I, _P, _I, _P, _I, _I, _P],
}

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_tried = False
_disabled = 0
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def cache_dir() -> Path:
    root = os.environ.get("SPARSEBENCH_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "sparsebench" / "native"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _compiler() -> str | None:
    cc = os.environ.get("CC") or "cc"
    return shutil.which(cc)


def build() -> Path:
    """The compiled library's path, compiling it if this machine type has none yet.
    Raises ``RuntimeError`` (with the compiler's message) where it cannot be built."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(FLAGS), version,
                                    platform.machine(), _cpu_flags()]).encode()).hexdigest()
    target = cache_dir() / f"csr_kernels-{key[:16]}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cc, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{cc} failed: {proc.stderr.strip()[-500:]}")
        os.replace(tmp, target)      # atomic: concurrent first uses each install a whole file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def library() -> ctypes.CDLL | None:
    """The loaded kernels, or None where they are switched off or cannot be built."""
    global _library, _tried
    if _disabled or os.environ.get("SPARSEBENCH_NATIVE", "1") == "0":
        return None
    if not _tried:
        with _lock:
            if not _tried:
                try:
                    lib = ctypes.CDLL(str(build()))
                    for name, args in _SIGNATURES.items():
                        getattr(lib, name).argtypes = args
                        getattr(lib, name).restype = None
                    _library = lib
                except (RuntimeError, OSError) as err:
                    warnings.warn(f"sparsebench: the C sparse kernels are unavailable ({err}); "
                                  "using torch's CPU kernels (slower)", RuntimeWarning)
                _tried = True
    return _library


@contextlib.contextmanager
def disabled():
    """Within this block every caller uses torch's kernels (tests compare the two)."""
    global _disabled
    _disabled += 1
    try:
        yield
    finally:
        _disabled -= 1


def usable(*tensors: Tensor) -> bool:
    """Whether the C kernels serve these operands: float32 on the CPU (under autocast they
    arrive in bf16 and go to torch's kernels)."""
    return (all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
            and library() is not None)


def spmm_usable(values: Tensor, dense: Tensor, result: Tensor) -> bool:
    """Whether :func:`spmm` serves these operands: :func:`usable`, and a ``result`` it can
    write in place (unit column stride)."""
    return result.stride(-1) == 1 and usable(values, dense, result)


# ---- calls ------------------------------------------------------------------------------------

def _rows(t: Tensor) -> Tensor:
    """``t`` with unit column stride (a copy only if it has another layout)."""
    return t if t.stride(-1) == 1 and t.stride(0) >= t.shape[-1] else t.contiguous()


def _threads(work: int) -> int:
    return 1 if work < PARALLEL_MIN_WORK else max(1, torch.get_num_threads())


def _run(jobs) -> None:
    """Run the thunks ``jobs`` (the last one on this thread)."""
    global _pool, _pool_size
    if len(jobs) == 1:
        jobs[0]()
        return
    if _pool is None or _pool_size < len(jobs) - 1:
        _pool_size = len(jobs) - 1
        _pool = ThreadPoolExecutor(max_workers=_pool_size, thread_name_prefix="sparsebench")
    futures = [_pool.submit(job) for job in jobs[:-1]]
    jobs[-1]()
    for f in futures:
        f.result()


def _row_ranges(crow: Tensor, parts: int) -> list[tuple[int, int]]:
    """``parts`` consecutive row ranges with about equal numbers of active connections."""
    rows = crow.numel() - 1
    if parts <= 1 or rows <= 1:
        return [(0, rows)]
    targets = torch.linspace(0, int(crow[-1]), parts + 1, dtype=torch.float64)[1:-1]
    cuts = torch.searchsorted(crow.to(torch.float64), targets).tolist()
    bounds = [0, *sorted(min(max(c, 0), rows) for c in cuts), rows]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a] or [(0, rows)]


def spmm(crow: Tensor, col: Tensor, values: Tensor, dense: Tensor, bias: Tensor | None,
         result: Tensor, accumulate: bool = False) -> None:
    """result (=|+=) bias[:, None] + A @ dense, A (rows × dense.shape[0]) in CSR; ``result``
    must have unit column stride (it is written in place)."""
    lib = library()
    dense = _rows(dense)
    bias = None if bias is None else bias.detach().contiguous()
    ncols = dense.shape[1]
    ptrs = (crow.data_ptr(), col.data_ptr(), values.data_ptr(), dense.data_ptr(),
            dense.stride(0), result.data_ptr(), result.stride(0), ncols,
            None if bias is None else bias.data_ptr(), int(accumulate))
    jobs = [lambda a=a, b=b: lib.sb_spmm(a, b, *ptrs)
            for a, b in _row_ranges(crow, _threads(col.numel() * ncols))]
    _run(jobs)


def sddmm(crow: Tensor, col: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """(a @ b) at the CSR positions, aligned with ``col``: a is (rows × R), b (R × n_cols)."""
    lib = library()
    a, bt = _rows(a), _rows(b.t())
    out = a.new_empty(col.numel())
    ncols = a.shape[1]
    ptrs = (crow.data_ptr(), col.data_ptr(), a.data_ptr(), a.stride(0), bt.data_ptr(),
            bt.stride(0), ncols, out.data_ptr())
    jobs = [lambda r0=r0, r1=r1: lib.sb_sddmm(r0, r1, *ptrs)
            for r0, r1 in _row_ranges(crow, _threads(col.numel() * ncols))]
    _run(jobs)
    return out


def linear_backward(crow: Tensor, col: Tensor, values: Tensor, grad_t: Tensor, x_t: Tensor,
                    grad_x_t: Tensor) -> Tensor:
    """Both gradients of Y = X Wᵀ in one pass: ``grad_x_t`` (Xᵀ's shape, unit column stride,
    zeros on entry) receives dXᵀ = Wᵀ dYᵀ; returns dW at the active positions (aligned with
    ``col``). ``grad_t`` is dYᵀ (out × R), ``x_t`` is Xᵀ (in × R)."""
    lib = library()
    g, xt = _rows(grad_t), _rows(x_t)
    ncols = g.shape[1]
    parts = min(_threads(col.numel() * ncols), max(1, ncols // 16))
    # Split the batch columns (multiples of 16: whole cache lines); each part its own dW.
    bounds = [round(ncols * k / parts / 16) * 16 for k in range(parts)] + [ncols]
    partial = values.new_empty(parts, col.numel())
    item = g.element_size()
    jobs = [lambda k=k, c0=c0, c1=c1: lib.sb_linear_backward(
                0, crow.numel() - 1, crow.data_ptr(), col.data_ptr(), values.data_ptr(),
                g.data_ptr() + c0 * item, g.stride(0), xt.data_ptr() + c0 * item, xt.stride(0),
                grad_x_t.data_ptr() + c0 * item, grad_x_t.stride(0), c1 - c0,
                partial[k].data_ptr())
            for k, (c0, c1) in enumerate(zip(bounds, bounds[1:]))]
    _run(jobs)
    return partial[0] if parts == 1 else partial.sum(0)
