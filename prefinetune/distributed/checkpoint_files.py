"""Torn-checkpoint detection: every rank lists the files it saved (size and sha256) beside them, and a
checkpoint is used only if every rank's list is there and every file matches it.

    write_file_list(folder, rank, world)      # after engine.save_checkpoint(folder), before reporting it
    problem = check_files(folder)            # None, or what is missing or cut short
    found = newest_whole(folder)             # Found(folder, note, torn): this checkpoint, or the newest
                                             # whole one before it, and the torn ones passed over
    found = agreed_newest_whole(folder, rank, local)   # the same, read by rank 0 alone and broadcast

    newest_in(experiment_dir)                # the newest whole checkpoint of a Ray Train run folder, or None
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NamedTuple, Optional

# torch (collectives) and pyarrow (shards) are imported where used: Ray Train's controller imports this
# module for the checkpoint retention (prefinetune/run/controller.py) and needs neither

__all__ = ["TornCheckpointError", "Found", "write_file_list", "check_files", "checkpoint_update", "newest_whole",
           "agreed_newest_whole", "newest_in"]

LIST = "files-rank-{rank}.json"
_LIST = re.compile(r"files-rank-(\d+)\.json")


class TornCheckpointError(RuntimeError):
    """No whole checkpoint to resume from; the message says what is wrong with each one tried."""


class Found(NamedTuple):
    """The checkpoint to resume from, the warning to show (None when it is the one asked for), and the
    torn checkpoints passed over to reach it (the one asked for first)."""

    folder: Path
    note: Optional[str]
    torn: tuple[Path, ...] = ()


def write_file_list(folder: Path, rank: int, world: int) -> None:
    from prefinetune.data.shards import sha256_file

    folder = Path(folder)
    files = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and not _LIST.fullmatch(p.name)}
    (folder / LIST.format(rank=rank)).write_text(json.dumps({"rank": rank, "world": world, "files": files}))


def check_files(folder: Path) -> Optional[str]:
    """None when the checkpoint is whole, else what is wrong, naming the file. One without file lists is
    torn too: the lists are written before the checkpoint is copied to storage, so a copy cut short (a
    full disk) can lack them."""
    from prefinetune.data.shards import sha256_file

    folder = Path(folder)
    lists = sorted(folder.glob("files-rank-*.json"))
    if not lists:
        return "it has no file lists (files-rank-*.json): its copy to storage did not finish"
    entries = []
    for path in lists:
        try:
            entry = json.loads(path.read_text())
            entries.append({"rank": int(entry["rank"]), "world": int(entry["world"]), "files": dict(entry["files"])})
        except (OSError, ValueError, KeyError, TypeError):
            return f"its file list {path} cannot be read (cut short?)"
    world = entries[0]["world"]
    ranks = {e["rank"] for e in entries}
    if ranks != set(range(world)):
        return f"the file lists of ranks {sorted(set(range(world)) - ranks)} of {world} are missing"
    for entry in entries:
        for name, want in entry["files"].items():
            path = folder / name
            if not path.is_file():
                return f"{path} (rank {entry['rank']}) is missing"
            if path.stat().st_size != want["bytes"]:
                return f"{path} (rank {entry['rank']}) has {path.stat().st_size} bytes, {want['bytes']} were written"
            if sha256_file(path) != want["sha256"]:
                return f"{path} (rank {entry['rank']}) differs from what was written (sha256)"
    return None


def checkpoint_update(folder: Path) -> Optional[int]:
    """The update a checkpoint folder holds (from DeepSpeed's 'latest' tag, update-NNNNNNN), or None."""
    try:
        return int(Path(folder, "latest").read_text().strip().rsplit("-", 1)[1])
    except (OSError, ValueError, IndexError):
        return None


def newest_whole(folder: Path) -> Found:
    """`folder` if whole, else the newest whole checkpoint beside it (same parent) of an earlier update
    (the newer folder first among equal updates). `folder` may be gone (set aside as torn earlier):
    then every checkpoint beside it is a candidate."""
    folder = Path(folder)
    problem = check_files(folder) if (folder / "latest").is_file() else f"{folder}/latest is missing"
    if problem is None:
        return Found(folder, None)
    tried, torn = [f"{folder}: {problem}"], [folder] if folder.is_dir() else []
    limit = checkpoint_update(folder)
    siblings = [p for p in folder.parent.iterdir() if p.is_dir() and p != folder and checkpoint_update(p) is not None]
    for other in sorted(siblings, key=lambda p: (checkpoint_update(p), p.name), reverse=True):
        if limit is not None and checkpoint_update(other) >= limit:
            continue
        other_problem = check_files(other)
        if other_problem is None:
            return Found(other, f"checkpoint {folder} is torn ({problem}); resuming from the previous whole one, "
                                f"{other} (update {checkpoint_update(other)})", tuple(torn))
        tried.append(f"{other}: {other_problem}")
        torn.append(other)
    raise TornCheckpointError("no whole checkpoint to resume from:\n  " + "\n  ".join(tried))


def agreed_newest_whole(folder: Path, rank: int, local: bool = True) -> Optional[Found]:
    """`newest_whole(folder)` as every rank of a restarted run needs it: rank 0 reads and hashes the
    checkpoint's files and broadcasts its verdict, so W workers read the checkpoint once, not W times,
    and all of them resume from the same folder or all raise the same error. None (on every rank) for a
    checkpoint on remote storage (`local` False: taken as it is)."""
    from prefinetune.distributed import collectives

    verdict = None
    if rank == 0:
        try:
            if not local:
                verdict = ("remote", None, None, ())
            else:
                found = newest_whole(folder)
                verdict = ("whole", str(found.folder), found.note, tuple(str(p) for p in found.torn))
        except Exception as err:       # noqa: BLE001 - any failure reaches every rank, not only rank 0
            verdict = ("error", f"{type(err).__name__}: {err}" if not isinstance(err, TornCheckpointError)
                       else str(err), None, ())
    kind, text, note, torn = collectives.broadcast_object(verdict)
    if kind == "error":
        raise TornCheckpointError(text)
    return None if kind == "remote" else Found(Path(text), note, tuple(Path(p) for p in torn))


def newest_in(experiment_dir: Path) -> Optional[Path]:
    """The newest whole checkpoint among the checkpoint folders in `experiment_dir`, or None."""
    experiment_dir = Path(experiment_dir)
    found = [p for p in experiment_dir.iterdir() if p.is_dir() and checkpoint_update(p) is not None] \
        if experiment_dir.is_dir() else []
    if not found:
        return None
    try:
        return newest_whole(max(found, key=lambda p: (checkpoint_update(p), p.name))).folder
    except TornCheckpointError:
        return None
