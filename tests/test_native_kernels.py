"""The C sparse kernels (``sparsebench.sparsity.native``) against torch's: SpMM, SDDMM and the
linear layer's fused backward, on one thread and split over several, at batch widths that are
not multiples of the kernels' blocks; and the fallback where no compiler works."""
from __future__ import annotations

import pytest
import torch

from sparsebench.sparsity import native
from sparsebench.sparsity.sparse_linear import CsrStructure, SparseLinear, csr_row_pointers

from .conftest import STRICT


@pytest.fixture
def lib():
    if native.library() is None:
        if STRICT:
            pytest.fail("the C sparse kernels could not be built")
        pytest.skip("no C compiler: the C kernels cannot be tested here")
    return native.library()


@pytest.fixture(params=[1, 3], ids=["1thread", "3threads"])
def threads(request, monkeypatch):
    """One thread, or three with every product split (no minimum size)."""
    monkeypatch.setattr(native, "PARALLEL_MIN_WORK", 0 if request.param > 1 else 1 << 60)
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def _csr(rows, cols, nnz, seed):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(rows * cols, generator=g)[:nnz].sort().values
    return CsrStructure(idx, rows, cols), torch.randn(nnz, generator=g), idx


def _dense(s, values, rows, cols):
    w = torch.zeros(rows * cols)
    w[s.rows * cols + s.cols] = values
    return w.view(rows, cols)


@pytest.mark.parametrize("ncols", [1, 5, 37, 130, 200])
def test_spmm_equals_the_dense_product_with_bias_and_accumulation(lib, threads, ncols):
    s, values, _ = _csr(40, 30, 300, seed=ncols)
    w = _dense(s, values, 40, 30)
    dense = torch.randn(30, ncols)
    bias = torch.randn(40)
    out = torch.full((40, ncols), float("nan"))
    native.spmm(s.crow, s.cols, values, dense, bias, out)
    torch.testing.assert_close(out, bias[:, None] + w @ dense, rtol=1e-5, atol=1e-5)
    # accumulate into a row-strided window, from a row-strided (and a transposed) operand
    big = torch.randn(40, ncols + 7)
    window = big[:, 3: 3 + ncols]
    expected = window + w @ dense
    source = torch.randn(30, ncols + 4)[:, 2: 2 + ncols]
    source.copy_(dense)
    native.spmm(s.crow, s.cols, values, source, None, window, accumulate=True)
    torch.testing.assert_close(window, expected, rtol=1e-5, atol=1e-5)
    native.spmm(s.crow, s.cols, values, dense.t().contiguous().t(), None, out)
    torch.testing.assert_close(out, w @ dense, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ncols", [3, 64, 129])
def test_sddmm_is_the_product_at_the_active_positions_only(lib, threads, ncols):
    s, _, idx = _csr(25, 50, 200, seed=ncols)
    a, b = torch.randn(25, ncols), torch.randn(ncols, 50)
    got = native.sddmm(s.crow, s.cols, a, b)
    torch.testing.assert_close(got, (a @ b).view(-1)[idx], rtol=1e-5, atol=1e-5)
    # b given row-major (the transposed layout is the kernel's; this one is copied)
    torch.testing.assert_close(native.sddmm(s.crow, s.cols, a, b.contiguous()), got)


@pytest.mark.parametrize("ncols", [7, 48, 130])
def test_fused_backward_gives_both_gradients_of_the_linear_map(lib, threads, ncols):
    out_f, in_f = 30, 45
    s, values, idx = _csr(out_f, in_f, 400, seed=ncols)
    w = _dense(s, values, out_f, in_f).requires_grad_()
    x = torch.randn(ncols, in_f, requires_grad=True)
    dy = torch.randn(ncols, out_f)
    (x @ w.t()).backward(dy)
    grad_x_t = torch.zeros(in_f, ncols)
    dw = native.linear_backward(s.crow, s.cols, values, dy.t(), x.detach().t(), grad_x_t)
    torch.testing.assert_close(grad_x_t.t(), x.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dw, w.grad.view(-1)[idx], rtol=1e-5, atol=1e-5)


def test_empty_rows_and_an_empty_matrix(lib):
    crow = csr_row_pointers(torch.tensor([2, 2]), 4)       # rows 0, 1, 3 empty
    col = torch.tensor([0, 3])
    values = torch.tensor([2.0, -1.0])
    dense = torch.randn(5, 6)
    out = torch.full((4, 6), 7.0)
    native.spmm(crow, col, values, dense, None, out)
    torch.testing.assert_close(out[2], 2 * dense[0] - dense[3])
    assert torch.equal(out[[0, 1, 3]], torch.zeros(3, 6))
    empty = torch.zeros(5, dtype=torch.long)
    assert native.sddmm(empty, empty[:0], torch.randn(4, 3), torch.randn(3, 2)).numel() == 0


def test_the_build_is_cached_per_machine_and_reused(lib, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path))
    first = native.build()
    assert first.parent == tmp_path and first.suffix == ".so"
    mtime = first.stat().st_mtime_ns
    assert native.build() == first and first.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [first.name]   # no temporary files left


def test_without_a_compiler_layers_fall_back_to_torch_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")                 # a "compiler" that always fails
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_library", None)
    with pytest.warns(RuntimeWarning, match="C sparse kernels are unavailable"):
        assert native.library() is None
    assert not native.usable(torch.ones(1))
    layer = SparseLinear(6, 5, torch.tensor([1, 7, 20]), torch.tensor([1.0, 2.0, 3.0]), None)
    x = torch.randn(4, 6, requires_grad=True)
    layer(x).sum().backward()
    torch.testing.assert_close(layer.values.grad,
                               torch.stack([x[:, 1].sum(), x[:, 1].sum(), x[:, 2].sum()]))


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("SPARSEBENCH_NATIVE", "0")
    assert native.library() is None
