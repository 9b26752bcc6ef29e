"""One run, one folder: what the driver checks before any Ray or worker starts, so that a run folder
holds one run and a resume continues that run and no other.

    check_start(recipe, resume_from)     # RecipeError: a run is already there, or --resume-from is no checkpoint
    with RunLock(recipe.run_dir):         # a second writer on the folder is refused, naming the holder
        check_resume(recipe, resume_from) # RecipeError: nothing left to train, or another run's recipe

- A folder whose run saved a checkpoint is not started again: the error names the update it reached
  and the two ways on (`--resume-from` its newest whole checkpoint, or another --name/--output-dir).
- `--resume-from` must be a checkpoint folder (DeepSpeed's `latest` file in it) that holds fewer updates
  than the run's train.updates, saved by a recipe that differs from this one only in RESUMABLE keys
  (the recipe travels in every checkpoint's client state, `recipe`).
- Every start sets Ray Train's record of an earlier attempt aside (prefinetune/run/ray_adapter.py), so
  the checkpoint given is the one used, never Ray's newest; a checkpoint an earlier resume set aside
  (superseded/) may be resumed from, and is put back in line.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

from prefinetune.recipe.config import RecipeConfig, RecipeError
from prefinetune.recipe.overrides import flat_keys

__all__ = ["RESUMABLE", "check_start", "check_resume", "changed_keys", "RunLock", "LOCK_FILE", "FINAL_METRICS"]

# What a resume may change: where the run lives and reads its data, how many workers run it, how far it
# goes, and how often it logs, evaluates and checkpoints (a layer above the run adds its own keys:
# RunHooks.resumable, .derived). Anything else (model, tasks, sampling, batches, optimizer, precision,
# seed) would make the weights those of another run, under this run's name.
RESUMABLE = ("run.name", "run.output_dir", "data.root", "data.shards_dir", "data.num_proc", "scaling",
             "train.updates", "train.updates_from_epochs", "train.log_every", "train.nonfinite_skips", "eval",
             "checkpoint", "export", "log", "diagnostics")
LOCK_FILE = ".lock"
FINAL_METRICS = "eval_final.json"   # the driver writes it once training has ended: the run is finished


def changed_keys(saved: dict, now: dict, resumable: tuple = RESUMABLE, derived: dict | None = None) -> list[str]:
    """The dotted recipe keys whose values differ between two recipe dicts, less the `resumable` ones and
    those `derived` ({key: the key it is set from}) from a key that did not change."""
    a, b = flat_keys(saved), flat_keys(now)
    changed = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    same_source = {k for k, source in (derived or {}).items() if a.get(source) is not None
                   and a.get(source) == b.get(source)}
    return [k for k in changed
            if k not in same_source and not any(k == r or k.startswith(r + ".") for r in resumable)]


def _checkpoint_folders(experiment: Path) -> list[Path]:
    return sorted(p for p in experiment.glob("checkpoint_*") if p.is_dir()) if experiment.is_dir() else []


def _saved_state(folder: Path) -> Optional[dict]:
    """The client state a checkpoint was saved with (update, recipe), or None where it cannot be read
    (a torn model-states file is the worker's to report: it falls back to an earlier checkpoint)."""
    from prefinetune.distributed.reshard import model_states

    try:
        return model_states(folder, (folder / "latest").read_text().strip())
    except Exception:      # noqa: BLE001 - any unreadable file: the worker says which, with its fallback
        return None


def _refuse_existing(recipe: RecipeConfig, resume_from: Optional[str]) -> None:
    from prefinetune.distributed.checkpoint_files import checkpoint_update, newest_in
    from prefinetune.run.checkpoints import SUPERSEDED

    experiment = recipe.checkpoints_dir
    found = _checkpoint_folders(experiment)
    if not found:
        return
    if resume_from is not None:         # resuming here: only from one of this run's own checkpoints
        parent = Path(resume_from).resolve().parent
        if "://" in resume_from or parent in (experiment.resolve(), (experiment / SUPERSEDED).resolve()):
            return
        raise RecipeError(f"run folder {recipe.run_dir} already holds run {recipe.run.name!r}, and --resume-from "
                          f"{resume_from} is not one of its checkpoints: resume another run's checkpoint under a new "
                          "--name or --output-dir")
    reached = max((checkpoint_update(p) or 0) for p in found)
    newest = newest_in(experiment)
    if (recipe.run_dir / FINAL_METRICS).is_file():
        raise RecipeError(f"run folder {recipe.run_dir} already holds run {recipe.run.name!r}, finished at update "
                          f"{reached} (its export: {recipe.run_dir / 'export'}): another --name / --output-dir for a "
                          f"new run, or --resume-from {newest} with --updates more than {reached} to train on")
    way = f"--resume-from {newest} to continue it" if newest else "no whole checkpoint to continue from"
    raise RecipeError(f"run folder {recipe.run_dir} already holds run {recipe.run.name!r} (it reached update "
                      f"{reached}): {way}, or another --name / --output-dir for a new run")


def _check_resume_folder(resume_from: str) -> None:
    folder = Path(resume_from)
    if not folder.is_dir():
        raise RecipeError(f"--resume-from {resume_from}: no such folder")
    if not (folder / "latest").is_file():
        raise RecipeError(f"--resume-from {resume_from}: not a checkpoint (no DeepSpeed 'latest' file in it); a "
                          "run's checkpoints are its RUN_DIR/ray/NAME/checkpoint_* folders")


def check_start(recipe: RecipeConfig, resume_from: Optional[str]) -> None:
    """Before anything is written: refuse a run where one already is (unless it resumes), and a
    --resume-from that is not a checkpoint folder."""
    if resume_from is not None and "://" not in resume_from:          # remote storage: taken as it is
        _check_resume_folder(resume_from)
    _refuse_existing(recipe, resume_from)


def check_resume(recipe: RecipeConfig, resume_from: Optional[str], hooks=None) -> None:
    """Once the run's length is known (a layer above may set it, `hooks`): refuse a resume from a
    checkpoint with nothing left to train, or saved by a recipe that differs in a key a resume may not
    change (RESUMABLE, and the keys the hooks add)."""
    from prefinetune.run.hooks import RunHooks

    hooks = hooks or RunHooks()
    if resume_from is None or "://" in resume_from:
        return
    state = _saved_state(Path(resume_from))
    if state is None:
        return
    update = int(state.get("update", 0))
    if update >= recipe.train.updates:
        longer = hooks.longer_hint(recipe, update)
        raise RecipeError(f"--resume-from {resume_from} holds update {update} and train.updates is "
                          f"{recipe.train.updates}: nothing is left to train (the run's export is in its run folder's "
                          f"export/); to train on, give {longer}")
    _refuse_stopped_early(recipe, resume_from, state)
    saved = state.get("recipe")
    if saved is not None:
        resumable = RESUMABLE + tuple(hooks.resumable)
        changed = changed_keys(saved, recipe.model_dump(mode="json"), resumable, hooks.derived)
        if changed:
            raise RecipeError(f"--resume-from {resume_from} was saved by a run whose recipe differs in {changed}: a "
                              f"resume may change only {list(resumable)}; start a new run (another --name) instead")


def _refuse_stopped_early(recipe: RecipeConfig, resume_from: str, state: dict) -> None:
    """A checkpoint saved by an early stop is a finished run, unless eval.patience is raised (or select changed)."""
    from prefinetune.run.selection import Patience

    patience = Patience(recipe)
    patience.load_state(state.get("patience"))
    if patience.exhausted():
        raise RecipeError(f"--resume-from {resume_from} is where the run stopped early (eval.patience="
                          f"{recipe.eval.patience}: {patience.waited} evaluations without improvement): to train on, "
                          "raise eval.patience")


class RunLock:
    """`run_dir/.lock` locked (flock) for as long as the driver runs, with the holder's host, pid and start
    time written in it: a second run on the same folder is refused naming the holder. The kernel drops
    the lock when its process ends, however it ends, so a lock left by a dead run is simply taken."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._handle = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            text = handle.read()
            handle.close()
            self._refuse(text)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        self._handle = handle
        return self

    def _refuse(self, text: str) -> None:
        try:
            holder = json.loads(text)
        except ValueError:
            holder = {}
        raise RecipeError(f"run folder {self.path.parent} is in use by another run (pid {holder.get('pid')} on host "
                          f"{holder.get('host')}, since {holder.get('since')}): wait for it, or give another --name / "
                          "--output-dir")

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)
        self._handle.close()          # closing drops the lock
