"""What prefinetune runs inside Ray Train's controller process, as Ray Train callbacks
(`RunConfig(callbacks=controller_callbacks(recipe))`, prefinetune/run/driver.py):

    KeepCheckpoints(keep)     # after each checkpoint, all but the `keep` newest (or best) deleted (run/checkpoints.py)
    QuietController()    # Ray Train's controller-side noise that says nothing to a user, kept off the console
"""
from __future__ import annotations

import shutil
from pathlib import Path

import ray.train

from prefinetune.run.checkpoints import stale

__all__ = ["KeepCheckpoints", "QuietController", "controller_callbacks"]


def controller_callbacks(keep: int, select=None) -> list:
    """`select`: the recipe's eval.select (keep the best by it and the newest), or None (the newest)."""
    return [KeepCheckpoints(keep, select.mode if select else None, select.metric if select else None),
            QuietController()]


class KeepCheckpoints(ray.train.UserCallback):
    """After every report with a checkpoint (all workers have saved it): deletes the checkpoints
    `stale` names (`mode`: keep the best by eval.select's score, and the newest). Whatever goes wrong is
    said and the run goes on (an exception here would stop it)."""

    def __init__(self, keep: int, mode: str | None = None, metric: str | None = None):
        self.keep, self.mode, self.metric = keep, mode, metric

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if checkpoint is None or not Path(checkpoint.path).is_dir():
            return
        current = Path(checkpoint.path)
        try:
            for folder in stale(current.parent, self.keep, current, self.mode, self.metric):
                shutil.rmtree(folder)
        except Exception as err:      # noqa: BLE001 - a deletion that failed costs disk, not the run
            print(f"[prefinetune] WARNING: could not delete old checkpoints beside {current} "
                  f"({getattr(err, 'strerror', None) or err}); checkpoint.keep={self.keep} goes on", flush=True)


class QuietController(ray.train.UserCallback):
    """At the first report or worker failure, in the controller's process: Ray Train's timeout stopping
    its placement-group cleaner at the end of a run on a loaded machine (a traceback, harmless) kept off
    the console (prefinetune/run/ray_adapter.py, `quiet_slow_cleaner_stop`)."""

    def after_report(self, run_context, metrics, checkpoint) -> None:
        from prefinetune.run.ray_adapter import quiet_slow_cleaner_stop

        quiet_slow_cleaner_stop()

    def after_exception(self, run_context, worker_exceptions) -> None:
        from prefinetune.run.ray_adapter import quiet_slow_cleaner_stop

        quiet_slow_cleaner_stop()
