"""FLOPs: the counter against hand counts, and the training FLOPs the trainer sums per step.

Hand counts (one example, bias and elementwise work not counted, as in Evci et al. 2020):
a Linear(n_in, n_out) costs 2·n_in·n_out (a multiply and an add per connection), a Conv2d
2·C_out·C_in·k_h·k_w·H_out·W_out. With masks, each prunable layer costs its density times that
(2 FLOPs per active connection for a Linear), the rest stays dense.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsebench import methods, resolve
from sparsebench.flops import FlopModel
from sparsebench.models import build_model
from sparsebench.sparsity.dst import UpdateSchedule
from sparsebench.sparsity.engine import SparsityEngine
from sparsebench.training import train

from .conftest import REPO, needs_fmnist

MLP_SHAPES = {"net.1": (784, 300), "net.3": (300, 100), "net.5": (100, 10)}


def keep_exactly(engine: SparsityEngine, name: str, k: int, seed: int = 0) -> None:
    """Mask of layer ``name`` with exactly ``k`` active connections at random positions."""
    layer = engine.by_name[name]
    mask = torch.zeros(layer.numel, dtype=torch.bool)
    mask[torch.randperm(layer.numel, generator=torch.Generator().manual_seed(seed))[:k]] = True
    engine.set_mask(layer, mask.view_as(layer.mask))


def test_mlp_dense_and_at_known_masks():
    model = build_model("mlp", num_classes=10, in_shape=(1, 28, 28))
    engine = SparsityEngine.for_model(model, 1.0, "uniform")
    fm = FlopModel(model, engine, (1, 28, 28))
    assert fm.dense_forward() == 2 * (784 * 300 + 300 * 100 + 100 * 10)
    assert fm.layer == {name: 2 * i * o for name, (i, o) in MLP_SHAPES.items()}
    assert fm.sparse_forward() == fm.dense_forward()  # all masks full

    active = {"net.1": 11_760, "net.3": 3_000, "net.5": 1_000}  # densities 5 %, 10 %, 100 %
    for name, k in active.items():
        keep_exactly(engine, name, k)
    # Each active connection is one multiply-add per example.
    assert fm.sparse_forward() == pytest.approx(2 * sum(active.values()), rel=1e-12)
    keep_exactly(engine, "net.5", 500)  # a mask change is seen (no stale cache)
    assert fm.sparse_forward() == pytest.approx(2 * (11_760 + 3_000 + 500), rel=1e-12)


class SmallConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)             # 8×8 -> 8×8
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)  # 8×8 -> 4×4
        self.pool = nn.MaxPool2d(2)                            # 4×4 -> 2×2
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(x.flatten(1))


def test_conv_net_dense_and_masked_with_a_dense_first_layer():
    conv1 = 2 * 8 * 3 * 3 * 3 * 8 * 8
    conv2 = 2 * 16 * 8 * 3 * 3 * 4 * 4
    fc = 2 * 64 * 10
    model = SmallConvNet()
    # The first layer stays dense: its work is non-prunable and must be counted in full.
    engine = SparsityEngine.for_model(model, 1.0, "uniform", dense_first_layer=True)
    assert [layer.name for layer in engine.layers] == ["conv2", "fc"]
    fm = FlopModel(model, engine, (3, 8, 8))
    assert fm.dense_forward() == conv1 + conv2 + fc
    assert fm.layer == {"conv2": conv2, "fc": fc}
    keep_exactly(engine, "conv2", 16 * 8 * 9 // 4)   # density 1/4
    keep_exactly(engine, "fc", 64 * 10 // 2)         # density 1/2
    assert fm.sparse_forward() == pytest.approx(conv1 + conv2 / 4 + fc / 2, rel=1e-12)


# ---- training FLOPs, summed by the trainer over a real (tiny) run ---------------------------

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")
# 1024 examples in batches of 128: 8 steps, one epoch.
TINY = ["data.train_subset=1024", "data.batch_size=128", "epochs=1", "progress=false"]


def hand_sparse_forward(layer_densities: dict[str, float]) -> float:
    return sum(2 * i * o * layer_densities[name] for name, (i, o) in MLP_SHAPES.items())


@needs_fmnist
def test_static_training_flops_are_three_sparse_forwards_per_example():
    result = train(resolve.load(BASE, TINY + ["method.name=static", "density=0.1"]))
    assert result["status"] == "completed"
    f_s = hand_sparse_forward(result["layer_densities"])
    f_d = 2 * sum(i * o for i, o in MLP_SHAPES.values())
    examples = 8 * 128
    assert result["inference_flops"] == pytest.approx(f_s, rel=1e-12)
    assert result["dense_forward_flops"] == f_d
    assert result["train_flops"] == pytest.approx(3 * f_s * examples, rel=1e-12)
    assert result["train_flops_rel_dense"] == pytest.approx(f_s / f_d, rel=1e-12)
    assert result["inference_flops_rel_dense"] == pytest.approx(f_s / f_d, rel=1e-12)


@needs_fmnist
def test_rigl_exceeds_set_by_exactly_its_dense_gradient_steps():
    # Same schedule, distribution and seed: both keep every layer's active count, so f_S is the
    # same for both throughout; RigL's update steps cost 2·f_S + f_D instead of 3·f_S
    # (Evci et al. 2020, App. H), i.e. f_D − f_S more per example.
    shared = TINY + ["density=0.1", "sparsity.distribution=erk", "method.interval=2",
                     "method.end=1.0", "method.drop_fraction=0.3", "method.drop_schedule=cosine"]
    set_cfg = resolve.load(BASE, shared + ["method.name=set"])
    rigl_cfg = resolve.load(BASE, shared + ["method.name=rigl"])
    set_run, rigl_run = train(set_cfg), train(rigl_cfg)
    assert set_run["status"] == rigl_run["status"] == "completed"
    f_s, f_d = set_run["inference_flops"], set_run["dense_forward_flops"]
    assert rigl_run["inference_flops"] == pytest.approx(f_s, rel=1e-12)
    examples = 8 * 128
    assert set_run["train_flops"] == pytest.approx(3 * f_s * examples, rel=1e-12)

    rigl = methods.get("rigl")
    schedule = UpdateSchedule.from_params(rigl.Params(**rigl_cfg.method.params),
                                          total_steps=8, steps_per_epoch=8)
    dense_gradient_steps = len(schedule.update_steps())
    assert dense_gradient_steps >= 2  # e.g. after steps 2, 4 and 6 of 8
    extra = rigl_run["train_flops"] - set_run["train_flops"]
    assert extra == pytest.approx(dense_gradient_steps * 128 * (f_d - f_s), rel=1e-9)
