"""Device-dependent settings as run settings that also act on the CPU, and what result.json
records of them (sparsebench.training.precision)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from sparsebench import resolve
from sparsebench.config.schema import ConfigError
from sparsebench.training import train
from sparsebench.training.precision import Precision

from .conftest import REPO
from .synthetic_cifar import use_synthetic_cifar100

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def settings(*overrides):
    return resolve.load(BASE, list(overrides))


def test_auto_means_todays_behaviour_per_device():
    cfg = settings()
    assert (cfg.amp, cfg.channels_last, cfg.tf32, cfg.cudnn_benchmark) == ("auto", "auto", False, False)
    on_cpu = Precision.for_run(cfg, CPU, image_input=True)
    assert on_cpu.amp_dtype is None and on_cpu.channels_last is False
    on_gpu = Precision.for_run(cfg, CUDA, image_input=True)   # resolving needs no GPU
    assert on_gpu.amp_dtype == torch.bfloat16 and on_gpu.channels_last is True
    assert Precision.for_run(cfg, CUDA, image_input=False).channels_last is False


def test_explicit_settings_apply_on_the_cpu():
    p = Precision.for_run(settings("amp=bf16", "channels_last=true"), CPU, image_input=True)
    assert p.amp_dtype == torch.bfloat16 and p.channels_last
    with p.autocast():
        assert torch.nn.functional.linear(torch.randn(2, 3), torch.randn(4, 3)).dtype == torch.bfloat16
    x = p.memory_format(torch.randn(2, 3, 8, 8))
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    conv = p.prepare_model(torch.nn.Conv2d(3, 4, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    off = Precision.for_run(settings("amp=false", "channels_last=false"), CUDA, image_input=True)
    assert off.amp_dtype is None and not off.channels_last


@pytest.mark.parametrize("override, field", [("amp=true", "amp"), ("amp=fp8", "amp"),
                                             ("channels_last=maybe", "channels_last"),
                                             ("tf32=auto", "tf32"),
                                             ("cudnn_benchmark=1", "cudnn_benchmark")])
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError) as err:
        settings(override)
    assert err.value.field == field


def test_bad_value_is_one_line_and_exit_2():
    out = subprocess.run([sys.executable, "-m", "sparsebench.train", BASE, "amp=fp16"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert "amp: got 'fp16'; allowed: auto, bf16, false" in out.stderr


def test_the_gse_protocol_sets_tf32_and_cudnn_benchmark_as_the_authors_code():
    cfg = settings("protocol=gse_paper", "method.name=rigl")
    assert (cfg.amp, cfg.tf32, cfg.cudnn_benchmark) == (False, True, True)
    own = settings("method.name=rigl")
    assert (own.tf32, own.cudnn_benchmark) == (False, False)


def test_every_run_sets_every_backend_flag():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
              torch.backends.cudnn.benchmark)
    try:
        Precision.for_run(settings("tf32=true", "cudnn_benchmark=true"), CPU, True).apply()
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.benchmark
        Precision.for_run(settings(), CPU, True).apply()   # the next run does not inherit them
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert not torch.backends.cudnn.benchmark
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = before


def test_result_records_what_was_in_effect(tmp_path, monkeypatch):
    use_synthetic_cifar100(tmp_path / "data", monkeypatch)
    cfg = settings("data.name=cifar100", "model.name=lenet5", "method.name=static", "density=0.2",
                   "epochs=1", "data.batch_size=50", "amp=bf16", "channels_last=true", "tf32=true",
                   "cudnn_benchmark=true", "progress=false")
    result = train(cfg)
    assert result["status"] == "completed"
    assert result["precision"] == {
        "amp": "bf16", "autocast_device": "cpu", "tf32_matmul": True, "tf32_cudnn": True,
        "cudnn_benchmark": True, "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "channels_last": True}
    Precision.for_run(settings(), CPU, True).apply()
