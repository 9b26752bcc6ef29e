"""Per-task folders that share one backbone file. Each stock AutoModelFor* folder keeps its weights as a
standard sharded checkpoint (`model.safetensors.index.json`) of two files: `backbone.safetensors`, the
backbone's weights, one file hard-linked into every task folder of the export, and `head.safetensors`,
the task's own weights (its head, and the pooler where the head lives there). Each folder still loads
alone with `from_pretrained`, and copying one copies the file; T task folders cost one backbone on
disk instead of T.

    shared = None
    for task in tasks:
        model.save_pretrained(folder)                        # transformers' own file, names and all
        shared = share_backbone(folder, model.base_model_prefix, shared)   # Shared(path, tensors)

A backbone part that differs from the shared file (another architecture) gets a file of its own; where
the filesystem has no hard links, the file is copied.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import NamedTuple, Optional

import torch

__all__ = ["share_backbone", "Shared", "load_shared", "BACKBONE_FILE", "HEAD_FILE", "INDEX_FILE", "readable_files"]

WEIGHTS_FILE, INDEX_FILE = "model.safetensors", "model.safetensors.index.json"
BACKBONE_FILE, HEAD_FILE = "backbone.safetensors", "head.safetensors"


def _is_backbone(key: str, prefix: str) -> bool:
    return key.startswith(prefix + ".") and not key.startswith(prefix + ".pooler.")


class Shared(NamedTuple):
    """The backbone file later task folders link to, and its tensors (kept, so each folder's backbone part
    is compared in memory rather than by reading the file again)."""

    path: Path
    tensors: dict


def load_shared(path: Path) -> Shared:
    """An existing task folder's backbone file, to share with folders written later."""
    from safetensors.torch import load_file

    return Shared(Path(path), load_file(str(path)))


def _same(shared: Shared, tensors: dict[str, torch.Tensor]) -> bool:
    if shared.tensors.keys() != tensors.keys():
        return False
    return all(saved.dtype == tensors[k].dtype and torch.equal(saved, tensors[k])
               for k, saved in shared.tensors.items())


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:            # no hard links here (some network and FUSE filesystems)
        shutil.copyfile(source, target)


def share_backbone(folder: Path, prefix: str, shared: Optional[Shared]) -> Optional[Shared]:
    """Split `folder`'s model.safetensors (as save_pretrained wrote it) into the backbone part, linked to
    `shared` where it holds the same tensors, and the task's part; returns the backbone file later
    folders should share. A folder transformers already sharded (a large model) is left as written."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder, weights = Path(folder), Path(folder) / WEIGHTS_FILE
    if not weights.is_file():
        return shared
    with safe_open(str(weights), "pt") as f:
        metadata = f.metadata() or {"format": "pt"}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    backbone = {k: t for k, t in tensors.items() if _is_backbone(k, prefix)}
    head = {k: t for k, t in tensors.items() if k not in backbone}
    if not backbone or not head:
        return shared
    if shared is not None and _same(shared, backbone):
        _link_or_copy(shared.path, folder / BACKBONE_FILE)
    else:
        save_file(backbone, str(folder / BACKBONE_FILE), metadata=metadata)
        shared = Shared(folder / BACKBONE_FILE, backbone)
    save_file(head, str(folder / HEAD_FILE), metadata=metadata)
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": size},
             "weight_map": {k: BACKBONE_FILE if k in backbone else HEAD_FILE for k in sorted(tensors)}}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    weights.unlink()
    return shared


def readable_files(folder: Path) -> None:
    """Every file under `folder` readable as the user's umask allows (safetensors writes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(mode)
