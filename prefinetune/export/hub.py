"""Upload an export folder to the Hugging Face hub.

    push_to_hub("runs/muppet/export", "my-org/muppet-minilm")            # token from HF_TOKEN

The token comes from the argument or the HF_TOKEN environment variable (else huggingface_hub's own
login); it is handed to huggingface_hub only, never logged or written.
"""
from __future__ import annotations

import os
from pathlib import Path

from prefinetune.export.folder import TASKS_FILE, pickled_files, read_tasks_info

__all__ = ["push_to_hub"]

def push_to_hub(out_dir: str | Path, repo_id: str, token: str | None = None, private: bool = True,
                revision: str | None = None) -> str:
    """Create the model repo if needed (private by default) and upload the folder; returns the commit URL."""
    from huggingface_hub import HfApi

    folder = _checked_folder(Path(out_dir))
    api = HfApi(token=token or os.environ.get("HF_TOKEN") or None)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", revision=revision,
                               commit_message="Upload prefinetune export", ignore_patterns=[".*", "**/.*"])
    return str(getattr(commit, "commit_url", commit))


def _checked_folder(folder: Path) -> Path:
    """Only a complete export with safetensors weights goes up."""
    if not (folder / TASKS_FILE).is_file():
        raise FileNotFoundError(f"{folder} is not a prefinetune export (no {TASKS_FILE}): refusing to upload it")
    read_tasks_info(folder)
    pickled = pickled_files(folder)
    if pickled:
        raise ValueError(f"{folder} holds pickled weights {pickled}: refusing to upload them")
    return folder
