"""Topology statistics of dynamic sparse training, from the engine's public API alone.

At every change of the topology (the engine's ``mask_version`` moved), per layer:

* ``pruned`` and ``grown``: connections that left and joined the active set since the last
  change;
* ``grown_survival``: of the connections grown at the previous change, the share still active
  after this one (RigL's and GSE's regrowth quality);
* ``itop_rate``: the in-time over-parameterization rate (Liu et al., ICML 2021), the fraction
  of the layer's connections that have ever been active since the run started; also over all
  layers (``layer`` = ``"all"``).

Only ``engine.layers``, ``layer.active_indices()`` (flat, ascending), ``layer.name``,
``layer.numel`` and ``engine.mask_version`` are used, so the masked and the always-sparse
engine are observed alike.

The ever-active set (:class:`EverActive`) starts as a sorted index tensor (8 bytes per
connection ever active, the right size for a huge always-sparse layer) and turns into one bool
per connection once that is smaller (when more than 1/8 of the layer has been active), so it
never costs more than the smaller of the two.
"""
from __future__ import annotations

import torch

from ..sparsity.sparse_layer import sorted_contains


class EverActive:
    """The set of connections of one layer that have ever been active."""

    def __init__(self, numel: int, initial: torch.Tensor):
        self.numel = numel
        self.indices: torch.Tensor | None = initial.clone()   # ascending, or None once a bitmap
        self.bitmap: torch.Tensor | None = None
        self._maybe_densify()

    def add(self, active: torch.Tensor) -> None:
        if self.bitmap is not None:
            self.bitmap[active] = True
            return
        new = active[~sorted_contains(self.indices, active)]
        if new.numel():
            self.indices = torch.cat([self.indices, new]).sort().values
            self._maybe_densify()

    def _maybe_densify(self) -> None:
        if self.indices.numel() * 8 > self.numel:
            self.bitmap = torch.zeros(self.numel, dtype=torch.bool, device=self.indices.device)
            self.bitmap[self.indices] = True
            self.indices = None

    def count(self) -> int:
        return int(self.bitmap.sum()) if self.bitmap is not None else self.indices.numel()

    def nbytes(self) -> int:
        held = self.bitmap if self.bitmap is not None else self.indices
        return held.numel() * held.element_size()


class TopologyTracker:
    """Watches an engine; :meth:`observe` returns one row per layer when the topology changed."""

    def __init__(self, engine):
        self.engine = engine
        self.version = engine.mask_version
        self.active = {layer.name: layer.active_indices().clone() for layer in engine.layers}
        self.ever = {layer.name: EverActive(layer.numel, self.active[layer.name])
                     for layer in engine.layers}
        self.grown: dict[str, torch.Tensor | None] = {layer.name: None for layer in engine.layers}
        self.updates = 0

    def state_dict(self) -> dict:
        return {"active": self.active, "grown": self.grown, "updates": self.updates,
                "ever": {n: {"indices": e.indices, "bitmap": e.bitmap} for n, e in self.ever.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Where :meth:`state_dict` left off, for the engine as it is now (just restored)."""
        self.active, self.grown, self.updates = state["active"], state["grown"], state["updates"]
        for name, ever in self.ever.items():
            ever.indices, ever.bitmap = state["ever"][name]["indices"], state["ever"][name]["bitmap"]
        self.version = self.engine.mask_version

    def changed(self) -> bool:
        return self.engine.mask_version != self.version

    def observe(self, step: int) -> list[dict]:
        """Rows for the change since the last call (none when ``mask_version`` is unchanged)."""
        if not self.changed():
            return []
        self.version = self.engine.mask_version
        self.updates += 1
        rows, ever_total, numel_total, pruned_total, grown_total = [], 0, 0, 0, 0
        survived_total = previous_total = 0
        for layer in self.engine.layers:
            name = layer.name
            before, after = self.active[name], layer.active_indices().clone()
            kept = sorted_contains(before, after)
            grown = after[~kept]
            pruned = before.numel() - int(kept.sum())
            previous_grown = self.grown[name]
            survival = None
            if previous_grown is not None and previous_grown.numel():
                survived = int(sorted_contains(after, previous_grown).sum())
                survival = survived / previous_grown.numel()
                survived_total += survived
                previous_total += previous_grown.numel()
            self.ever[name].add(grown)
            ever = self.ever[name].count()
            rows.append({"step": step, "update": self.updates, "layer": name, "pruned": pruned,
                         "grown": grown.numel(), "active": after.numel(),
                         "grown_survival": survival, "ever_active": ever,
                         "itop_rate": ever / layer.numel})
            self.active[name], self.grown[name] = after, grown
            ever_total += ever
            numel_total += layer.numel
            pruned_total += pruned
            grown_total += grown.numel()
        rows.append({"step": step, "update": self.updates, "layer": "all", "pruned": pruned_total,
                     "grown": grown_total, "active": sum(r["active"] for r in rows),
                     "grown_survival": survived_total / previous_total if previous_total else None,
                     "ever_active": ever_total,
                     "itop_rate": ever_total / numel_total})
        return rows

    def itop_rate(self) -> float:
        return (sum(e.count() for e in self.ever.values())
                / sum(layer.numel for layer in self.engine.layers))

