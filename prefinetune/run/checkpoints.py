"""A run's checkpoint folders (RUN_DIR/ray/NAME/checkpoint_*) kept as one line of updates, by
prefinetune's own rule: Ray Train's `num_to_keep` counts every checkpoint it registered, a torn one
too, so after a fall-back from a torn checkpoint it would delete the whole one the run went back to.

    stale(experiment, keep, current)          # after each checkpoint, the folders to delete: all but the
                                              # `keep` newest (prefinetune/run/controller.py deletes them)
    set_aside(folders, experiment, TORN)      # torn checkpoints passed over on a restart -> torn/
    later_than(experiment, resume_from)       # a resume from an earlier checkpoint: the later ones,
    set_aside(..., SUPERSEDED)                #   of the attempt it abandons -> superseded/

Folders moved aside keep their names and contents (nothing torn is deleted: it is evidence), and are no
longer counted, resumed from or offered as the newest checkpoint. Local (or mounted shared) storage
only, as the rest of the run folder.
"""
from __future__ import annotations

from pathlib import Path

from prefinetune.distributed.checkpoint_files import checkpoint_update

__all__ = ["stale", "set_aside", "later_than", "TORN", "SUPERSEDED"]

TORN, SUPERSEDED = "torn", "superseded"


def _checkpoints(experiment: Path) -> list[Path]:
    """Checkpoint folders that say which update they hold (DeepSpeed's `latest`); one without it is
    still being copied, or its copy was cut short."""
    return [p for p in Path(experiment).glob("checkpoint_*") if p.is_dir() and checkpoint_update(p) is not None]


def stale(experiment: Path, keep: int, current: Path) -> list[Path]:
    """The checkpoints to delete once `current` is saved: all but the `keep` newest of those up to its
    update (newest: highest update, then the later folder name; `current` is one of the `keep`).
    Folders of a later update are being written now and are left alone."""
    current, limit = Path(current), checkpoint_update(current)
    if limit is None:
        return []
    older = [p for p in _checkpoints(experiment) if p != current and checkpoint_update(p) <= limit]
    older.sort(key=lambda p: (checkpoint_update(p), p.name), reverse=True)
    return older[max(keep - 1, 0):]


def later_than(experiment: Path, resume_from: Path) -> list[Path]:
    """The checkpoints of `experiment` of a later update than `resume_from` (one of them): what an
    earlier attempt saved past the point a resume goes back to."""
    update = checkpoint_update(resume_from)
    if update is None:
        return []
    return sorted(p for p in _checkpoints(experiment) if checkpoint_update(p) > update)


def set_aside(folders, experiment: Path, kind: str) -> list[Path]:
    """Move `folders` (those directly in `experiment`) into experiment/kind/; returns where they went."""
    experiment, moved = Path(experiment), []
    for folder in map(Path, folders):
        if folder.parent.resolve() != experiment.resolve() or not folder.is_dir():
            continue       # another run's checkpoint (--resume-from): not this run's to move
        target = experiment / kind / folder.name
        target.parent.mkdir(exist_ok=True)
        folder.rename(target)
        moved.append(target)
    return moved
