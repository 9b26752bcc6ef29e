"""Loading a DeepSpeed checkpoint into a run's engine, on the same or another number of workers.

What a checkpoint holds is read from DeepSpeed's own record in it (`mp_rank_00_model_states.pt`:
`dp_world_size` and the `ds_config` it was saved under), never guessed from file names, which change
with precision (`bf16_zero_pp_rank_*` under bf16, `zero_pp_rank_*` otherwise).

- Stage 0 keeps the whole optimizer state in the model-states file: it loads on any number of workers.
- ZeRO-1/2 cut the optimizer state into one partition per rank. Saved on W ranks, it loads as it is on
  W ranks; on W' != W, rank 0 converts it once with `deepspeed.checkpoint.ds_to_universal` (every
  parameter's fp32 weight and Adam moments, whole) into run_dir/universal/<tag>, the ranks wait for it,
  and every rank loads its new partition from there (DeepSpeed's `load_universal`).

    saved = saved_checkpoint(folder, tag)      # SavedCheckpoint(world=2, zero_stage=2, bf16=True)
    client_state = load_checkpoint(engine, folder, run_dir, rank, world)
"""
from __future__ import annotations

import argparse
import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from prefinetune.distributed import collectives

__all__ = ["SavedCheckpoint", "model_states", "saved_checkpoint", "load_checkpoint", "MODEL_STATES"]

MODEL_STATES = "mp_rank_00_model_states.pt"      # DeepSpeed's file of the module and its own record


@dataclass(frozen=True)
class SavedCheckpoint:
    """What DeepSpeed recorded when it saved a checkpoint."""
    world: int            # data-parallel ranks that saved it
    zero_stage: int
    bf16: bool

    @property
    def partitioned(self) -> bool:
        """The optimizer state is cut into one file per rank (ZeRO-1/2), so it loads as it is only on `world`."""
        return self.zero_stage > 0

    def loads_as_is_on(self, world: int) -> bool:
        return not self.partitioned or self.world == world


def model_states(folder: Path, tag: str) -> dict:
    """DeepSpeed's model-states file of checkpoint `tag` in `folder`: its record and the run's client state
    (the module's tensors are mapped, not read)."""
    path = Path(folder, tag, MODEL_STATES)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {Path(folder, tag)} is not a DeepSpeed checkpoint")
    return torch.load(path, map_location="cpu", mmap=True, weights_only=False)


def saved_checkpoint(folder: Path, tag: str) -> SavedCheckpoint:
    """DeepSpeed's record of checkpoint `tag` in `folder`."""
    state = model_states(folder, tag)
    config = state.get("ds_config") or {}
    return SavedCheckpoint(world=int(state["dp_world_size"]),
                           zero_stage=int((config.get("zero_optimization") or {}).get("stage", 0)),
                           bf16=bool((config.get("bf16") or {}).get("enabled", False)))


def load_checkpoint(engine, folder: Path, run_dir: Path, rank: int, world: int) -> dict:
    """Load the checkpoint `folder` names in its `latest` file into `engine`; returns its client_state."""
    tag = Path(folder, "latest").read_text().strip()
    if saved_checkpoint(Path(folder), tag).loads_as_is_on(world):
        _, client_state = engine.load_checkpoint(str(folder), tag=tag)
        return client_state
    return _load_resharded(engine, Path(folder), tag, run_dir, rank)


def _convert(folder: Path, tag: str, out: Path) -> None:
    """DeepSpeed's `ds_to_universal` in this process, one worker (it then forks nothing): a subprocess
    would import DeepSpeed again for each conversion. Its progress output is kept for the error only."""
    if (out / tag / "zero").is_dir():
        return
    from deepspeed.checkpoint import ds_to_universal

    args = argparse.Namespace(input_folder=str(Path(folder, tag)), output_folder=str(out / tag), num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=True)
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            ds_to_universal.main(args)
    except Exception as err:       # noqa: BLE001 - any failure of the converter, with what it printed
        raise RuntimeError(f"converting {Path(folder, tag)} to a universal checkpoint failed ({type(err).__name__}: "
                           f"{err}):\n{said.getvalue()[-3000:]}") from err


def _load_resharded(engine, folder: Path, tag: str, run_dir: Path, rank: int) -> dict:
    """Load a ZeRO checkpoint saved on another number of workers; returns its client_state."""
    out = Path(run_dir) / "universal"
    if rank == 0:
        _convert(Path(folder), tag, out)
    collectives.barrier()
    config = engine._config             # DeepSpeed reads this flag when it loads (its "checkpoint" section)
    config.load_universal_checkpoint = True
    try:
        _, client_state = engine.load_checkpoint(str(out), tag=tag)
    finally:
        config.load_universal_checkpoint = False
    return client_state
