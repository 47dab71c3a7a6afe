"""SET: Sparse Evolutionary Training (Mocanu et al., Nature Communications 2018).

Starting from a random sparse topology (Erdős–Rényi), after every epoch (or every ΔT steps):
for each layer,

    1. remove the fraction ζ of its active weights with the smallest magnitude;
    2. add as many new connections, chosen uniformly at random among the inactive ones;
       new weights start at zero (with zero optimizer state).

Both steps are :func:`sparsebench.sparsity.dst.replace_smallest` without grow scores. As in
RigL's implementation of SET, a weight removed in step 1 may be drawn again in step 2, and then
simply stays (``regrow_dropped: false`` forbids it); ``scope: global`` removes the ζ·|A|
smallest over all layers and adds as many at random among all layers' inactive connections (the
GSE paper runs SET so). The update runs after the optimizer step, as in that implementation.
Cost: 3·f_S per example per step; drawing random connections is not counted (Evci et al. 2020,
App. H).
"""
from __future__ import annotations

from dataclasses import dataclass

from sparsebench.methods import Method, register
from sparsebench.sparsity.dst import (ScheduledUpdates, drop_fraction_param, drop_schedule_param,
                                      end_param, interval_param, regrow_dropped_param,
                                      replace_smallest, scope_param, start_param)


@dataclass
class SetParams:
    drop_fraction: float = drop_fraction_param(0.3)      # ζ
    interval: int = interval_param(0)                    # 0: end of every epoch
    start: float = start_param(0.0)
    end: float = end_param(1.0)
    drop_schedule: str = drop_schedule_param("constant")
    scope: str = scope_param("layer")
    regrow_dropped: bool = regrow_dropped_param(True)


@register
class Set(ScheduledUpdates, Method):
    name = "set"
    dynamic = True
    engines = ("masked", "sparse")
    Params = SetParams
    default_distribution = "er"

    def update(self, ctx, drop_fraction):
        replace_smallest(self.engine, drop_fraction, scope=self.params.scope,
                         regrow_dropped=self.params.regrow_dropped, generator=self.generator)
