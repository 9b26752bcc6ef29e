"""Folders a run writes, checked before any work: made if missing, and a file written there to prove it.

    writable_folder(Path("runs/x"), "run.output_dir")      # the folder, or a RecipeError naming key and reason
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from prefinetune.recipe.config import RecipeError

__all__ = ["writable_folder"]


def writable_folder(folder: Path, key: str = "run.output_dir") -> Path:
    """Make `folder` (and its parents) and prove a file can be written there; else a RecipeError naming
    the folder, the key that set it and the reason, before any work starts."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # A probe of its own (tempfile's unique name, removed on close): two runs checking one
        # folder at once must not unlink each other's probe.
        with tempfile.TemporaryFile(dir=folder, prefix=".write-probe-") as probe:
            probe.write(b"ok")
    except OSError as err:
        raise RecipeError(f"{key}: cannot write to {folder} ({err.strerror or err}); give a folder you can write "
                          f"({key}=... or --output-dir)") from None
    return folder
