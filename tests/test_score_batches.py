"""Score batches (``method.score_samples_per_class``): ⌈n·classes/batch⌉ separate batches from a
stream of their own, for GSE's, RigL's and SNIP's scores; the training data order unchanged;
their FLOPs counted; the optimizer and the model's buffers untouched. (Streaming, equality with
the unstreamed update and rank sharing: tests/test_streamed_scoring.py.)"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sparsebench import methods, resolve
from sparsebench.data import TensorLoader
from sparsebench.flops import FlopModel
from sparsebench.methods import InitContext, StepContext
from sparsebench.scoring import ScoreBatches
from sparsebench.sparsity import SparsityEngine
from sparsebench.training import Trainer

from .test_data import make_cifar100

BATCH = 128


class CountingStream:
    """Wraps a loader and counts the batches it yields."""

    def __init__(self, loader):
        self.loader, self.yielded = loader, 0

    def set_epoch(self, epoch):
        self.loader.set_epoch(epoch)

    def __iter__(self):
        for batch in self.loader:
            self.yielded += 1
            yield batch


def _trainer(tmp_path, method, **params):
    root = tmp_path / "cifar100"
    if not root.exists():
        make_cifar100(root, n_train=10 * BATCH, n_test=50)
    overrides = [f"method.name={method}", "data.name=cifar100", f"data.root={root}",
                 f"data.batch_size={BATCH}", "data.test_batch_size=50", "model.name=mlp",
                 "epochs=1", "density=0.05", "progress=false", "optim.lr=0.05"]
    overrides += [f"method.{k}={v}" for k, v in params.items()]
    cfg = resolve.load(None, overrides)
    run_dir = tmp_path / f"run_{method}_{len(list(tmp_path.iterdir()))}"
    run_dir.mkdir()
    return Trainer(cfg, run_dir)


def _record_training_batches(trainer):
    seen, original = [], trainer.method.before_forward

    def spy(ctx):
        seen.append(ctx.batch[1].clone())     # the step's own batch, before the hook runs
        original(ctx)
    trainer.method.before_forward = spy
    return seen


@pytest.mark.parametrize("method, params", [
    ("rigl", {"interval": 4, "end": 1.0}),
    ("gse", {"interval": 4, "end": 1.0, "sampler": "grabo"}),
])
def test_an_update_uses_exactly_eight_extra_batches_and_leaves_the_training_order(tmp_path, method, params):
    trainer = _trainer(tmp_path, method, score_samples_per_class=10, **params)
    scoring = trainer.scoring
    assert scoring.n_batches == math.ceil(10 * 100 / BATCH) == 8
    stream = scoring._stream = CountingStream(scoring.stream)
    draws, step_costs, score_flops = [], [], []
    count = scoring.count
    scoring.count = lambda examples, fpe=None: (draws.append((examples // BATCH, fpe)), count(examples, fpe))[1]
    take = scoring.take_flops
    scoring.take_flops = lambda: (score_flops.append(take()), score_flops[-1])[1]
    step_flops = trainer.method.step_flops
    trainer.method.step_flops = lambda ctx, fm: (step_costs.append(step_flops(ctx, fm)),
                                                 step_costs[-1])[1]
    seen = _record_training_batches(trainer)
    assert trainer.run() == "completed"
    updates = trainer.method.schedule.update_steps()
    assert updates == [3, 7]
    assert [n for n, _ in draws] == [8] * len(updates)           # exactly 8 batches per update
    passes = 2 if method == "gse" else 1     # GraBo: statistics, then the candidates' gradients
    assert stream.yielded == 8 * passes * len(updates)
    assert scoring.examples == 8 * BATCH * len(updates)
    # every FLOP the facility counted reached the run's total, and nothing else did
    assert trainer.progress.train_flops == pytest.approx(BATCH * sum(step_costs) + sum(score_flops))
    assert sum(score_flops) > 0
    if method == "rigl":   # each scored example costs its dense weight gradient: 2·f_S + f_D
        assert all(fpe(trainer.flop_model) > trainer.flop_model.dense_forward() for _, fpe in draws)
    else:                  # GSE: a forward and backward at the masks (3·f_S), plus candidates
        assert all(fpe is None for _, fpe in draws)

    # The same run without score batches, and a static run, see the same training batches.
    static = _trainer(tmp_path, "static")
    seen_static = _record_training_batches(static)
    static.run()
    assert len(seen) == len(seen_static) == 10
    assert all(torch.equal(a, b) for a, b in zip(seen, seen_static))


def test_score_batches_differ_between_steps_and_replay_on_resume(tmp_path):
    trainer = _trainer(tmp_path, "rigl", score_samples_per_class=10)
    def batches(draw):
        return [batch for _, batch in draw]
    a = batches(trainer.scoring.draw(3))
    b = batches(trainer.scoring.draw(7))
    c = batches(trainer.scoring.draw(7))                          # a second draw in one step
    again = batches(_trainer(tmp_path, "rigl", score_samples_per_class=10).scoring.draw(3))
    assert len(a) == 8 and all(x.shape[0] == BATCH for x, _ in a)
    assert not torch.equal(a[0][1], b[0][1]) and not torch.equal(b[0][1], c[0][1])
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, again))
    # a draw is a sample without replacement: no example twice (the images are random noise)
    images = torch.cat([x.flatten(1) for x, _ in a])
    assert torch.unique(images, dim=0).shape[0] == 8 * BATCH


def _small_setup(num_classes=100, n=6 * BATCH):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 40), nn.BatchNorm1d(40), nn.ReLU(),
                          nn.Linear(40, num_classes))
    x = torch.randn(n, 1, 3, 4)
    y = torch.randint(0, num_classes, (n,))
    loader = TensorLoader(x, y, BATCH, shuffle=True, drop_last=True, seed=0)
    return model, loader


def _scoring(model, loader, engine, **kw):
    return ScoreBatches(loader, model=model, samples_per_class=10, num_classes=100, seed=0,
                        flop_model=FlopModel(model, engine, (1, 3, 4)),
                        loss_fn=nn.functional.cross_entropy, **kw)


def test_scoring_never_touches_the_optimizer_or_the_buffers():
    model, loader = _small_setup()
    engine = SparsityEngine.for_model(model, 0.3, "uniform")
    engine.random_masks(torch.Generator().manual_seed(0))
    engine.apply_masks()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    draw = _scoring(model, loader, engine).draw(0)
    weights = [p for p in model.parameters()]
    grads = draw.gradients(weights)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # BN stats too
    assert not optimizer.state and all(p.grad is None for p in weights)
    # the gradient is that of the mean loss over the batches, the same batches every pass
    model.train()
    for _, (x, y) in draw:
        (nn.functional.cross_entropy(model(x), y) / len(draw)).backward()
    assert all(torch.allclose(g, p.grad, atol=1e-6) for g, p in zip(grads, model.parameters()))


def test_a_draw_loads_one_batch_at_a_time_and_the_same_ones_every_pass():
    model, loader = _small_setup()
    engine = SparsityEngine.for_model(model, 0.3, "uniform")
    scoring = _scoring(model, loader, engine)
    stream = scoring._stream = CountingStream(scoring.stream)
    draw = scoring.draw(0)
    assert stream.yielded == 0                                    # nothing loaded yet
    first = []
    for i, (_, y) in draw:
        assert stream.yielded == i + 1                            # loaded as it is scored
        first.append(y)
    second = [y for _, (_, y) in draw]
    assert len(first) == 8 and all(torch.equal(a, b) for a, b in zip(first, second))


def test_snip_scores_on_score_batches_counted_at_the_dense_cost():
    model, loader = _small_setup()
    engine = SparsityEngine.for_model(model, 0.2, "uniform")
    flop_model = FlopModel(model, engine, (1, 3, 4))
    scoring = _scoring(model, loader, engine)
    cls = methods.get("snip")
    method = cls(cls.Params(score_samples_per_class=10), engine, total_steps=10, steps_per_epoch=5, seed=0)
    ctx = InitContext(model, lambda: iter(loader), nn.functional.cross_entropy, scoring=scoring)
    method.init_masks(ctx)
    engine.apply_masks()
    assert scoring.examples == 8 * BATCH
    assert scoring.take_flops() == pytest.approx(3 * flop_model.dense_forward() * 8 * BATCH)
    assert method.init_flops(flop_model) == 0.0             # counted once, by the facility
    assert engine.global_density() == pytest.approx(0.2, abs=1e-3)


def test_grasp_scores_on_score_batches_counted_at_its_own_cost():
    """GraSP under the GSE protocol: g and Hg on the 8 score batches of 10 samples per class
    (not the first training batch), counted once, at 9 dense forwards per example."""
    model, loader = _small_setup()
    engine = SparsityEngine.for_model(model, 0.2, "uniform")
    flop_model = FlopModel(model, engine, (1, 3, 4))
    scoring = _scoring(model, loader, engine)
    stream = CountingStream(scoring.stream)
    scoring._stream = stream
    first_batches = []
    cls = methods.get("grasp")
    method = cls(cls.Params(score_samples_per_class=10), engine, total_steps=10, steps_per_epoch=5, seed=0)

    def train_batches():
        for batch in loader:
            first_batches.append(batch)
            yield batch
    method.init_masks(InitContext(model, train_batches, nn.functional.cross_entropy, scoring=scoring))
    engine.apply_masks()
    assert stream.yielded == 16 and not first_batches  # the score stream (g, then Hg), not the training data
    assert scoring.examples == 8 * BATCH
    assert scoring.take_flops() == pytest.approx(9 * flop_model.dense_forward() * 8 * BATCH)
    assert method.init_flops(flop_model) == 0.0             # counted once, by the facility
    assert engine.global_density() == pytest.approx(0.2, abs=1e-3)
    assert resolve.load(None, ["method.name=grasp", "protocol=gse_paper", "model.name=mlp"]
                        ).method.params["score_samples_per_class"] == 10


def test_gse_with_score_batches_runs_on_the_always_sparse_engine():
    from sparsebench.sparsity.engine import build_engine

    model, loader = _small_setup()
    engine = build_engine(model, 0.3, "er_flat", engine="sparse")
    cls = methods.get("gse")
    method = cls(cls.Params(score_samples_per_class=10, interval=1, sampler="graest"), engine,
                 total_steps=10, steps_per_epoch=5, seed=0)
    method.init_masks(None)
    engine.apply_masks()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine.attach_optimizer(optimizer)
    scoring = _scoring(model, loader, engine)
    before = {layer.name: layer.active_indices().clone() for layer in engine.layers}
    x, y = next(iter(loader))
    ctx = StepContext(step=0, epoch=0, total_steps=10, steps_per_epoch=5, model=model,
                      batch=(x, y), scoring=scoring)
    method.before_forward(ctx)                   # the update, from 8 score batches
    assert scoring.examples == 8 * BATCH and scoring.take_flops() > 0
    assert sum(layer.n_active() for layer in engine.layers) == sum(b.numel() for b in before.values())
    assert any(not torch.equal(before[layer.name], layer.active_indices()) for layer in engine.layers)
    method.after_step(ctx)                       # nothing more happens after the step


def test_the_score_stream_pads_as_the_training_loader_pads():
    """Score batches are augmented like training batches: the crop's padding value included
    (issue 26's black padding; a merge once lost it for the score stream)."""
    import torch

    from sparsebench.data import TensorLoader
    from sparsebench.scoring import independent_stream

    fill = torch.tensor([-1.5, -2.0, -0.5])
    x = torch.zeros(8, 3, 8, 8)
    train = TensorLoader(x, torch.zeros(8, dtype=torch.long), 4, shuffle=True, drop_last=True,
                         augment="crop_flip", seed=0, pad_fill=fill)
    stream = independent_stream(train, seed=1)
    assert torch.equal(stream.pad_fill, fill)
    # The padded border shows the fill: an all-zero image shifted by the crop keeps fill values.
    batch, _ = next(iter(stream))
    seen = set(batch.unique().tolist())
    assert seen <= {0.0, -1.5, -2.0, -0.5} and seen & {-1.5, -2.0, -0.5}
