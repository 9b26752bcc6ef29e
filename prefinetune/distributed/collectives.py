"""The one home of every collective the project itself calls (DeepSpeed's own stay DeepSpeed's).

An NCCL process group has no backend for CPU tensors: an all-reduce of a CPU flag raises "No backend type
associated with device type cpu" at the first update of a GPU run. Each function here moves its tensor to
a device the group's backend serves (CUDA under NCCL, CPU under gloo, either under `cpu:gloo,cuda:nccl`)
and hands the result back on the caller's device. On GPUs the group is started with both backends
(`GPU_BACKEND`), so a CPU tensor from any library still has a path.

The functions run whenever a process group exists, at world size 1 too, so a one-GPU run goes through
the same calls as 64 GPUs; without a process group they return the caller's own value.
`tests/distributed/test_collectives.py` scans the package and fails on a collective called anywhere else.

    from prefinetune.distributed import collectives
    total = collectives.all_reduce(torch.tensor([1.0]))          # summed over ranks, on the caller's device
    everyone = collectives.all_gather_object({"rank": rank})     # [rank 0's, rank 1's, ...]
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["GPU_BACKEND", "CPU_BACKEND", "backend_for", "active", "world_size", "served_devices", "comm_device",
           "all_reduce", "all_gather", "all_gather_object", "broadcast_object", "barrier"]

GPU_BACKEND = "cpu:gloo,cuda:nccl"     # NCCL for CUDA tensors, gloo for any CPU tensor (Ray Train takes it)
CPU_BACKEND = "gloo"

# which tensor devices each backend serves (gloo's CUDA support is partial: keep it to CPU)
_SERVES = {"gloo": {"cpu"}, "nccl": {"cuda"}, "mpi": {"cpu"}, "ucc": {"cpu", "cuda"}}


def backend_for(on_gpu: bool) -> str:
    """The process group backend a run starts with."""
    return GPU_BACKEND if on_gpu else CPU_BACKEND


def active() -> bool:
    """A process group exists (Ray Train's, DeepSpeed's, or a test's)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    return torch.distributed.get_world_size() if active() else 1


def served_devices(backend: str) -> set[str]:
    """Device types a backend string serves: "nccl" -> {cuda}; "cpu:gloo,cuda:nccl" -> {cpu, cuda}."""
    devices: set[str] = set()
    for part in str(backend).lower().split(","):
        if ":" in part:
            devices.add(part.split(":", 1)[0].strip())
        else:
            devices |= _SERVES.get(part.strip(), {"cpu"})
    return devices


def comm_device(tensor: torch.Tensor) -> torch.device:
    """Where `tensor` has to be for the group's backend: where it is, if served there; else CUDA (the
    current device) under an NCCL-only group, or CPU."""
    served = served_devices(torch.distributed.get_backend())
    if tensor.device.type in served:
        return tensor.device
    if "cuda" in served:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN"}


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """A new tensor: `tensor` reduced over every rank (sum, max or min), on `tensor`'s device."""
    if op not in _OPS:
        raise ValueError(f"all_reduce op must be one of {sorted(_OPS)}, not {op!r}")
    if not active():
        return tensor.clone()
    moved = tensor.detach().to(comm_device(tensor), copy=True)
    torch.distributed.all_reduce(moved, op=getattr(torch.distributed.ReduceOp, _OPS[op]))
    return moved.to(tensor.device)


def all_gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's `tensor` (same shape on each), in rank order, on `tensor`'s device."""
    if not active():
        return [tensor.clone()]
    moved = tensor.detach().to(comm_device(tensor))
    parts = [torch.empty_like(moved) for _ in range(world_size())]
    torch.distributed.all_gather(parts, moved)
    return [p.to(tensor.device) for p in parts]


def all_gather_object(obj: Any) -> list:
    """Every rank's picklable `obj`, in rank order (torch moves the bytes on the group's device)."""
    if not active():
        return [obj]
    gathered: list = [None] * world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj`, on every rank."""
    if not active():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if active():
        torch.distributed.barrier()
