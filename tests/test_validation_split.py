"""data.validation: N training examples held out, the same for every run of a seed; best_*
chosen on them."""
from __future__ import annotations

import pytest
import torch

from sparsebench.training import preflight
from sparsebench import resolve
from sparsebench.config.schema import ConfigError
from sparsebench.data import build_data
from sparsebench.data.validation import hold_out
from sparsebench.storage.run_files import read_metrics
from sparsebench.training import run_folder, train

from .conftest import REPO, needs_fmnist

BASE = str(REPO / "configs" / "fmnist_mlp.yaml")


def test_hold_out_is_a_seeded_partition():
    x = torch.arange(100).view(100, 1)
    y = torch.arange(100)
    x_tr, y_tr, x_val, y_val = hold_out(x, y, 10, seed=3)
    assert len(x_val) == 10 and len(x_tr) == 90
    assert sorted(y_tr.tolist() + y_val.tolist()) == list(range(100))  # disjoint, complete
    assert torch.equal(x_val.view(-1), y_val)  # examples keep their labels
    assert torch.equal(hold_out(x, y, 10, seed=3)[3], y_val)  # the same for the same seed
    assert not torch.equal(hold_out(x, y, 10, seed=4)[3], y_val)
    with pytest.raises(ValueError, match="data.validation"):
        hold_out(x, y, 100, seed=0)


def test_validation_as_large_as_the_training_set_is_a_config_error():
    cfg = resolve.load(BASE, ["data.train_subset=512", "data.validation=512"])
    with pytest.raises(ConfigError, match="data.validation: got 512"):
        preflight.check(cfg)
    with pytest.raises(ConfigError, match="data.validation"):
        resolve.load(BASE, ["data.validation=0"])


@needs_fmnist
def test_runs_of_a_seed_share_the_split_and_best_is_chosen_on_it():
    a = build_data("fashion_mnist", batch_size=64, test_batch_size=500, device="cpu", seed=0,
                   train_subset=1024, validation=256)
    b = build_data("fashion_mnist", batch_size=64, test_batch_size=500, device="cpu", seed=0,
                   train_subset=1024, validation=256)
    assert a.validation.num_examples == 256 and a.train.num_examples == 768
    assert torch.equal(a.validation.x, b.validation.x)
    cfg = resolve.load(BASE, ["data.train_subset=1024", "data.batch_size=64", "epochs=3",
                              "progress=false", "data.validation=256", "method.name=static",
                              "tracking.tensorboard=false"])
    result = train(cfg)
    rows = read_metrics(run_folder(cfg) / "metrics.jsonl")
    assert all(0 <= r["val_acc"] <= 100 for r in rows)
    best = max(rows, key=lambda r: r["val_acc"])  # the first of equals, as the trainer keeps it
    assert result["best_selected_on"] == "validation"
    assert result["best_val_acc"] == best["val_acc"]
    assert result["best_test_acc"] == best["test_acc"]
    assert result["final_val_acc"] == rows[-1]["val_acc"]
