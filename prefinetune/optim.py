"""Optimizer and learning-rate schedule: AdamW without weight decay on biases and norms, linear
warm-up then linear decay to zero. Pure pieces, shared by the DeepSpeed engine and by tests'
single-process references."""
from __future__ import annotations

from functools import partial

import torch
from torch import nn

__all__ = ["lr_factor", "param_groups", "build_optimizer", "scheduler_factory"]

_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "layernorm.weight", "norm.weight")


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    remaining = max(total - warmup, 1)
    return max(0.0, 1.0 - (step - warmup) / remaining)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into decayed and not decayed (biases, norm weights)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith(_NO_DECAY) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, optim) -> torch.optim.Optimizer:
    """torch AdamW from the recipe's optim section."""
    return torch.optim.AdamW(param_groups(model, optim.weight_decay), lr=optim.lr,
                             betas=tuple(optim.betas), eps=optim.eps)


def scheduler_factory(optim, total_updates: int):
    """A callable optimizer -> LambdaLR (DeepSpeed steps it once per update)."""
    fn = partial(lr_factor, warmup=optim.warmup_updates, total=total_updates)
    return lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
