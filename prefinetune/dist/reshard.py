"""Resuming a ZeRO-1/2 checkpoint on another number of workers, through DeepSpeed's universal checkpoint.

A ZeRO checkpoint holds the optimizer state cut into one partition per rank (zero_pp_rank_R_*); a run on
W' != W workers cannot load it as it is. Rank 0 converts it once with `deepspeed.checkpoint.ds_to_universal`
(every parameter's fp32 weight and Adam moments, whole) into run_dir/universal/<tag>, the ranks wait for
it, and every rank loads its new partition from there (DeepSpeed's `load_universal`).

    world = saved_world_size(folder, tag)
    client_state = load_resharded(engine, folder, tag, run_dir, rank)
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

__all__ = ["saved_world_size", "load_resharded"]


def saved_world_size(folder: Path, tag: str) -> int:
    """Ranks that saved the checkpoint (its ZeRO optimizer partitions; 1 for stage 0)."""
    return max(1, len(list(Path(folder, tag).glob("zero_pp_rank_*_optim_states.pt"))))


def _convert(folder: Path, tag: str, out: Path) -> None:
    if (out / tag / "zero").is_dir():
        return
    done = subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder",
                           str(Path(folder, tag)), "--output_folder", str(out / tag), "--num_extract_workers", "1",
                           "--num_merge_workers", "1", "--inject_missing_state"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"converting {Path(folder, tag)} to a universal checkpoint failed:\n{done.stderr[-3000:]}")


def load_resharded(engine, folder: Path, tag: str, run_dir: Path, rank: int) -> dict:
    """Load the checkpoint saved on another number of workers; returns its client_state."""
    out = Path(run_dir) / "universal"
    if rank == 0:
        _convert(Path(folder), tag, out)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    config = engine._config             # DeepSpeed reads this flag when it loads (its "checkpoint" section)
    config.load_universal_checkpoint = True
    try:
        _, client_state = engine.load_checkpoint(str(out), tag=tag)
    finally:
        config.load_universal_checkpoint = False
    return client_state
