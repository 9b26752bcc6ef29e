"""A fine-tuning run in the calling process, without Ray Train: one worker, DeepSpeed over a one-rank
gloo (or NCCL) group, kept for further runs in the process. What a `prefinetune compare` trial runs;
the shards must be prepared already.

    metrics = finetune_in_process(resolve_finetune(recipe))     # {"update", "dev/rte/accuracy", ...}
"""
from __future__ import annotations

import os
import socket

from prefinetune.distributed import collectives

__all__ = ["one_process_group", "finetune_in_process"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_process_group() -> None:
    """A one-rank process group on a free local port, unless this process has one already. It is kept
    for later runs in the same process: DeepSpeed caches the group, so a destroyed and re-made one breaks
    the next engine."""
    if collectives.active():
        if collectives.world_size() != 1:
            raise RuntimeError("finetune_in_process runs one rank; this process is in a group of "
                               f"{collectives.world_size()}")
        return
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")


def finetune_in_process(recipe) -> dict:
    """Train the (resolved) fine-tuning recipe here; returns the final metrics of its select and test splits."""
    from prefinetune.finetune.hooks import FinetuneHooks
    from prefinetune.run.worker import LocalSession, run_worker

    session = LocalSession()
    one_process_group()
    run_worker(recipe, session, hooks=FinetuneHooks())
    return session.metrics
