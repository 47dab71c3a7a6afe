"""Lottery Ticket: iterative magnitude pruning with rewinding (Frankle & Carbin, ICLR 2019;
rewinding to an early epoch: Frankle, Dziugaite, Roy & Carbin, ICML 2020, "Linear Mode
Connectivity and the Lottery Ticket Hypothesis").

The trainer runs the whole schedule (``epochs`` epochs, learning-rate schedule, a fresh
optimizer) ``rounds + 1`` times:

    round 0:   train dense from θ_0; remember θ_k, the weights after ``rewind_epoch`` = k
               epochs (k = 0: the initial weights, the original lottery ticket);
    round r:   prune the trained weights by magnitude to density d_r = d^(r / rounds),
    (1..R)     rewind the surviving weights (and every other parameter and buffer) to θ_k,
               reset optimizer and learning-rate schedule, train again.

The densities go geometrically from 1 to the run's density d, so the last round ends at
exactly d (5 rounds to 2 %: 45.7, 20.9, 9.6, 4.4, 2.0 %), or follow ``round_densities``:
the GSE authors' fixed 50, 25, 10, 5, 2 % (sparsities 50, 75, 90, 95, 98 % in
``lottery_training.py``; the gse_paper protocol sets them). Of that list a run keeps the
densities above its own and then ends at its own (a run at 10 %: 50, 25, 10 %), so
``round_densities`` replaces ``rounds``. ``scope: global`` ranks |w| over all prunable
layers at once (Frankle & Carbin prune VGG and ResNet globally; the GSE authors' default) and
the layers end with the shares their magnitudes earn; ``scope: layer`` prunes each layer on
its own geometric schedule to its target under the run's distribution.

θ_0 is the weights round 0 starts from, whatever ``sparsity.init`` is: the method declares
``scores_initial_weights``, so ``active_fan_in`` draws the dense model (at full fan-in) before
``init_masks`` remembers it, and every round rewinds to the weights round 0 trained from (the
GSE authors keep a copy of the model they train first and load it before every round).

Where the sources differ: Frankle & Carbin prune a fixed 20 % (conv 10 %) of the remaining
weights per round; the GSE authors and this file instead fix the number of rounds and end at
the run's density. The GSE authors rewind to the initial weights and train the dense model
first; both are the defaults here (``rewind_epoch: 0``).

``epochs`` is the length of one round: a run with ``rounds: 3`` and ``epochs: 10`` trains
40 epochs (one dense round and three pruned ones). Steps, FLOPs (3·f_S at each round's
masks, round 0 dense) and wall-clock cover all rounds; ``train_flops_rel_dense`` is relative
to one dense run of ``epochs`` epochs, so it shows what the ticket really cost (above 1).
Runs on the masked engine (the rewound weights are dense-shaped; an always-sparse version
would keep θ_k only at the surviving positions).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sparsebench.config.schema import ConfigError, checked, positive
from sparsebench.methods import Method, register, require_masked_engine
from sparsebench.sparsity.dst import prune_by_magnitude, scope_param


@dataclass
class LotteryParams:
    rounds: int = positive(5, "prune-and-retrain rounds after the dense one; densities "
                              "d^(r/rounds), r = 1..rounds")
    rewind_epoch: int = checked(0, lambda v: v >= 0, "an integer >= 0",
                                "rewind surviving weights to their values after this many "
                                "epochs of the dense round (0: the initial weights)")
    scope: str = scope_param("global")
    round_densities: list[float] = checked(
        list, lambda v: all(0 < d < 1 for d in v) and all(a > b for a, b in zip(v, v[1:])),
        "a decreasing list of densities in (0, 1)",
        "the pruned rounds' densities (the GSE authors': [0.5, 0.25, 0.1, 0.05, 0.02]); a run "
        "keeps those above its density and ends at its density; replaces rounds; []: rounds "
        "geometric steps")


@register
class Lottery(Method):
    name = "lottery"
    Params = LotteryParams
    default_distribution = "uniform"
    # init_masks remembers θ_0: sparsity.init must have drawn it by then (see the docstring).
    scores_initial_weights = True

    def __init__(self, params, engine, **kwargs):
        super().__init__(params, engine, **kwargs)
        self.rewind_state: dict[str, torch.Tensor] | None = None
        self.final = {layer.name: layer.target_active for layer in engine.layers}
        # Each pruned round's place on the way from 1 to the run's density d, as the exponent
        # e_r of d^(e_r): r / rounds, or log(d_r) / log(d) for the given round_densities.
        self.exponents = self.round_exponents(engine.target_density())

    @classmethod
    def validate(cls, params, cfg):
        require_masked_engine(cfg, cls.name)
        if params.rewind_epoch >= cfg.epochs:
            raise ConfigError("method.rewind_epoch", f"got {params.rewind_epoch}; allowed: an "
                              f"integer in [0, epochs) = [0, {cfg.epochs})")

    def round_exponents(self, density: float) -> list[float]:
        if not self.params.round_densities:
            return [r / self.params.rounds for r in range(1, self.params.rounds + 1)]
        if density >= 1:
            return [1.0]
        kept = [d for d in self.params.round_densities if d > density]
        return [math.log(d) / math.log(density) for d in kept] + [1.0]

    def pruned_rounds(self) -> int:
        return len(self.exponents)

    def rounds(self) -> int:
        return self.pruned_rounds() + 1

    # ---- hooks -------------------------------------------------------------------------------
    def init_masks(self, ctx):
        """Round 0 trains dense (the engine's masks start full)."""
        if self.params.rewind_epoch == 0:
            self.remember(ctx.model)

    def end_of_epoch(self, ctx):
        if ctx.round == 0 and ctx.epoch + 1 == self.params.rewind_epoch:
            self.remember(ctx.model)

    def start_round(self, round, model):
        self.prune_to(round)
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                tensor.copy_(self.rewind_state[name])
        self.engine.apply_masks()  # pruned weights stay zero after the rewind

    # ---- pieces ------------------------------------------------------------------------------
    def remember(self, model) -> None:
        self.rewind_state = {name: t.detach().clone() for name, t in model.state_dict().items()}

    def count(self, numel: int, final: int, r: int) -> int:
        """Active connections after pruning round ``r``: numel·(final/numel)^(e_r)."""
        if r >= self.pruned_rounds():
            return final
        return max(final, round(numel * (final / numel) ** self.exponents[r - 1]))

    def prune_to(self, round: int) -> None:
        engine = self.engine
        if self.params.scope == "global":
            keep = self.count(engine.num_prunable(), sum(self.final.values()), round)
        else:
            keep = {layer.name: self.count(layer.numel, self.final[layer.name], round)
                    for layer in engine.layers}
        # After the last round the final shares of a global ranking become the targets.
        prune_by_magnitude(engine, keep, adopt=round >= self.pruned_rounds())

    # ---- checkpoint --------------------------------------------------------------------------
    def state_dict(self):
        return {**super().state_dict(), "rewind_state": self.rewind_state}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.rewind_state = state["rewind_state"]
