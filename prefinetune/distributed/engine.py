"""The DeepSpeed engine of one worker: process group, optimizer, LR schedule, ZeRO.

Called inside a Ray Train worker (or a test's spawned process); `import deepspeed` happens here,
never in the Ray driver.
"""
from __future__ import annotations

import logging

import torch

from prefinetune.distributed.collectives import backend_for
from prefinetune.distributed.deepspeed_config import deepspeed_config
from prefinetune.model.optim import build_optimizer, scheduler_factory

__all__ = ["init_distributed", "build_engine"]


def init_distributed(on_gpu: bool, backend: str | None = None) -> None:
    """Join (or start) the process group: NCCL with gloo beside it for CPU tensors on GPUs, gloo on CPU
    (prefinetune/distributed/collectives.py), or the `backend` string given."""
    import deepspeed

    _skip_shm_comm_op()
    deepspeed.init_distributed(dist_backend=backend or backend_for(on_gpu))


def _skip_shm_comm_op() -> None:
    """DeepSpeed's backend start (deepspeed/comm/torch.py, build_shm_op) JIT-compiles a shared-memory
    all-reduce op with the machine's C++ compiler wherever its CPU accelerator runs: about 30 s on each new
    install, and a C++ compiler on every machine that runs it. The op serves only `inference_all_reduce`
    (tensor-parallel inference), never training; marked incompatible in DeepSpeed's own table of ops
    (a dict kept once per process, so the mark holds), the backend skips it and training all-reduces
    through the process group as before."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


class _KnownOptimizer(logging.Filter):
    """Drops DeepSpeed's "untested optimizer" warning: HeadAwareAdamW is torch AdamW with a mask on the
    heads' groups (prefinetune/model/optim.py), tested under ZeRO-1/2 by tests/distributed/; DeepSpeed checks
    by type."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "untested optimizer" not in record.getMessage()


def build_engine(model: torch.nn.Module, recipe, world_size: int, on_gpu: bool):
    """Wrap the model in a DeepSpeed engine configured by the recipe."""
    import deepspeed
    from deepspeed.utils import logger

    if not any(isinstance(f, _KnownOptimizer) for f in logger.filters):
        logger.addFilter(_KnownOptimizer())
    init_distributed(on_gpu)
    optimizer = build_optimizer(model, recipe.optim)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer,
        lr_scheduler=scheduler_factory(recipe.optim, recipe.train.updates),
        config=deepspeed_config(recipe, world_size, on_gpu))
    return engine
