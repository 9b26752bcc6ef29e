"""The run's one progress bar: rank 0 writes the update it finished to `progress.json` in the run
folder, and the Ray driver draws the bar from it while Ray Train runs.

Drawn with Ray's own tqdm (`ray.experimental.tqdm_ray`) in the driver, so Ray hides the bar while it
prints worker output and redraws it after; in a log file the bar costs carriage returns, not lines.

    write_progress(run_dir, update, total)              # rank 0, after each update (atomic replace)
    with DriverProgress(run_dir / PROGRESS_FILE, total):   # the driver, around trainer.fit()
        trainer.fit()
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

__all__ = ["PROGRESS_FILE", "write_progress", "read_progress", "DriverProgress"]

PROGRESS_FILE = "progress.json"


def write_progress(run_dir: Path, update: int, total: int) -> None:
    """{"update": last finished update, "total": updates of the run}, replaced atomically."""
    path = Path(run_dir) / PROGRESS_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"update": update, "total": total}))
    os.replace(tmp, path)


def read_progress(path: Path) -> tuple[int, int] | None:
    """(update, total), or None while there is no (complete) progress file."""
    try:
        record = json.loads(Path(path).read_text())
        return int(record["update"]), int(record["total"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


class DriverProgress:
    """A bar of `total` updates that follows the progress file, polled every `poll_s` seconds."""

    def __init__(self, path: Path, total: int, poll_s: float = 1.0):
        self.path, self.total, self.poll_s = Path(path), total, poll_s
        self.path.unlink(missing_ok=True)          # a file from an earlier run in this folder
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="prefinetune-progress", daemon=True)
        self.bar = None

    def __enter__(self) -> "DriverProgress":
        from ray.experimental.tqdm_ray import tqdm

        self.bar = tqdm(total=self.total, desc="updates", unit="upd")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.refresh()
        self.bar.close()

    def refresh(self) -> None:
        """Move the bar to the update the file names."""
        progress = read_progress(self.path)
        if progress is not None and progress[0] > self.bar.n:
            self.bar.update(progress[0] - self.bar.n)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.refresh()
