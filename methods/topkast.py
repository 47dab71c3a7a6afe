"""Top-KAST: Top-K Always Sparse Training (Jayakumar, Pascanu, Rae, Osindero & Elsen,
NeurIPS 2020).

Each prunable layer keeps a dense parameter θ. Per layer, with D its forward density:

    A = top-D of |θ| (the forward set): the forward pass uses α = θ ⊙ 1_A;
    B = top-D_b of |θ| ⊇ A (the backward set): only θ_B receives gradients, ∂L/∂α on B
        (straight through; on B \\ A the forward weight is zero and the gradient is taken
        there); θ outside B never changes;
    the exploration penalty (their Sec. 2.3) replaces weight decay on the prunable weights:
        ``penalty: squared`` (the paper's, the default):  λ/2 · ( Σ_{i∈A} θ_i² + Σ_{i∈B\\A} θ_i² / D ),
        ``penalty: norm`` (the GSE authors' ``weight_decay_loss``):  λ · ( ‖θ_A‖₂ + ‖θ_{B\\A}‖₂ / D ),
    summed over the layers, so a weight that only the backward pass trains is pulled towards
    zero 1/D times harder and must earn its way into A. λ is the run's ``optim.weight_decay``,
    which the optimizer then no longer applies to these weights (it still decays biases and
    norms as configured; the gse_paper protocol turns that off, as the authors' optimizer has
    no weight decay).

A and B are refreshed before every step for the first ``explore_epochs`` epochs and every
``interval`` steps after (the GSE authors' ``num_epochs_explore`` = 20 and
``prune_grow_delta`` = 1000 in ``topkast_training.py``; the paper reselects the sets by
magnitude as training goes and leaves the refresh rate open). ``actual_density`` is the
forward set's.

A long ``interval`` can blow a small layer up: θ on B \\ A takes gradient steps without being
in the forward pass, so its gradient does not shrink as it grows, and it enters A with all it
gathered. Measured on the Fashion-MNIST MLP at density 0.02 (uniform: the classifier keeps 20
of its 1000 weights), SGD with Nesterov momentum 0.9, seed 1: at ``interval: 100`` a classifier
weight entered A at |θ| = 11 (the rest ≤ 2.4) and the run fell to chance; at 10 it reached
84.7 %. The default sweep therefore refreshes every 10 steps.

Backward density: the paper's text treats the backward sparsity as its own hyperparameter and
reports pairs such as 80 % / 50 %, 90 % / 80 %, 95 % / 90 % (forward / backward sparsity), so
this file takes ``backward_density`` as a parameter; its default 0 means D_b = min(1, 2·D),
the GSE authors' (1 + γ)·D with γ = 1, which also matches the paper's 90/80 and 95/90 pairs.
Where the sources differ: the GSE authors penalize the L2 *norms* (``penalty: norm``, which
the gse_paper protocol sets) and add λ‖w‖₂ of every other module's weight (batch-norm and
layer-norm scales), which this file does not: under gse_paper those get no decay at all. The
GSE authors count ``epoch <= explore_epochs`` (21 epochs for their 20; the gse_paper protocol
sets ``explore_epochs: 21``); this file refreshes in epochs [0, explore_epochs).

On the masked engine: A is the engine's mask and B its gradient mask (``grad_mask``), so
``mask_gradients`` leaves exactly B's gradients and the optimizer keeps state on B only. The
model's weight holds θ on A and zero elsewhere; θ off A lives in ``self.outside``. After each
optimizer step the update the optimizer made on B \\ A (from zero) moves into ``outside`` and
the forward weight there is zero again (as the GSE authors do). An always-sparse version
would store θ only on B (and the frozen rest off the device), as the paper does.

Cost per example (the paper's accounting): forward at the forward set, backward at the
backward set, f_S(A) + 2·f_S(B).

The GSE authors' Top-KAST (``topkast_training.py`` of mikeheddes/guided-stochastic-exploration;
``protocol: gse_paper`` sets all three, the defaults are the paper's). Their code keeps the dense
θ in a buffer ``all_weight`` and the forward weight in the layer's ``weight``, and differs from
the paper in three ways, each a parameter here:

* ``entering_weight: stale`` (refresh, lines 166-181; zeroing, lines 205-214): a refresh copies
  the forward weight on the old A into θ and chooses the new sets, but copies nothing from θ
  into the forward weight, so a connection entering A starts from the forward weight it already
  had: 0 for one from B∖A (they zero ``weight[B∖A]`` after every step and at every refresh),
  the value it last had in A for one that left A straight out of B (or its initial weight), and
  the next refresh overwrites its θ with that forward weight. ``theta`` (the paper's α = θ ⊙ 1_A)
  starts it from its θ. Holds one more dense tensor per layer (``stale``: the forward weight
  off A).
* ``keep_momentum_outside_b: true`` (``optim.SGD(model.parameters(), ...)``, lines 277-281; their
  mask only multiplies the forward weight, ``layers.py`` ``MaskedLinear.forward``): a connection
  that leaves B keeps its SGD momentum, which decays while it is outside B (the gradient there is
  zero), moves its stale forward weight, and carries on when it re-enters B. ``false`` (the
  paper's "θ outside B never changes"): its optimizer state is zeroed when it leaves B.
* ``sets: quantile`` (lines 120-136): A = {|θ| ≥ torch.quantile(|θ|, 1 − D)} and B likewise
  with D_b, a threshold (linear interpolation between order statistics, q in the weight's
  dtype) instead of an exact top-k; ties at the threshold join the set, so a set can hold a
  few more than its count (FLOPs are counted at the nominal counts). ``topk``: exactly D and
  D_b of |θ|.

Checked against the authors' own functions (``update_active_param_set``, ``weight_decay_loss``
and ``reset_justbwd_weights`` of ``topkast_training.py``, run from their repository, not copied
here) on the MLP 3072-512-512-10 at 2 % (ER), from the same initial weights, on the same 70
batches of Fashion-MNIST, in float64: A, B, θ and the forward weights agree to 3e-16 at every
step, while about 8,600 connections enter the first layer's A per step. One difference: their
``torch.quantile`` level comes from the unrounded ER density, so their second layer's A can
hold one connection more (7,347 against 7,346 here). Their whole script on the same data
(Fashion-MNIST's images 0-49,999 in CIFAR-10's layout, 10 epochs, this machine's CPU) ended
at 78.84, 75.84 and 75.91 % (seeds 0-2); this file under ``gse_paper`` at 76.72, 78.80 and
77.22 % (Welch p = 0.58). In both codes the test accuracy moves by 1-3 points from one epoch
to the next.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from sparsebench.config.schema import ConfigError, checked, choice, non_negative
from sparsebench.methods import Method, register, require_masked_engine
from sparsebench.sparsity.dst import interval_param


EPS = 1e-12   # a set whose norm is below this gets no norm-penalty gradient


@dataclass
class TopKastParams:
    backward_density: float = checked(0.0, lambda v: 0 <= v <= 1, "a number in [0, 1]",
                                      "D_b: density of the backward set B; 0: min(1, 2·density)")
    explore_epochs: float = non_negative(20.0, "refresh A and B before every step for this "
                                               "many epochs")
    interval: int = interval_param(1000)
    penalty: str = choice("squared", ("squared", "norm"),
                          "squared: λ/2·(Σ_A θ² + Σ_{B∖A} θ²/D), the paper's; norm: "
                          "λ·(‖θ_A‖₂ + ‖θ_{B∖A}‖₂/D), the GSE authors'")
    entering_weight: str = choice("theta", ("theta", "stale"),
                                  "forward weight of a connection entering A: its θ (the "
                                  "paper's); stale: the forward weight it had, 0 from B∖A (the "
                                  "GSE authors' topkast_training.py, lines 166-181, 205-214)")
    keep_momentum_outside_b: bool = field(default=False, metadata={
        "help": "keep the SGD momentum of connections outside B (the GSE authors', lines "
                "277-281); false: zeroed when they leave B (the paper's θ outside B is frozen)"})
    sets: str = choice("topk", ("topk", "quantile"),
                       "A and B: exactly the top-D / top-D_b of |θ| (the paper's); quantile: "
                       "|θ| ≥ torch.quantile(|θ|, 1 − D) (the GSE authors', lines 120-136)")


def quantile_thresholds(values: torch.Tensor, qs: torch.Tensor) -> torch.Tensor:
    """``torch.quantile(values.flatten(), qs)`` (linear interpolation), bit for bit, from two
    order statistics per q (``kthvalue``, O(n)) instead of a sort of the whole tensor (which
    torch.quantile does, and refuses beyond 2^24 elements): the ranks q·(n − 1) are computed in
    ``qs``'s dtype as torch.quantile computes them, then interpolated with ``lerp`` as it does.
    (Before every step while exploring, a sort of a 1.5M-weight layer took ten times as long.)"""
    flat = values.flatten()
    ranks = qs * (flat.numel() - 1)
    below, above = ranks.long(), ranks.ceil().long()
    low = torch.stack([flat.kthvalue(int(r) + 1).values for r in below.tolist()])
    high = torch.stack([flat.kthvalue(int(r) + 1).values for r in above.tolist()])
    return low.lerp(high, ranks - below)


@register
class TopKast(Method):
    name = "topkast"
    Params = TopKastParams
    default_distribution = "uniform"
    # A is the top-D of the initial |θ|: ``sparsity.init: active_fan_in`` draws the dense θ at
    # full fan-in before it, so θ on and off A come from one rule.
    scores_initial_weights = True
    dynamic = True

    def __init__(self, params, engine, **kwargs):
        super().__init__(params, engine, **kwargs)
        self.penalty = 0.0            # λ, set by regularized_parameters (the run's weight decay)
        self.outside: dict[str, torch.Tensor] = {}   # θ off the forward set, per layer
        # entering_weight: stale: the forward weight off A (0 on B∖A), per layer
        self.stale: dict[str, torch.Tensor] = {}
        self.interval = params.interval or self.steps_per_epoch
        self.explore_steps = math.ceil(params.explore_epochs * self.steps_per_epoch)
        self.backward_active = {}
        for layer in engine.layers:
            density = layer.target_active / layer.numel
            d_b = params.backward_density or min(1.0, 2.0 * density)
            self.backward_active[layer.name] = max(layer.target_active, round(d_b * layer.numel))
        self._set_flops: tuple[float, float] | None = None   # f_S(A), f_S(B): fixed counts

    @classmethod
    def validate(cls, params, cfg):
        require_masked_engine(cfg, cls.name)
        if params.backward_density and params.backward_density < cfg.density:
            raise ConfigError("method.backward_density",
                              f"got {params.backward_density}; allowed: 0 or a number in "
                              f"[density, 1] = [{cfg.density}, 1]")

    def regularized_parameters(self, weight_decay):
        self.penalty = weight_decay
        return [layer.weight for layer in self.engine.layers]

    # ---- the sets ----------------------------------------------------------------------------
    def theta(self, layer) -> torch.Tensor:
        """The dense parameter θ: the forward weight on A, ``outside`` elsewhere."""
        return torch.where(layer.mask, layer.weight.detach(), self.outside[layer.name])

    def choose_sets(self, layer, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) of one layer from its θ, as bool tensors shaped like θ.

        ``sets: topk``: one sorted top-k of |θ| gives both sets: B its first
        ``backward_active`` positions, A the first ``target_active`` of those, so A ⊆ B and
        both hold exactly their counts without any count read back from the device (this runs
        before every step while exploring). ``sets: quantile``: both thresholds from one
        ``torch.quantile`` of |θ| (the q's in θ's dtype, as the authors' float q is); A ⊆ B as
        the thresholds are ordered."""
        magnitude = theta.abs()
        if self.params.sets == "quantile":
            qs = torch.tensor([1.0 - layer.target_active / layer.numel,
                               1.0 - self.backward_active[layer.name] / layer.numel],
                              dtype=magnitude.dtype, device=magnitude.device)
            at_a, at_b = quantile_thresholds(magnitude, qs)   # torch.quantile's, bit for bit
            return magnitude >= at_a, magnitude >= at_b
        order = magnitude.flatten().topk(self.backward_active[layer.name], sorted=True).indices
        backward = torch.zeros(layer.numel, dtype=torch.bool, device=theta.device)
        backward[order] = True
        forward = torch.zeros_like(backward)
        forward[order[:layer.target_active]] = True
        return forward.view(theta.shape), backward.view(theta.shape)

    @torch.no_grad()
    def refresh(self, thetas: dict[str, torch.Tensor]) -> None:
        """New A and B from |θ| per layer (:meth:`choose_sets`); the forward weight is θ ⊙ 1_A
        (``entering_weight: theta``), or keeps on the new A the forward weight each
        connection had (``stale``: θ where it was in A, else ``stale``, 0 on the old B∖A)."""
        forward, backward = {}, {}
        for layer in self.engine.layers:
            theta, name = thetas[layer.name], layer.name
            forward[name], backward[name] = self.choose_sets(layer, theta)
            if self.params.entering_weight == "stale":
                # The authors' whole forward weight: A's, and the stale one off A.
                held = torch.where(layer.mask, layer.weight.detach(), self.stale[name])
                layer.weight.copy_(torch.where(forward[name], held, 0.0))
                self.stale[name] = torch.where(backward[name], 0.0, held)  # zeroed on B∖A
            else:
                layer.weight.copy_(torch.where(forward[name], theta, 0.0))
            self.outside[name] = torch.where(forward[name], 0.0, theta)
        self.engine.set_masks(forward, backward,
                              keep_optimizer_state=self.params.keep_momentum_outside_b)

    def is_refresh(self, step: int) -> bool:
        """Before step ``step`` (the sets of step 0 come from ``init_masks``)."""
        return step > 0 and (step < self.explore_steps or step % self.interval == 0)

    @classmethod
    def scheduled_mask_updates(cls, params, *, total_steps, steps_per_epoch):
        """Refreshes before steps 1 .. T−1: every step while exploring, then every interval-th
        (each refresh chooses the sets anew and counts, whether or not they moved)."""
        explore = math.ceil(params.explore_epochs * steps_per_epoch)
        interval = params.interval or steps_per_epoch
        last = total_steps - 1
        exploring = max(0, min(explore, total_steps) - 1)      # steps 1 .. explore − 1
        first = max(explore, 1)                                 # then multiples of interval
        return exploring + (max(0, last // interval - (first - 1) // interval) if last >= first else 0)

    # ---- hooks -------------------------------------------------------------------------------
    def init_masks(self, ctx):
        """The dense θ is the initial weight; every mask is full here, so the stale forward
        weight starts as θ too."""
        if self.params.entering_weight == "stale":
            self.stale = {layer.name: torch.zeros_like(layer.weight, requires_grad=False)
                          for layer in self.engine.layers}
        self.refresh({layer.name: layer.weight.detach().clone() for layer in self.engine.layers})

    def before_forward(self, ctx):
        if self.is_refresh(ctx.step):
            self.refresh({layer.name: self.theta(layer) for layer in self.engine.layers})

    @torch.no_grad()
    def after_backward(self, ctx):
        """Add the exploration penalty's gradient: λ·θ on A and λ·θ/D on B \\ A (squared), or
        λ·θ_A/‖θ_A‖ and λ·θ_{B∖A}/(D·‖θ_{B∖A}‖) (norm; 0 where a set's norm is 0)."""
        if not self.penalty:
            return
        for layer in self.engine.layers:
            if layer.weight.grad is None:
                continue
            just_backward = layer.trainable & ~layer.mask
            on_a = layer.weight
            off_a = torch.where(just_backward, self.outside[layer.name], 0.0)
            scale_a, scale_b = self.penalty, self.penalty * layer.numel / layer.target_active
            if self.params.penalty == "norm":
                scale_a = scale_a / max(float(torch.linalg.vector_norm(on_a)), EPS)
                scale_b = scale_b / max(float(torch.linalg.vector_norm(off_a)), EPS)
            layer.weight.grad.add_(on_a, alpha=scale_a)
            layer.weight.grad.add_(off_a, alpha=scale_b)

    @torch.no_grad()
    def after_step(self, ctx):
        """Move the optimizer's update on B \\ A (made from a zero weight) into θ. With
        ``keep_momentum_outside_b`` the momentum also moved the weight outside B (from zero):
        that drift joins the stale forward weight (``entering_weight: stale``) or is dropped
        (θ outside B does not change, in the authors' code either)."""
        drift = self.params.keep_momentum_outside_b and self.params.entering_weight == "stale"
        for layer in self.engine.layers:
            just_backward = layer.trainable & ~layer.mask
            self.outside[layer.name] += torch.where(just_backward, layer.weight, 0.0)
            if drift:
                self.stale[layer.name] += torch.where(layer.trainable, 0.0, layer.weight)
            layer.weight.masked_fill_(~layer.mask, 0.0)

    def penalty_value(self) -> torch.Tensor:
        """The exploration penalty at the current θ (what ``after_backward`` differentiates)."""
        total = 0.0
        for layer in self.engine.layers:
            theta = self.theta(layer)
            inv_d = layer.numel / layer.target_active
            just_backward = layer.trainable & ~layer.mask
            on_a, off_a = theta[layer.mask], theta[just_backward]
            if self.params.penalty == "norm":
                total = total + torch.linalg.vector_norm(on_a) + inv_d * torch.linalg.vector_norm(off_a)
            else:
                total = total + ((on_a ** 2).sum() + inv_d * (off_a ** 2).sum()) / 2
        return self.penalty * total

    # ---- cost --------------------------------------------------------------------------------
    def step_flops(self, ctx, flops):
        """f_S(A) + 2·f_S(B). The sets hold exactly their counts (see ``refresh``), so the cost
        needs no count read back from the device."""
        if self._set_flops is None:
            layers = self.engine.layers
            forward = {layer.name: layer.target_active for layer in layers}
            self._set_flops = tuple(flops.forward_at({layer.name: counts[layer.name] / layer.numel
                                                      for layer in layers})
                                    for counts in (forward, self.backward_active))
        return self._set_flops[0] + 2.0 * self._set_flops[1]

    # ---- checkpoint --------------------------------------------------------------------------
    def state_dict(self):
        return {**super().state_dict(), "outside": {n: t.clone() for n, t in self.outside.items()},
                "stale": {n: t.clone() for n, t in self.stale.items()}}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.outside = {n: t.clone() for n, t in state["outside"].items()}
        self.stale = {n: t.clone() for n, t in state.get("stale", {}).items()}
