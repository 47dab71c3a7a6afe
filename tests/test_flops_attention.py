"""FLOPs of SimpleViT-tiny, attention included, the same on every device.

``FlopCounterMode`` has no formula for the CPU's fused attention kernel and counted it as 0,
while it counts the CUDA kernels: a ViT's FLOPs differed ~3x between a CPU and a GPU run.
The count here is written from the layer shapes: per example and block, the attention is two
batched products over t tokens and H heads of d_h dimensions, QKᵀ and AV, 2·H·t²·d_h FLOPs each;
every Linear(n_in, n_out) applied to t tokens costs 2·t·n_in·n_out, times its density.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsebench import resolve
from sparsebench.flops import forward_flops_by_module
from sparsebench.models import build_model
from sparsebench.training import train

from .conftest import REPO
from .synthetic_cifar import use_synthetic_cifar100

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")
WIDTH = 0.0625      # dim 32, 1 head of 64 dimensions, MLP 16: seconds on a CPU
TOKENS = (32 // 4) ** 2


def vit_counts(model: nn.Module, densities: dict[str, float]) -> tuple[float, float]:
    """(dense, sparse) forward FLOPs of one example, from the layer shapes."""
    dense = sparse = 0.0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            tokens = 1 if name.startswith("head") else TOKENS   # the head sees the pooled token
            flops = 2 * tokens * module.in_features * module.out_features
            dense += flops
            sparse += flops * densities.get(name, 1.0)
    for block, _ in model.blocks:
        heads, dim_head = block.heads, block.to_out.in_features // block.heads
        attention = 2 * (2 * heads * TOKENS * TOKENS * dim_head)    # QKᵀ and AV, never pruned
        dense += attention
        sparse += attention
    return dense, sparse


def test_the_counter_counts_attention_on_the_cpu():
    model = build_model("simple_vit_tiny", num_classes=100, in_shape=(3, 32, 32), width=WIDTH)
    total, per_module = forward_flops_by_module(model, torch.zeros(1, 3, 32, 32))
    dense, _ = vit_counts(model, {})
    assert total == dense
    attention = 2 * 2 * model.blocks[0][0].heads * TOKENS * TOKENS * 64
    linears = 2 * TOKENS * sum(m.in_features * m.out_features
                               for m in model.blocks[0][0].modules() if isinstance(m, nn.Linear))
    assert per_module["blocks.0.0"] == linears + attention > linears


@pytest.mark.parametrize("density", [1.0, 0.02])
def test_simple_vit_training_and_inference_flops(tmp_path, monkeypatch, density):
    use_synthetic_cifar100(tmp_path / "data", monkeypatch)
    method = "dense" if density == 1.0 else "static"
    cfg = resolve.load(BASE, [f"method.name={method}", f"density={density}", "data.name=cifar100",
                              "model.name=simple_vit_tiny", f"model.width={WIDTH}", "epochs=1",
                              "data.batch_size=50", "data.test_batch_size=100", "optim.lr=0.01",
                              "progress=false"])
    result = train(cfg)
    assert result["status"] == "completed"
    model = build_model("simple_vit_tiny", num_classes=100, in_shape=(3, 32, 32), width=WIDTH)
    dense, sparse = vit_counts(model, result["layer_densities"])
    examples = 200            # 4 steps of 50 examples
    assert result["dense_forward_flops"] == dense
    assert result["inference_flops"] == pytest.approx(sparse, rel=1e-12)
    assert result["inference_flops_rel_dense"] == pytest.approx(sparse / dense, rel=1e-12)
    assert result["train_flops"] == pytest.approx(3 * sparse * examples, rel=1e-12)
    assert result["train_flops_rel_dense"] == pytest.approx(sparse / dense, rel=1e-12)
    if density < 1:           # the never-pruned attention keeps the ratio far above the density
        assert sparse / dense > 5 * density
