"""A run's checkpoint folders (RUN_DIR/ray/NAME/checkpoint_*) kept as one line of updates, by
prefinetune's own rule: Ray Train's `num_to_keep` counts every checkpoint it registered, a torn one
too, so after a fall-back from a torn checkpoint it would delete the whole one the run went back to.

    tidy_at_start(experiment, found)     # at every (re)start, once rank 0 knows the checkpoint to resume
                                         # from: the torn ones -> torn/, later ones -> superseded/
    stale(experiment, keep, current)     # after each checkpoint, the folders to delete: all but the
                                         # `keep` newest (prefinetune/run/controller.py deletes them)
    restore(folder, experiment)          # a superseded checkpoint given to --resume-from, put back in line

At a (re)start nothing is being written, so the folder is made one line there: the checkpoint resumed
from and the ones before it. Torn checkpoints passed over, and copies cut short (no `latest`), go to
torn/; checkpoints of a later update, or of the same update in another folder (an attempt abandoned by
a resume from an earlier checkpoint, or a copy a killed worker left), go to superseded/. Folders moved
aside keep their names and contents (nothing torn is deleted: it is evidence, and the user's to
delete), and are no longer counted, resumed from or offered as the newest checkpoint. Local (or
mounted shared) storage only, as the rest of the run folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from prefinetune.distributed.checkpoint_files import Found, checkpoint_update

__all__ = ["stale", "set_aside", "tidy_at_start", "restore", "aside_newest", "checkpoint_updates", "TORN",
           "SUPERSEDED"]

TORN, SUPERSEDED = "torn", "superseded"


def checkpoint_updates(experiment: Path) -> dict[Path, Optional[int]]:
    """Each checkpoint folder with the update it holds (DeepSpeed's `latest`), None for one without it
    (being copied now, or its copy cut short)."""
    folders = [p for p in Path(experiment).glob("checkpoint_*") if p.is_dir()]
    return {p: checkpoint_update(p) for p in folders}


def stale(experiment: Path, keep: int, current: Path, mode: Optional[str] = None,
          metric: Optional[str] = None) -> list[Path]:
    """The checkpoints to delete once `current` is saved: all but the `keep` newest of those up to its
    update (newest: highest update, then the later folder name; `current` is one of the `keep`). With
    `mode` (eval.select's max or min) and `metric`: all but the `keep` best by their score of that
    metric (select.json), and the newest, `current`, which a resume needs. Folders of a later update, or
    without `latest`, may be being written now: left alone."""
    from prefinetune.run.selection import by_score

    current, limit = Path(current), checkpoint_update(current)
    if limit is None:
        return []
    updates = checkpoint_updates(experiment)
    older = [(u, p) for p, u in updates.items() if p != current and u is not None and u <= limit]
    older.sort(key=lambda pair: (pair[0], pair[1].name), reverse=True)
    if mode is None:
        return [p for _, p in older[max(keep - 1, 0):]]
    scored, unscored = by_score([current] + [p for _, p in older], mode, metric)
    kept = set((scored + unscored)[:keep])                   # unscored ones after the scored, newest first
    return [p for _, p in older if p not in kept]


def set_aside(folders, experiment: Path, kind: str) -> tuple[list[Path], list[str]]:
    """Move `folders` (those directly in `experiment`) into experiment/kind/ (a name already there gets a
    suffix); returns (where they went, what could not be moved, in words). Never raises for a folder."""
    experiment, moved, failed = Path(experiment), [], []
    for folder in map(Path, folders):
        if folder.parent.resolve() != experiment.resolve() or not folder.is_dir():
            continue       # another run's checkpoint (--resume-from): not this run's to move
        target = experiment / kind / folder.name
        for n in range(1, 1000):
            if not target.exists():
                break
            target = experiment / kind / f"{folder.name}.{n}"
        try:
            target.parent.mkdir(exist_ok=True)
            folder.rename(target)
            moved.append(target)
        except OSError as err:
            failed.append(f"{folder} ({err.strerror or err})")
    return moved, failed


def tidy_at_start(experiment: Path, found: Found) -> list[str]:
    """Make `experiment` one line ending at `found.folder` (see the module's docstring); returns the
    lines that say what moved, or could not be moved."""
    experiment = Path(experiment)
    limit = checkpoint_update(found.folder)
    updates = checkpoint_updates(experiment)
    cut_short = [p for p, u in updates.items() if u is None]
    later = [p for p, u in updates.items() if u is not None and p != found.folder and p not in found.torn
             and (limit is None or u >= limit)]
    lines = []
    for folders, kind, what in ((list(found.torn) + cut_short, TORN, "torn"),
                                (sorted(later), SUPERSEDED, "of a later update (an earlier attempt's)")):
        moved, failed = set_aside(folders, experiment, kind)
        if moved:
            lines.append(f"{len(moved)} checkpoint(s) {what} set aside in {experiment / kind}: "
                         + ", ".join(p.name for p in moved))
        if failed:
            lines.append(f"could not set aside {', '.join(failed)}: checkpoint.keep counts them")
    return lines


def restore(folder: Path, experiment: Path) -> Path:
    """A checkpoint in experiment/superseded/ given to --resume-from, moved back into the line (the
    driver calls it before any worker starts); any other folder is returned as it is."""
    folder, experiment = Path(folder), Path(experiment)
    if folder.parent.resolve() != (experiment / SUPERSEDED).resolve():
        return folder
    target = experiment / folder.name
    folder.rename(target)
    return target


def aside_newest(experiment: Path) -> Optional[Path]:
    """The newest checkpoint set aside in experiment/superseded/ (for a run left with none in line)."""
    found = [(u, p) for p, u in checkpoint_updates(Path(experiment) / SUPERSEDED).items() if u is not None]
    return max(found, key=lambda pair: (pair[0], pair[1].name))[1] if found else None
