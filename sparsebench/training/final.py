"""What a completed run keeps of its network: ``final.pt``, and :func:`load_model` to read it.

``final.pt`` (written atomically when a run completes, unless ``save_final: false``) holds

* ``model``: the model's state dict (masked engine: dense weights, zero where inactive; sparse
  engine: each sparse layer's active values and indices);
* ``engine``: the engine's state dict (targets; the masked engine's boolean masks);
* ``active``: per prunable layer, the flat indices of its active connections (ascending, int64)
  and ``numel``, the same on either engine, for analysis without building the model;
* ``config`` (the run's config), ``in_shape`` and ``num_classes``, to rebuild the model without
  its data.

It is a plain dict of tensors and containers (``torch.load(..., weights_only=True)`` reads it).

:func:`load_model` gives a :class:`FinalModel`: ``.model`` (in eval mode), ``.engine``,
``.config``, ``.active``; ``.test_loader()`` gives the run's own test set, normalized and
batched as the run evaluated it, and ``.evaluate()`` the test accuracy it reported
(``final_test_acc``). :func:`load_test_data` is the loader alone::

    import sparsebench
    final = sparsebench.load_model("results/fmnist_smoke/runs/RUN_ID")
    for x, y in final.test_loader():
        logits = final.model(x)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..storage import atomic, paths
from ..config.schema import from_dict, to_dict
from ..models import build_model
from ..sparsity.engine import build_engine

if TYPE_CHECKING:
    from .loop import Trainer


def save_final(trainer: "Trainer") -> Path:
    engine, info = trainer.engine, trainer.data.info
    state = {
        "config": to_dict(trainer.cfg),
        "in_shape": list(info.in_shape), "num_classes": info.num_classes,
        "model": {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()},
        "engine": _to_cpu(engine.state_dict()),
        "active": {layer.name: layer.active_indices().detach().cpu().long()
                   for layer in engine.layers},
        "numel": {layer.name: layer.numel for layer in engine.layers},
    }
    path = trainer.run_dir / paths.FINAL
    atomic.torch_save(path, state)
    return path


@dataclass
class FinalModel:
    """A completed run's network, rebuilt on ``device`` (in eval mode)."""

    model: nn.Module
    engine: Any                     # the sparsity engine over ``model`` (layers, masks, indices)
    config: dict                    # the run's config, as written in config.yaml
    active: dict[str, torch.Tensor]  # per layer: flat indices of the active connections
    numel: dict[str, int]
    device: torch.device = torch.device("cpu")

    def density(self) -> float:
        return sum(a.numel() for a in self.active.values()) / sum(self.numel.values())

    def test_loader(self):
        """The run's test set on the model's device: (images, labels) batches, normalized as
        the run normalized them, in the run's test batch size (needs the data set installed)."""
        from .loop import run_data

        return run_data(from_dict(self.config), self.device).test

    @torch.no_grad()
    def evaluate(self) -> float:
        """Test accuracy (%) of the loaded model on :meth:`test_loader` (the run's
        ``final_test_acc``, up to the run's precision settings: bf16 autocast, channels-last)."""
        correct = count = 0
        for x, y in self.test_loader():
            correct += int((self.model(x).argmax(1) == y).sum())
            count += y.numel()
        return 100.0 * correct / count


def load_test_data(run_dir: str | Path, device: str | torch.device = "cpu"):
    """The test loader of the run in ``run_dir`` (from its config.yaml): the run's own test
    images, normalized and batched as the run evaluated them. Iterate it for (x, y) batches."""
    from ..config.files import load_yaml
    from .loop import run_data

    path = Path(run_dir) / paths.CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config.yaml (not a run folder?)")
    return run_data(from_dict(load_yaml(path)), device).test


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> FinalModel:
    """The trained network of a completed run from its ``final.pt`` (see the module docstring).
    ``FileNotFoundError`` names the file when the run kept none (not completed, or
    ``save_final: false``)."""
    path = Path(run_dir) / paths.FINAL
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no final.pt (the run did not complete, or it ran with "
                                f"save_final: false)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    cfg = from_dict(state["config"])
    model = build_model(cfg.model.name, num_classes=state["num_classes"],
                        in_shape=tuple(state["in_shape"]), width=cfg.model.width,
                        **cfg.model.arguments())
    engine = build_engine(model, cfg.density, cfg.sparsity.distribution,
                          engine=cfg.sparsity.engine, dense_first_layer=cfg.sparsity.dense_first_layer,
                          dense_last_layer=cfg.sparsity.dense_last_layer, device="cpu")
    model.load_state_dict(state["model"])  # the order a checkpoint is applied in (.state)
    engine.load_state_dict(state["engine"])
    model.to(device).eval()
    return FinalModel(model, engine, state["config"], state["active"], state["numel"],
                      torch.device(device))


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
