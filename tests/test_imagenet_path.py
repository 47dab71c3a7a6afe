"""The ImageNet path with a real torchvision: an ImageFolder tree generated here, the loader's
transforms, our ResNet-50 against torchvision's, and a run of the trainer on it (reduced width,
one short epoch at a time, a checkpoint resume, score batches).

These need torchvision built for the installed torch; `make test` runs them in .venv-vision on
the pair sparsebench.torch_versions.TESTED (``pytest -m vision``). The main environment runs the
rest (``-m "not vision"``).
"""
from __future__ import annotations

import json

import pytest
import torch

from sparsebench.storage import paths
from sparsebench.training import preflight
from sparsebench import resolve, torch_versions
from sparsebench.config.schema import run_id

from .conftest import REPO

pytestmark = [pytest.mark.vision, pytest.mark.timeout(300)]

CLASSES = ("n01440764", "n01443537", "n01484850", "n01491361")
PER_CLASS = {"train": 8, "val": 2}


@pytest.fixture(scope="module")
def torchvision():
    """torchvision, usable beside this torch (a failure here, never a skip: the vision tests
    run only where set-up installed the pair)."""
    problem = torch_versions.vision_problem()
    assert problem is None, problem
    import torchvision

    return torchvision


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared CPU, two threads of such small convolutions mostly wait
    for each other (about ten times slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def imagenet_tree(tmp_path_factory, torchvision):
    """root/{train,val}/<wnid>/*.JPEG: small random JPEGs of several sizes, one tint per class."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagenet")
    g = torch.Generator().manual_seed(0)
    sizes = [(40, 40), (48, 56), (64, 40)]
    for split, n in PER_CLASS.items():
        for c, wnid in enumerate(CLASSES):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(n):
                w, h = sizes[(c + i) % len(sizes)]
                pixels = torch.randint(0, 128, (h, w, 3), generator=g, dtype=torch.uint8)
                pixels[..., c % 3] += 40 * c
                Image.fromarray(pixels.numpy()).save(folder / f"{wnid}_{i}.JPEG")
    return root


def test_loader_reads_the_tree_in_torchvision_layout(imagenet_tree):
    from sparsebench.data.imagenet import load_imagenet

    train = load_imagenet(imagenet_tree, 8, train=True, seed=3, num_workers=0)
    val = load_imagenet(imagenet_tree, 4, train=False, num_workers=0)
    assert train.classes == list(CLASSES) and train.num_examples == 32 and val.num_examples == 8
    x, y = next(iter(train))
    assert x.shape == (8, 3, 224, 224) and x.dtype == torch.float32 and y.shape == (8,)
    labels = torch.cat([y for _, y in val])
    assert labels.tolist() == [c for c in range(4) for _ in range(2)]  # val: in order
    # The same (seed, epoch) gives the same order; another epoch another.
    def order(epoch):
        train.set_epoch(epoch)
        return torch.cat([y for _, y in train]).tolist()
    assert order(0) == order(0) and order(0) != order(1)


def test_our_resnet50_is_torchvisions(torchvision):
    """Same layers in the same order and, with torchvision's weights copied in, the same output
    (at a reduced resolution: any input of at least 32x32 works)."""
    from sparsebench.models import build_model

    ours = build_model("resnet50", num_classes=10, in_shape=(3, 64, 64), width=1.0)
    theirs = torchvision.models.resnet50(num_classes=10)
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert [v.shape for v in ours_state.values()] == [v.shape for v in theirs_state.values()]
    ours.load_state_dict(dict(zip(ours_state, theirs_state.values())))
    ours.eval(), theirs.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)


def _cfg(tree, *extra: str):
    # The ImageNet recipe at a reduced width, in float32 (bfloat16 autocast is slow on CPUs).
    return resolve.load(REPO / "configs" / "imagenet_resnet50.yaml", [
        f"data.root={tree}", "data.batch_size=8", "data.test_batch_size=8", "model.width=0.125",
        "epochs=2", "optim.warmup_epochs=0", "progress=false", "sweep=imagenet_path",
        "amp=false", "channels_last=false",
        "method.name=rigl", "method.score_samples_per_class=2", "density=0.2", *extra])


def test_a_run_trains_resumes_and_scores_on_the_tree(imagenet_tree, monkeypatch):
    from sparsebench.data import imagenet
    from sparsebench.training import train

    monkeypatch.setattr(imagenet, "CROP", 64)  # a reduced resolution: 64x64 crops
    monkeypatch.setattr(imagenet, "RESIZE", 73)

    cfg = _cfg(imagenet_tree)
    preflight.check(cfg)  # torchvision usable, the tree found, the batch within it
    folder = paths.run_dir(cfg.sweep, run_id(cfg))
    assert train(cfg, stop_after_epochs=1)["status"] == "interrupted"
    assert (folder / paths.CHECKPOINT).is_file()
    result = train(cfg)
    assert result["status"] == "completed", result
    assert "resumed from checkpoint after epoch 1" in (folder / paths.LOG).read_text()
    assert result["steps"] == 2 * 32 // 8 and abs(result["actual_density"] - 0.2) < 0.02
    metrics = [json.loads(line) for line in (folder / paths.METRICS).read_text().splitlines()]
    assert [m["epoch"] for m in metrics if "test_acc" in m][-2:] == [1, 2]

    # The same run in one go: the resumed one is the same run.
    again = _cfg(imagenet_tree, "sweep=imagenet_path_again")
    whole = train(again)
    for key in ("final_test_acc", "final_train_loss", "steps", "actual_density"):
        assert whole[key] == result[key], key
    # RigL scored on batches of their own (a copy of the ImageFolder loader), resumed alike.
    assert result["method_params"]["score_samples_per_class"] == 2 and result["train_flops"] > 0
