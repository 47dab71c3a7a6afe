"""One optimizer step, exactly as every run takes it (the trainer, benchmarks and tests call it).

``before_forward`` hook, forward and loss, backward, ``after_backward`` hook (the dense gradient
is visible there, which RigL needs), gradients of inactive weights masked by the engine, the
optimizer and the learning-rate schedule step, ``after_step`` hook.
"""
from __future__ import annotations

import contextlib


def call_hook(hook, ctx) -> None:
    """The default way a step runs a method hook (the trainer passes one that times it)."""
    hook(ctx)


def training_step(model, loss_fn, optimizer, engine, method, ctx, x, y, *, scheduler=None,
                  autocast=contextlib.nullcontext, call_hook=call_hook):
    """One step; ``call_hook(hook, ctx)`` runs each method hook. Returns (output, loss)."""
    ctx.batch = (x, y)
    call_hook(method.before_forward, ctx)
    with autocast():
        out = model(x)
        loss = loss_fn(out, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    ctx.loss = loss
    call_hook(method.after_backward, ctx)
    engine.mask_gradients()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    call_hook(method.after_step, ctx)
    return out, loss
