"""Tests for the model registry in sparsebench.models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from sparsebench.models import available, build_model, register, scaled

NUM_CLASSES = 7  # not 10, so a hard-coded classifier size would show
EXPECTED = {"lenet5", "mlp", "resnet20", "resnet32", "resnet50", "resnet56", "simple_vit_tiny",
            "vgg16", "vgg16_small", "vit"}
SMALL_INPUT = {"mlp", "lenet5"}  # also tested on (1, 28, 28)


def _shapes(name: str) -> list[tuple[int, int, int]]:
    if name == "resnet50":
        return [(3, 64, 64)]  # small input, to stay fast; adaptive pooling copes
    return [(1, 28, 28), (3, 32, 32)] if name in SMALL_INPUT else [(3, 32, 32)]


CASES = [(n, s) for n in available() for s in _shapes(n)]
IDS = [f"{n}-{'x'.join(map(str, s))}" for n, s in CASES]


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def test_registry_lists_all_families():
    assert available() == sorted(EXPECTED)


def test_unknown_name_raises_keyerror_listing_names():
    with pytest.raises(KeyError) as exc:
        build_model("no-such-model", num_classes=10, in_shape=(3, 32, 32))
    msg = str(exc.value)
    assert "no-such-model" in msg
    for name in EXPECTED:
        assert name in msg


def test_register_decorator_and_duplicate_name():
    @register("_test_tiny")
    def tiny(*, num_classes, in_shape, width=1.0):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), num_classes))

    try:
        assert "_test_tiny" in available()
        model = build_model("_test_tiny", num_classes=3, in_shape=(2, 2))
        assert model(torch.zeros(4, 2, 2)).shape == (4, 3)
        with pytest.raises(ValueError):
            register("_test_tiny")(lambda **kw: nn.Identity())
    finally:
        from sparsebench import models

        models.registry._REGISTRY.pop("_test_tiny", None)
    assert "_test_tiny" not in available()


def test_scaled_keeps_at_least_one_unit():
    assert scaled(300, 1.0) == 300
    assert scaled(300, 0.5) == 150
    assert scaled(16, 0.001) == 1
    assert scaled(192, 0.5, multiple_of=3) == 96
    assert scaled(192, 0.001, multiple_of=3) == 3


@pytest.mark.parametrize("name,in_shape", CASES, ids=IDS)
@pytest.mark.parametrize("width", [1.0, 0.5])
def test_forward_shape(name, in_shape, width):
    torch.manual_seed(0)
    model = build_model(name, num_classes=NUM_CLASSES, in_shape=in_shape, width=width)
    out = model(torch.randn(2, *in_shape))
    assert out.shape == (2, NUM_CLASSES)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name,in_shape", CASES, ids=IDS)
def test_tiny_width_still_works(name, in_shape):
    model = build_model(name, num_classes=NUM_CLASSES, in_shape=in_shape, width=0.001)
    for _, m in _prunable(model):
        assert m.weight.shape[0] >= 1 and m.weight.shape[1] >= 1
    assert model(torch.randn(2, *in_shape)).shape == (2, NUM_CLASSES)


@pytest.mark.parametrize("name,in_shape", CASES, ids=IDS)
def test_half_width_has_fewer_parameters(name, in_shape):
    full = build_model(name, num_classes=NUM_CLASSES, in_shape=in_shape, width=1.0)
    half = build_model(name, num_classes=NUM_CLASSES, in_shape=in_shape, width=0.5)
    assert _n_params(half) < _n_params(full)


@pytest.mark.parametrize("name,in_shape", CASES, ids=IDS)
def test_first_and_last_prunable_layers(name, in_shape):
    model = build_model(name, num_classes=NUM_CLASSES, in_shape=in_shape)
    layers = [m for _, m in _prunable(model)]
    assert len(layers) >= 2
    first, last = layers[0], layers[-1]
    if isinstance(first, nn.Linear):  # a whole input, or one patch of it (SimpleViT)
        assert first.in_features == getattr(model, "patch_dim", math.prod(in_shape))
    else:
        assert first.in_channels == in_shape[0]
    assert isinstance(last, nn.Linear)
    assert last.out_features == NUM_CLASSES
    # Only Linear/Conv2d (and no MultiheadAttention) hold the weight matrices.
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())


@pytest.mark.parametrize("name,in_shape", CASES, ids=IDS)
def test_prunable_layers_run_in_creation_order(name, in_shape):
    model = build_model(name, num_classes=NUM_CLASSES, in_shape=in_shape)
    created = [n for n, _ in _prunable(model)]
    called: list[str] = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, n=n: called.append(n))
        for n, m in _prunable(model)
    ]
    model(torch.randn(2, *in_shape))
    for h in hooks:
        h.remove()
    assert called == created  # each layer used exactly once, in creation order


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_no_weight_tying(name):
    model = build_model(name, num_classes=NUM_CLASSES, in_shape=_shapes(name)[-1])
    all_params = list(model.named_parameters(remove_duplicate=False))
    assert len({id(p) for _, p in all_params}) == len(all_params)


def test_mlp_exact_parameter_count_and_layout():
    model = build_model("mlp", num_classes=10, in_shape=(1, 28, 28))
    assert _n_params(model) == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    sizes = [(m.in_features, m.out_features) for _, m in _prunable(model)]
    assert sizes == [(784, 300), (300, 100), (100, 10)]
    half = build_model("mlp", num_classes=10, in_shape=(1, 28, 28), width=0.5)
    assert [m.out_features for _, m in _prunable(half)] == [150, 50, 10]


def test_mlp_custom_hidden():
    model = build_model("mlp", num_classes=10, in_shape=(3, 8, 8), hidden=(64, 32, 16), width=0.5)
    sizes = [(m.in_features, m.out_features) for _, m in _prunable(model)]
    assert sizes == [(192, 32), (32, 16), (16, 8), (8, 10)]
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_lenet5_layout():
    model = build_model("lenet5", num_classes=10, in_shape=(3, 32, 32))
    shapes = [tuple(m.weight.shape) for _, m in _prunable(model)]
    assert shapes == [(6, 3, 5, 5), (16, 6, 5, 5), (120, 400), (84, 120), (10, 84)]
    mnist = build_model("lenet5", num_classes=10, in_shape=(1, 28, 28))
    assert [tuple(m.weight.shape) for _, m in _prunable(mnist)][2] == (120, 256)


@pytest.mark.parametrize(
    "name,published,n_convs", [("resnet20", 0.27e6, 19), ("resnet32", 0.46e6, 31), ("resnet56", 0.85e6, 55)]
)
def test_cifar_resnet_parameter_counts(name, published, n_convs):
    model = build_model(name, num_classes=10, in_shape=(3, 32, 32))
    assert abs(_n_params(model) - published) / published < 0.05
    convs = [m for _, m in _prunable(model) if isinstance(m, nn.Conv2d)]
    # Option-A shortcuts add no convs: every conv is a 3x3 on the main path.
    assert len(convs) == n_convs
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert {c.out_channels for c in convs} == {16, 32, 64}


def test_cifar_resnet_option_a_shortcut_pads_channels():
    model = build_model("resnet20", num_classes=10, in_shape=(3, 32, 32), width=0.75)
    block = model.layers[3]  # first block of stage 2: 12 -> 24 channels, stride 2
    x = torch.randn(2, 12, 8, 8)
    y = block.shortcut(x)
    assert y.shape == (2, 24, 4, 4)
    assert sum(p.numel() for p in block.shortcut.parameters()) == 0
    front = block.shortcut.pad_front
    assert torch.equal(y[:, front : front + 12], x[:, :, ::2, ::2])
    assert y.abs().sum() == x[:, :, ::2, ::2].abs().sum()  # the rest is zeros


def test_vgg16_layout():
    model = build_model("vgg16", num_classes=10, in_shape=(3, 32, 32))
    layers = [m for _, m in _prunable(model)]
    assert [m.out_channels for m in layers[:-1]] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 13
    assert model.features(torch.randn(2, 3, 32, 32)).shape == (2, 512, 1, 1)
    assert layers[-1].in_features == 512
    half = build_model("vgg16", num_classes=10, in_shape=(3, 32, 32), width=0.5)
    assert [m for _, m in _prunable(half)][-1].in_features == 256


def test_vit_layout():
    model = build_model("vit", num_classes=10, in_shape=(3, 32, 32))
    pe = model.patch_embed
    assert isinstance(pe, nn.Conv2d) and pe.kernel_size == pe.stride == (4, 4)
    assert pe.out_channels == 192
    assert model.pos_embed.shape == (1, 8 * 8 + 1, 192)
    assert len(model.blocks) == 6
    blk = model.blocks[0]
    assert blk.attn.heads == 3
    assert (blk.attn.qkv.in_features, blk.attn.qkv.out_features) == (192, 576)
    assert (blk.fc1.in_features, blk.fc1.out_features) == (192, 384)
    assert len([m for _, m in _prunable(model) if isinstance(m, nn.Linear)]) == 6 * 4 + 1
    half = build_model("vit", num_classes=10, in_shape=(3, 32, 32), width=0.5)
    assert half.patch_embed.out_channels == 96
    odd = build_model("vit", num_classes=10, in_shape=(3, 32, 32), width=0.33)
    assert odd.patch_embed.out_channels % 3 == 0


def test_vit_attention_matches_reference():
    """Our qkv/proj attention equals a hand-written softmax attention."""
    torch.manual_seed(0)
    attn = build_model("vit", num_classes=10, in_shape=(3, 32, 32), width=0.25).blocks[0].attn
    d, h = attn.proj.in_features, attn.heads
    x = torch.randn(2, 5, d)
    q, k, v = attn.qkv(x).reshape(2, 5, 3, h, d // h).permute(2, 0, 3, 1, 4)
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // h), dim=-1)
    ref = attn.proj((w @ v).transpose(1, 2).reshape(2, 5, d))
    torch.testing.assert_close(attn(x), ref)


def test_resnet50_matches_reference_architecture():
    model = build_model("resnet50", num_classes=1000, in_shape=(3, 224, 224))
    assert _n_params(model) == 25_557_032  # torchvision's resnet50
    convs = [m for _, m in _prunable(model) if isinstance(m, nn.Conv2d)]
    assert len(convs) == 49 + 4  # 49 main-path convs + 4 projection shortcuts
    # v1.5: the stride-2 sits on the 3x3 conv of a downsampling block.
    block = model.layers[3]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)
    assert model.fc.in_features == 2048


# The GSE authors' models (their models/vgg_cifar.py and models/simple_vit.py), with the sizes
# the issue gives: about 1.30 M and 4.28 M parameters for CIFAR-100.
@pytest.mark.parametrize("name, published, n_prunable", [("vgg16_small", 1.30e6, 16),
                                                         ("simple_vit_tiny", 4.28e6, 18)])
def test_gse_paper_model_parameter_counts(name, published, n_prunable):
    model = build_model(name, num_classes=100, in_shape=(3, 32, 32))
    assert abs(_n_params(model) - published) / published < 0.02
    assert len(_prunable(model)) == n_prunable


def test_vgg16_small_layout_and_width():
    model = build_model("vgg16_small", num_classes=100, in_shape=(3, 32, 32))
    layers = [m for _, m in _prunable(model)]
    assert [m.out_channels for m in layers[:13]] == [16, 16, 32, 32, 64, 64, 64,
                                                     128, 128, 128, 128, 128, 128]
    assert [(m.in_features, m.out_features) for m in layers[13:]] == [(128, 512), (512, 512), (512, 100)]
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 2
    double = build_model("vgg16_small", num_classes=100, in_shape=(3, 32, 32), width=2)
    fc = [m for _, m in _prunable(double)][13:]
    assert [(m.in_features, m.out_features) for m in fc] == [(256, 1024), (1024, 1024), (1024, 100)]


def test_simple_vit_tiny_layout_and_width():
    model = build_model("simple_vit_tiny", num_classes=100, in_shape=(3, 32, 32))
    shapes = [tuple(m.weight.shape) for _, m in _prunable(model)]
    block = [(1152, 512), (512, 384), (256, 512), (512, 256)]  # qkv, out (6 heads x 64), MLP
    assert shapes == [(512, 48)] + block * 4 + [(100, 512)]
    assert all(m.bias is None for n, m in _prunable(model) if "to_" in n)
    # width scales dim, heads and MLP dim; a head stays 64 wide
    half = build_model("simple_vit_tiny", num_classes=100, in_shape=(3, 32, 32), width=0.5)
    assert [tuple(m.weight.shape) for _, m in _prunable(half)][1:5] == [
        (576, 256), (256, 192), (128, 256), (256, 128)]
    # the position embedding is the fixed 2-D sine-cosine one: not a parameter
    assert not any("pos" in n for n, _ in model.named_parameters())


def test_mlp_hidden_sizes_are_a_model_setting():
    """``model.hidden`` builds the GSE authors' 3072-512-512-10 MLP; null keeps 300-100."""
    from sparsebench import resolve

    def sizes(overrides):
        cfg = resolve.load(None, ["model.name=mlp", *overrides])
        net = build_model(cfg.model.name, num_classes=10, in_shape=(3, 32, 32),
                          width=cfg.model.width, **cfg.model.arguments())
        return [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, nn.Linear)]

    assert sizes(["model.hidden=[512, 512]"]) == [(3072, 512), (512, 512), (512, 10)]
    assert sizes(["model.hidden=[512, 512]", "model.width=0.5"]) == [(3072, 256), (256, 256), (256, 10)]
    assert sizes([]) == [(3072, 300), (300, 100), (100, 10)]
