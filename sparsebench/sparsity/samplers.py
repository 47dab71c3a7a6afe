"""GSE's samplers: the distributions p_out (over a layer's outputs) and p_in (over its fan-in)
that candidate connections are drawn from, accumulated over the scored batches one batch at a
time (see :mod:`sparsebench.sparsity.sampling` for the layout and the definitions).

* ``uniform``: all equal; needs no data, so its candidates are drawn before any batch is seen;
* ``grabo``: p_in[j] = Σ_{b,l} |U[b,j,l]|, p_out[i] = Σ_{b,l} |dY[b,i,l]|;
* ``graest``: p_in[j] = |Σ_r s_r U[r,j]|, p_out[i] = |Σ_r s_r dY[r,i]| with a fresh sign s_r = ±1
  for every row r = (example, position) of every scored batch at every update.

Sums over batches are kept in float64 (order-independent, so N ranks that each sum their
batches reach what one process reaches) and reduced over the ranks before they are sampled
from: output-gradient sums as the scores' gradients are (summed where ranks score whole
batches, averaged where each scores a share of every batch with its share's mean loss),
input sums summed.

GraEst's signs come from the method's generator in exactly the order the unstreamed update
drew them: for each sampled layer in turn, the signs of all rows of all batches, then that
layer's candidate pairs. Streaming needs every layer's signs before any layer's candidates,
so :class:`SignStreams` first replays that order on a copy of the generator (drawing the signs
and pairs it would draw, with placeholder probabilities: a draw with replacement takes one
number per sample, whatever the probabilities), notes where each layer's signs and pairs
begin, and gives each layer a generator positioned at its signs; the candidates are then
drawn from the noted states and the generator is checked to end where the replay ended.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import distributed
from .protocol import PrunableLayer
from .sampling import LayerCapture, sample_candidates, sample_pairs, sample_uniform_candidates


@dataclass(frozen=True)
class LayerPlan:
    """A sampled layer of one update: ``n`` pairs drawn from ``out`` × ``fan_in``; the
    scored batches have ``positions`` output positions per example there."""

    name: str
    out: int
    fan_in: int
    n: int
    positions: int


def gradient_reduce(whole: bool):
    """All-reduce for a sum linear in the loss gradient (see :meth:`ScoreDraw.reduce`)."""
    return distributed.all_reduce_sum if whole else distributed.all_reduce_mean


class Statistics:
    """One update's sampling weights per layer, summed over batches in float64."""

    def __init__(self, whole: bool):
        self.reduce_out = gradient_reduce(whole)
        self.out: dict[str, torch.Tensor] = {}
        self.inp: dict[str, torch.Tensor] = {}

    def _add(self, name: str, out: torch.Tensor, inp: torch.Tensor) -> None:
        if name in self.out:
            self.out[name] += out.double()
            self.inp[name] += inp.double()
        else:
            self.out[name], self.inp[name] = out.double(), inp.double()

    def add(self, name: str, cap: LayerCapture, batch: int) -> None:
        """Add layer ``name``'s captured batch (global index ``batch``)."""
        raise NotImplementedError

    def weights(self, layer: PrunableLayer) -> tuple[torch.Tensor, torch.Tensor]:
        """(p_out, p_in) over all batches and ranks (unnormalized, non-negative)."""
        return (self.reduce_out(self.out[layer.name]),
                distributed.all_reduce_sum(self.inp[layer.name]))

    def candidates(self, layer: PrunableLayer, n: int, generator: torch.Generator) -> torch.Tensor:
        """The layer's candidates: ``n`` pairs drawn from p_out·p_in, active ones and repeats
        dropped (:func:`sample_candidates`)."""
        p_out, p_in = self.weights(layer)
        return sample_candidates(layer, p_out, p_in, n, generator)


class Sampler:
    name = ""
    needs_batches = True   # its distribution is made of the scored batches

    def statistics(self, plans: list[LayerPlan], generator: torch.Generator, *, whole: bool,
                   batches: int, rows: int) -> Statistics:
        """An empty accumulator for one update over ``batches`` global batches of ``rows``
        rows (examples) each; ``whole``: this rank scores whole batches (else a share of each)."""
        raise NotImplementedError

    def flops(self, layer: PrunableLayer, positions: int) -> float:
        """FLOPs per example of computing the weights: one operation per element of U and dY
        (an absolute value added, or a signed add); uniform costs nothing."""
        return float((layer.fan_in + layer.out_features) * positions)


class UniformStatistics(Statistics):
    def weights(self, layer):
        return torch.ones(layer.out_features), torch.ones(layer.fan_in)

    def candidates(self, layer, n, generator):
        return sample_uniform_candidates(layer, n, generator)


class Uniform(Sampler):
    name = "uniform"
    needs_batches = False

    def statistics(self, plans, generator, *, whole, batches, rows):
        return UniformStatistics(whole)

    def flops(self, layer, positions):
        return 0.0


class GraBoStatistics(Statistics):
    def add(self, name, cap, batch):
        self._add(name, cap.output_grads().abs().sum((0, 2)), cap.inputs().abs().sum((0, 2)))


class GraBo(Sampler):
    """The gradient-magnitude bound: p_in ∝ Σ|U|, p_out ∝ Σ|dY| over batch and positions."""

    name = "grabo"

    def statistics(self, plans, generator, *, whole, batches, rows):
        return GraBoStatistics(whole)


class GraEstStatistics(Statistics):
    def __init__(self, plans, generator, *, whole, batches, rows):
        super().__init__(whole)
        self.whole = whole
        self.signs = SignStreams(plans, generator, batches=batches, rows=rows)

    def add(self, name, cap, batch):
        dy, u = cap.output_grads(), cap.inputs()
        signs = self.signs.next(name, batch)
        if not self.whole:   # this rank's rows of the global batch's signs
            signs = distributed.shard(signs)
        signs = signs.to(dy.device)
        self._add(name, torch.einsum("bil,bl->i", dy, signs), torch.einsum("bjl,bl->j", u, signs))

    def weights(self, layer):
        p_out, p_in = super().weights(layer)
        return p_out.abs(), p_in.abs()

    def candidates(self, layer, n, generator):
        generator.set_state(self.signs.pairs[layer.name])
        cands = super().candidates(layer, n, generator)
        if not torch.equal(generator.get_state(), self.signs.after[layer.name]):
            raise RuntimeError("GraEst: the candidate draw took other random numbers than its "
                               "replay (torch.multinomial's use of the generator changed)")
        return cands


class GraEst(Sampler):
    """The AMS-sketch estimate: p ∝ |Σ_r s_r · row_r| with fresh ±1 signs per (sample, position)."""

    name = "graest"

    def statistics(self, plans, generator, *, whole, batches, rows):
        return GraEstStatistics(plans, generator, whole=whole, batches=batches, rows=rows)


SAMPLERS: dict[str, Sampler] = {s.name: s for s in (Uniform(), GraBo(), GraEst())}


def rademacher(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Independent ±1 signs (float32, CPU) from the method's generator."""
    return torch.randint(0, 2, shape, generator=generator).float().mul_(2).sub_(1)


class SignStreams:
    """GraEst's signs, one generator per sampled layer positioned at its signs (see the module
    docstring): ``next(name, batch)`` gives the (rows, positions) signs of global batch
    ``batch``, passing over those of the batches other ranks score."""

    def __init__(self, plans: list[LayerPlan], generator: torch.Generator, *, batches: int, rows: int):
        replay = generator.clone_state()
        self.rows, self.pairs, self.after = rows, {}, {}
        self.streams: dict[str, tuple[torch.Generator, LayerPlan]] = {}
        self.drawn: dict[str, int] = {}
        for plan in plans:
            start = torch.Generator().set_state(replay.get_state())
            self.streams[plan.name], self.drawn[plan.name] = (start, plan), 0
            for _ in range(batches):
                rademacher((rows, plan.positions), replay)
            self.pairs[plan.name] = replay.get_state()
            sample_pairs(torch.ones(plan.out, dtype=torch.float64),
                         torch.ones(plan.fan_in, dtype=torch.float64), plan.n, replay)
            self.after[plan.name] = replay.get_state()

    def next(self, name: str, batch: int) -> torch.Tensor:
        generator, plan = self.streams[name]
        if batch < self.drawn[name]:
            raise RuntimeError(f"GraEst: signs of batch {batch} of layer {name} asked for twice")
        for _ in range(batch - self.drawn[name]):   # batches other ranks score
            rademacher((self.rows, plan.positions), generator)
        self.drawn[name] = batch + 1
        return rademacher((self.rows, plan.positions), generator)
