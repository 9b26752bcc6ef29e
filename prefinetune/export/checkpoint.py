"""DeepSpeed checkpoint -> fp32 state dict of the MultiTaskModel.

    state = state_dict_from_checkpoint("runs/muppet/checkpoints")   # tag from the 'latest' file
    model.load_state_dict(state)

ZeRO-1/2 checkpoints go through DeepSpeed's `zero_to_fp32`, which rebuilds the fp32 master weights
from the optimizer partitions (exact even when the run was bf16). Two gaps it leaves are closed here:
- ZeRO-1 saves no copy of frozen parameters (the BERT pooler) for it to return, and ZeRO-2 returns
  them in the training dtype: they are taken from the module states file and cast to fp32.
- Stage 0 has no partitions: the 'module' entry is the model (in the training dtype), cast to fp32.

A DeepSpeed checkpoint is a pickle (zero_to_fp32 unpickles it in full): export only checkpoints you trust.
"""
from __future__ import annotations

import contextlib
import io
import logging
import pickle
from pathlib import Path

import torch

__all__ = ["CheckpointError", "state_dict_from_checkpoint", "locate_checkpoint"]

log = logging.getLogger(__name__)
MODEL_STATES = "mp_rank_00_model_states.pt"


class CheckpointError(FileNotFoundError):
    """The folder is not a DeepSpeed checkpoint that can be exported."""


def state_dict_from_checkpoint(checkpoint_dir: str | Path, tag: str | None = None) -> dict[str, torch.Tensor]:
    """The fp32 state dict saved by `engine.save_checkpoint(checkpoint_dir, tag=...)`.

    `tag` defaults to the one named in checkpoint_dir/latest; a tag folder itself is accepted too.
    """
    root, tag = locate_checkpoint(Path(checkpoint_dir), tag)
    tag_dir = root / tag
    if any(tag_dir.glob("*_optim_states.pt")):
        state = _from_zero(root, tag)
        _add_missing_from_module(state, tag_dir)
    else:
        state = dict(_module_states(tag_dir)["module"])
    return {name: _fp32(t) for name, t in state.items()}


def locate_checkpoint(checkpoint_dir: Path, tag: str | None) -> tuple[Path, str]:
    """(folder holding the tag folders, tag), or a CheckpointError naming the folder."""
    if tag is None and (checkpoint_dir / MODEL_STATES).is_file():
        return checkpoint_dir.parent, checkpoint_dir.name
    if tag is None:
        latest = checkpoint_dir / "latest"
        if not latest.is_file():
            raise CheckpointError(
                f"{checkpoint_dir} is not a DeepSpeed checkpoint folder: it has no 'latest' file "
                "(pass the tag, or the folder engine.save_checkpoint wrote)")
        tag = latest.read_text(encoding="utf-8").strip()
    if (checkpoint_dir / tag / "zero_pp_rank_0_mp_rank_00_model_states.pt").is_file():
        raise CheckpointError(f"{checkpoint_dir / tag} is a ZeRO-3 checkpoint; recipes train with stage 0-2")
    if not (checkpoint_dir / tag / MODEL_STATES).is_file():
        raise CheckpointError(
            f"{checkpoint_dir} is not a DeepSpeed checkpoint folder: {checkpoint_dir / tag / MODEL_STATES} "
            "does not exist")
    return checkpoint_dir, tag


def _from_zero(root: Path, tag: str) -> dict[str, torch.Tensor]:
    """zero_to_fp32's state dict; its progress prints go to the debug log."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        state = get_fp32_state_dict_from_zero_checkpoint(str(root), tag=tag)
    log.debug("zero_to_fp32: %s", printed.getvalue())
    return state


def _add_missing_from_module(state: dict[str, torch.Tensor], tag_dir: Path) -> None:
    """Add what zero_to_fp32 skipped (frozen parameters under ZeRO-1) from the module states file;
    log what exists only in the training dtype (frozen parameters when it was bf16)."""
    module = _module_states(tag_dir)["module"]
    for name, tensor in module.items():
        state.setdefault(name, tensor)
    reduced = sorted(n for n, t in state.items() if t.is_floating_point() and not _is_fp32(t))
    if reduced:
        log.info("%d tensors exist only in %s in the checkpoint (frozen or buffers), cast to fp32: %s",
                 len(reduced), state[reduced[0]].dtype, reduced[:8])


def _module_states(tag_dir: Path) -> dict:
    """The module states file; as plain tensors when possible, as a full pickle when it holds objects."""
    path = tag_dir / MODEL_STATES
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        log.info("%s holds non-tensor objects: loading it as a full pickle", path)
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)


def _is_fp32(t: torch.Tensor) -> bool:
    return t.dtype == torch.float32


def _fp32(t: torch.Tensor) -> torch.Tensor:
    """Floating tensors to fp32, contiguous and owning their memory (not views of an mmap)."""
    return t.detach().to(torch.float32).clone() if t.is_floating_point() else t.detach().clone()
