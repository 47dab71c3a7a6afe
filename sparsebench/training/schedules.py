"""Optimizers and per-step learning-rate schedules (linear warm-up, then cosine, step or constant)."""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from ..config.schema import OptimConfig


def build_optimizer(cfg: OptimConfig, model: nn.Module,
                    exclude_decay: Iterable[nn.Parameter] = ()) -> torch.optim.Optimizer:
    """``exclude_decay``: parameters never decayed (a method regularizes them itself,
    e.g. Top-KAST's exploration penalty on the prunable weights)."""
    excluded = {id(p) for p in exclude_decay}
    decay, no_decay = [], []
    for p in model.parameters():
        # Weights decay, biases and norms do not; an always-sparse layer's weight is a vector
        # of active values, marked ``sparse_weight`` (sparsebench.sparsity.sparse_linear).
        is_weight = p.ndim > 1 or getattr(p, "sparse_weight", False)
        decays = (cfg.decay_norm_and_bias or is_weight) and id(p) not in excluded
        (decay if decays else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}] if decay else []
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               foreach=True)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, foreach=True)


def lr_factor(cfg: OptimConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        passed = sum(step >= m * total_steps for m in cfg.milestones)
        return cfg.gamma ** passed
    progress = (step - warmup) / max(1, total_steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(cfg: OptimConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(cfg, step, steps_per_epoch, total_steps))
