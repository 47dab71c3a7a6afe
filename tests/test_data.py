"""Tests for sparsebench.data: file readers, root search, TensorLoader, build_data.

The readers are tested on tiny files of the real formats written here.
"""

from __future__ import annotations

import gzip
import pathlib
import pickle
import struct
import sys

import numpy as np

import pytest
import torch

import sparsebench.data as data
from sparsebench.data import cifar, idx
from sparsebench.data.loader import TensorLoader, crop_flip

FMNIST = pathlib.Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------- writers of the real formats

def write_idx(path: pathlib.Path, arr: np.ndarray, compress: bool = True) -> pathlib.Path:
    """An IDX file: 0, 0, dtype code 0x08 (uint8), ndim, big-endian dims, data."""
    assert arr.dtype == np.uint8
    raw = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def make_mnist(folder: pathlib.Path, n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for key, stem in idx.MNIST_FILES.items():
        write_idx(folder / (stem + ".gz"), arrays[key])
    return arrays


def write_pickle(path: pathlib.Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the real files are Python-2 pickles


def make_cifar10(folder: pathlib.Path, per_batch=4, n_test=6, seed=0):
    """A cifar-10-batches-py/ folder under `folder`; returns the (x, y) written."""
    rng = np.random.default_rng(seed)
    d = folder / cifar.CIFAR10_DIR
    d.mkdir(parents=True)
    written = {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, n)]
        write_pickle(d / name, {b"batch_label": name.encode(), b"labels": y, b"data": x,
                                b"filenames": [b"f%d.png" % i for i in range(n)]})
        written[name] = (x, y)
    return written


def make_cifar100(folder: pathlib.Path, n_train=7, n_test=3, seed=0):
    rng = np.random.default_rng(seed)
    d = folder / cifar.CIFAR100_DIR
    d.mkdir(parents=True)
    written = {}
    for name, n in [("train", n_train), ("test", n_test)]:
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        coarse = [v // 5 for v in fine]
        write_pickle(d / name, {b"filenames": [b"a"] * n, b"batch_label": b"x", b"fine_labels": fine,
                                b"coarse_labels": coarse, b"data": x})
        written[name] = (x, fine)
    return written


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No SPARSEBENCH_DATA, cwd in an empty folder, no system data sets."""
    monkeypatch.delenv("SPARSEBENCH_DATA", raising=False)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(data, "SYSTEM_DIR", tmp_path / "system")
    data._load_uint8.cache_clear()
    return tmp_path


# ---------------------------------------------------------------- readers

@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_roundtrip(tmp_path, compress):
    arr = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    t = idx.read_idx(write_idx(tmp_path / "a.idx", arr, compress))
    assert t.dtype == torch.uint8 and t.shape == (2, 3, 5)
    assert torch.equal(t, torch.from_numpy(arr))


def test_load_mnist_like_returns_written_content(tmp_path):
    arrays = make_mnist(tmp_path / "m")
    x_tr, y_tr, x_te, y_te = idx.load_mnist_like(tmp_path / "m")
    assert x_tr.shape == (12, 1, 28, 28) and x_tr.dtype == torch.uint8
    assert y_tr.dtype == torch.int64
    assert torch.equal(x_tr[:, 0], torch.from_numpy(arrays["x_train"]))
    assert torch.equal(y_tr, torch.from_numpy(arrays["y_train"]).long())
    assert torch.equal(x_te[:, 0], torch.from_numpy(arrays["x_test"]))
    assert torch.equal(y_te, torch.from_numpy(arrays["y_test"]).long())


def test_idx_bad_magic_and_size_name_the_file(tmp_path):
    bad = tmp_path / "bad-magic.gz"
    bad.write_bytes(gzip.compress(b"\x12\x34\x08\x01" + struct.pack(">I", 2) + b"ab"))
    with pytest.raises(ValueError, match="bad-magic.gz"):
        idx.read_idx(bad)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + b"abc"))
    with pytest.raises(ValueError, match="short.gz.*size"):
        idx.read_idx(short)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(b"\x00" * 100)[:20])
    with pytest.raises(ValueError, match="broken.gz"):
        idx.read_idx(broken)


def test_mnist_label_count_mismatch(tmp_path):
    make_mnist(tmp_path / "m")
    write_idx(tmp_path / "m" / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="t10k-labels"):
        idx.load_mnist_like(tmp_path / "m")


@pytest.mark.parametrize("inside", [False, True])
def test_cifar10_reader(tmp_path, inside):
    written = make_cifar10(tmp_path)
    folder = tmp_path / cifar.CIFAR10_DIR if inside else tmp_path  # the folder or its parent
    x_tr, y_tr, x_te, y_te = cifar.load_cifar10(folder)
    assert x_tr.shape == (20, 3, 32, 32) and x_tr.dtype == torch.uint8
    assert y_tr.dtype == torch.int64 and y_tr.shape == (20,)
    want_x = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    want_y = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert torch.equal(x_tr, torch.from_numpy(want_x).view(-1, 3, 32, 32))
    assert y_tr.tolist() == want_y
    assert torch.equal(x_te.reshape(6, -1), torch.from_numpy(written["test_batch"][0]))
    assert y_te.tolist() == written["test_batch"][1]
    # channel-major layout: the first 1024 bytes of a row are the red plane
    assert torch.equal(x_tr[0, 0].flatten(), torch.from_numpy(want_x[0, :1024]))


def test_cifar100_reader(tmp_path):
    written = make_cifar100(tmp_path)
    x_tr, y_tr, x_te, y_te = cifar.load_cifar100(tmp_path)
    assert x_tr.shape == (7, 3, 32, 32) and x_te.shape == (3, 3, 32, 32)
    assert torch.equal(x_tr.reshape(7, -1), torch.from_numpy(written["train"][0]))
    assert y_tr.tolist() == written["train"][1] and y_te.tolist() == written["test"][1]


def test_cifar_corrupt_pickle_names_the_file(tmp_path):
    make_cifar10(tmp_path)
    (tmp_path / cifar.CIFAR10_DIR / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="data_batch_3"):
        cifar.load_cifar10(tmp_path)


# ---------------------------------------------------------------- root search

def test_find_root_env_cwd_and_aliases(isolated, monkeypatch):
    tmp = isolated
    make_mnist(tmp / "cwd" / "data" / "MNIST")  # ./data/<alias>
    assert data.find_root("mnist") == pathlib.Path.cwd() / "data" / "MNIST"
    make_mnist(tmp / "env" / "mnist")  # $SPARSEBENCH_DATA comes first
    monkeypatch.setenv("SPARSEBENCH_DATA", str(tmp / "env"))
    assert data.find_root("mnist") == tmp / "env" / "mnist"
    make_mnist(tmp / "env" / "FashionMNIST" / "raw")  # torchvision's layout
    assert data.find_root("fashion_mnist") == tmp / "env" / "FashionMNIST"
    make_cifar10(tmp / "env" / "cifar-10")
    assert data.find_root("cifar10") == tmp / "env" / "cifar-10"
    make_cifar100(tmp / "system" / "cifar100")  # the system folder is searched last
    assert data.find_root("cifar100") == tmp / "system" / "cifar100"
    assert data.find_root("mnist", root=str(tmp / "cwd" / "data" / "MNIST")) == tmp / "cwd" / "data" / "MNIST"


def test_missing_dataset_lists_paths(isolated, monkeypatch):
    monkeypatch.setenv("SPARSEBENCH_DATA", str(isolated / "env"))
    (pathlib.Path.cwd() / "data" / "cifar10").mkdir(parents=True)  # exists but empty: skipped
    with pytest.raises(FileNotFoundError) as e:
        data.find_root("cifar10")
    msg = str(e.value)
    for base in (isolated / "env", pathlib.Path.cwd() / "data", isolated / "system"):
        for alias in ("cifar10", "cifar-10"):
            assert str(base / alias) in msg
    assert "cifar-10-python.tar.gz" in msg
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        data.find_root("fashion_mnist")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.find_root("mnist", root=str(isolated / "nowhere"))


def test_unknown_name():
    with pytest.raises(ValueError, match="cifar100"):
        data.find_root("svhn")
    with pytest.raises(ValueError, match="fashion_mnist"):
        data.build_data("svhn", batch_size=2, test_batch_size=2, device=torch.device("cpu"), seed=0)


# ---------------------------------------------------------------- TensorLoader

def _loader(n=10, bs=3, **kw):
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    kw = {"shuffle": True, "drop_last": False, "seed": 0} | kw
    return TensorLoader(x, torch.arange(n), bs, **kw)


def _order(loader):
    return torch.cat([yb for _, yb in loader]).tolist()


def test_loader_covers_every_example_once():
    ld = _loader(10, 3)
    assert len(ld) == 4
    batches = list(ld)
    assert [len(yb) for _, yb in batches] == [3, 3, 3, 1]
    assert all(xb.shape[1:] == (1, 2, 2) for xb, _ in batches)
    assert all(torch.equal(xb[:, 0, 0, 0].long(), yb) for xb, yb in batches)  # x and y stay paired
    order = _order(ld)
    assert sorted(order) == list(range(10)) and order != list(range(10))


def test_loader_drop_last_and_no_shuffle():
    ld = _loader(10, 3, drop_last=True)
    assert len(ld) == 3 and [len(yb) for _, yb in ld] == [3, 3, 3]
    assert _order(_loader(10, 4, shuffle=False)) == list(range(10))
    with pytest.raises(ValueError, match="no batches"):
        _loader(2, 3, drop_last=True)


def test_loader_order_depends_only_on_seed_and_epoch():
    a, b = _loader(50, 7), _loader(50, 7)
    a.set_epoch(3)
    next(iter(b))  # a partial iteration of another epoch must not matter
    b.set_epoch(3)
    assert _order(a) == _order(b) == _order(a)
    b.set_epoch(4)
    assert _order(b) != _order(a)
    assert _order(_loader(50, 7, seed=1)) != _order(_loader(50, 7, seed=0))


def test_loader_does_not_touch_global_rng():
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    list(_loader(20, 4, augment="crop_flip"))
    assert torch.equal(torch.rand(3), want)


def _reference_crop_flip(img, dy, dx, flip, pad=4):
    h, w = img.shape[-2:]
    out = torch.nn.functional.pad(img, (pad,) * 4)[:, dy:dy + h, dx:dx + w]
    return torch.flip(out, dims=[-1]) if flip else out


def test_crop_flip_function():
    x = torch.randn(3, 2, 6, 5)
    dy, dx = torch.tensor([4, 0, 8]), torch.tensor([4, 3, 1])
    flip = torch.tensor([True, False, True])
    out = crop_flip(x, dy, dx, flip, pad=4)
    assert out.shape == x.shape
    assert torch.equal(out[0], torch.flip(x[0], dims=[-1]))  # centered crop + flip = torch.flip
    for b in range(3):
        assert torch.equal(out[b], _reference_crop_flip(x[b], int(dy[b]), int(dx[b]), bool(flip[b])))


def test_crop_flip_loader_augments_deterministically():
    n = 64
    x = torch.rand(n, 3, 8, 8) + 1  # positive, so zero padding shows up; asymmetric images
    y = torch.arange(n)
    make = lambda: TensorLoader(x, y, 16, shuffle=True, drop_last=True, augment="crop_flip", seed=5)
    a, b = make(), make()
    a.set_epoch(2)
    b.set_epoch(2)
    ba, bb = list(a), list(b)
    assert all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(ba, bb))
    assert all(xb.shape == (16, 3, 8, 8) for xb, _ in ba)
    changed = 0
    for xb, yb in ba:
        for img, i in zip(xb, yb.tolist()):
            # every output is some crop/flip of its own source image
            assert any(torch.equal(img, _reference_crop_flip(x[i], dy, dx, f, 4))
                       for dy in range(9) for dx in range(9) for f in (False, True))
            changed += not torch.equal(img, x[i])
    assert changed > n // 2
    b.set_epoch(3)
    assert not torch.equal(torch.cat([xb for xb, _ in b]), torch.cat([xb for xb, _ in ba]))
    # a centered crop with flip (p = 1/162 per image, too rare to wait for) is exactly torch.flip
    forced = crop_flip(x[:1], torch.tensor([4]), torch.tensor([4]), torch.tensor([True]), 4)
    assert torch.equal(forced[0], torch.flip(x[0], dims=[-1]))


# ---------------------------------------------------------------- build_data

def test_build_data_cifar10(isolated):
    make_cifar10(isolated / "c10", per_batch=8, n_test=6)
    cpu = torch.device("cpu")
    d = data.build_data("cifar10", batch_size=8, test_batch_size=4, device=cpu, seed=0,
                        root=str(isolated / "c10"))
    assert d.info == data.DatasetInfo("cifar10", 10, (3, 32, 32), 40, 6)
    assert d.train.augment == "crop_flip" and d.test.augment is None
    assert d.train.drop_last and d.train.shuffle and not d.test.shuffle and not d.test.drop_last
    assert len(d.train) == 5 and len(d.test) == 2
    x_raw = cifar.load_cifar10(isolated / "c10")[2].float() / 255
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    xt = torch.cat([xb for xb, _ in d.test])
    assert xt.dtype == torch.float32 and torch.allclose(xt, (x_raw - mean) / std, atol=1e-6)
    xb, yb = next(iter(d.train))
    assert xb.shape == (8, 3, 32, 32) and xb.dtype == torch.float32 and yb.dtype == torch.int64

    sub = data.build_data("cifar10", batch_size=4, test_batch_size=4, device=cpu, seed=0,
                          root=str(isolated / "c10"), train_subset=12, augment=False)
    assert sub.info.train_size == 12 and sub.train.augment is None and len(sub.train) == 3
    assert data._load_uint8.cache_info().hits >= 1  # the second build reused the decoded files


@pytest.mark.parametrize("pad_value", ["black", "mean"])
def test_crop_pads_with_a_black_raw_pixel_as_torchvision_does(isolated, pad_value):
    """The crop's border is a black raw pixel normalized, (0 - mean) / std per channel (as
    RandomCrop(padding=4) before Normalize); pad_value mean keeps the old 0 (the mean colour)."""
    d = isolated / "white" / cifar.CIFAR10_DIR
    d.mkdir(parents=True)
    white = np.full((16, 3072), 255, dtype=np.uint8)        # every image pixel is white
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_pickle(d / name, {b"labels": [0] * 16, b"data": white})
    loaded = data.build_data("cifar10", batch_size=80, test_batch_size=16,
                             device=torch.device("cpu"), seed=0, root=str(d.parent),
                             pad_value=pad_value)
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)
    black = (0 - mean) / std                                  # ≈ (-1.99, -1.98, -1.71)
    want = black if pad_value == "black" else torch.zeros(3, 1, 1)
    image = (1 - mean) / std
    xb, _ = next(iter(loaded.train))
    is_image = torch.isclose(xb, image.expand_as(xb[0]), atol=1e-6).all(dim=1)   # (B, H, W)
    is_border = torch.isclose(xb, want.expand_as(xb[0]), atol=1e-6).all(dim=1)
    assert (is_image ^ is_border).all()                       # each pixel one or the other
    assert is_border.sum() > 1000                             # crops of 80 images: ~1/4 border
    # A crop at offset (0, 0): the top four rows and left four columns are the border.
    corner = crop_flip(xb[:1], torch.tensor([0]), torch.tensor([0]), torch.tensor([False]), 4,
                       loaded.train.pad_fill)[0]
    assert torch.allclose(corner[:, :4, :], want.expand(3, 4, 32), atol=1e-6)
    assert torch.allclose(corner[:, 4:, :4], want.expand(3, 28, 4), atol=1e-6)
    assert torch.allclose(corner[:, 4:, 4:], image.expand(3, 28, 28), atol=1e-6)


def test_build_data_mnist_default_no_augment(isolated):
    make_mnist(isolated / "cwd" / "data" / "mnist", n_train=12, n_test=5)
    d = data.build_data("mnist", batch_size=4, test_batch_size=5, device=torch.device("cpu"), seed=0)
    assert d.info == data.DatasetInfo("mnist", 10, (1, 28, 28), 12, 5)
    assert d.train.augment is None


@pytest.mark.skipif(not FMNIST.is_dir(), reason=f"{FMNIST} absent (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist(monkeypatch, tmp_path):
    monkeypatch.delenv("SPARSEBENCH_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    d = data.build_data("fashion_mnist", batch_size=1000, test_batch_size=1000,
                        device=torch.device("cpu"), seed=0)
    assert d.info == data.DatasetInfo("fashion_mnist", 10, (1, 28, 28), 60000, 10000)
    for loader in (d.train, d.test):
        assert loader.y.min() == 0 and loader.y.max() == 9
    assert abs(d.train.x.mean().item()) < 0.01 and abs(d.train.x.std().item() - 1) < 0.01


@pytest.fixture
def no_torchvision(monkeypatch):
    """torchvision unimportable, whether or not it is installed here."""
    from sparsebench import torch_versions

    monkeypatch.setitem(sys.modules, "torchvision", None)
    torch_versions.vision_problem.cache_clear()
    yield
    torch_versions.vision_problem.cache_clear()


def test_imagenet_without_torchvision(tmp_path, no_torchvision):
    from sparsebench.data.imagenet import load_imagenet

    for split in ("train", "val"):
        (tmp_path / split / "n01440764").mkdir(parents=True)
    with pytest.raises(RuntimeError, match=r"torchvision is needed for ImageNet: .*install the matching pair: pip install torch=="):
        load_imagenet(tmp_path, 4, train=True)
    with pytest.raises(RuntimeError, match="torchvision"):
        data.build_data("imagenet", batch_size=4, test_batch_size=4, device=torch.device("cpu"),
                        seed=0, root=str(tmp_path))


def test_imagenet_device_loader_wrapper():
    """The DataLoader wrapper (tested on a TensorDataset; no torchvision needed)."""
    from sparsebench.data.imagenet import DeviceLoader

    ds = torch.utils.data.TensorDataset(torch.randn(10, 3, 4, 4), torch.arange(10))
    make = lambda: DeviceLoader(ds, 3, shuffle=True, drop_last=True, device=torch.device("cpu"), seed=1)
    a, b = make(), make()
    assert len(a) == 3 and a.num_examples == 10
    a.set_epoch(1)
    b.set_epoch(1)
    assert _order(a) == _order(b) == _order(a) and len(set(_order(a))) == 9
    b.set_epoch(2)
    assert _order(b) != _order(a)
