"""Muppet loss scaling: each task's loss is divided by log(n), n = the number of predictions it ranges over.

Without it, tasks with many outcomes (a 5-way choice, a 512-position span, a 50k vocabulary) dominate
the shared gradient simply because their cross-entropy is larger at chance level, log(n).
"""
from __future__ import annotations

import math

import torch

__all__ = ["log_n", "scale_loss"]


def log_n(n: int) -> float:
    """log(n), the cross-entropy of a uniform guess over n outcomes; n must be at least 2."""
    if n < 2:
        raise ValueError(f"log(n) scaling needs n >= 2 predictions, got n={n}")
    return math.log(n)


def scale_loss(loss: torch.Tensor, n: int) -> torch.Tensor:
    """The loss divided by log(n)."""
    return loss / log_n(n)
