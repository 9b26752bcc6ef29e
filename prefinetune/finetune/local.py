"""A fine-tuning run in the calling process, without Ray Train: one worker, DeepSpeed over a one-rank
gloo (or NCCL) group. What a `prefinetune compare` trial runs; shards must be prepared already.

    metrics = finetune_in_process(resolve_finetune(recipe))     # {"update", "dev/rte/accuracy", ...}
"""
from __future__ import annotations

import contextlib
import os
import socket

import torch

__all__ = ["one_process_group", "finetune_in_process"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def one_process_group():
    """Environment for a one-rank process group on a free local port; the group is destroyed after."""
    keys = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def finetune_in_process(recipe) -> dict:
    """Train the (resolved) fine-tuning recipe here; returns the final metrics of its select and test splits."""
    from prefinetune.train import LocalSession, run_worker

    session = LocalSession()
    with one_process_group():
        run_worker(recipe, session)
    return session.metrics
