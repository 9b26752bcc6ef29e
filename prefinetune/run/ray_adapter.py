"""Every use of Ray's internals, in one place, each with a test on the installed Ray
(tests/run/test_ray_adapter.py); setup.cfg bounds Ray to the versions those tests passed on.

    worker_failures(err)         # {rank: exception} of a Ray Train failure of its workers
    wrapped_causes(err)          # what a Ray Train failure wraps: a worker's exception, the controller's
    ray_train_report_logger()    # the logger of Ray Train's per-report INFO lines, or None
    set_aside_snapshot(dir)      # Ray Train's record of an earlier attempt in a run folder, moved aside
    with quiet_tune_restore_hint():   # Ray Tune's "Resume experiment with: Tuner.restore(...)" kept off the console
    interrupted_trial(error)     # a trial's error that is only Ctrl-C reaching its process
    quiet_slow_cleaner_stop()    # in Ray Train's controller: a slow stop of its placement-group cleaner unlogged

Each degrades to doing nothing where a Ray release changed what it reads (the test then fails, so
the bound in setup.cfg is raised only with the adapter fixed).
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Optional

__all__ = ["SNAPSHOT", "TUNE_LOGGER", "ANALYSIS_LOGGER", "quiet_tune_restore_hint", "interrupted_trial",
           "worker_failures", "wrapped_causes", "ray_train_report_logger", "set_aside_snapshot", "CLEANER_LOGGER",
           "CLEANER_STOP_FAILED", "quiet_slow_cleaner_stop"]

# Ray Train's record of the checkpoints a run reported (ray.train.v2 CheckpointManager), beside them:
# a new run with the same name and storage path loads it and hands its newest checkpoint to the workers.
SNAPSHOT = "checkpoint_manager_snapshot.json"


def worker_failures(err: BaseException) -> dict:
    """{world rank: exception} of a Ray Train WorkerGroupError (`worker_failures`), else {}."""
    failures = getattr(err, "worker_failures", None)
    return dict(failures) if isinstance(failures, dict) else {}


def wrapped_causes(err: BaseException) -> list[BaseException]:
    """What Ray Train wraps in `err`: a worker's own exception (`_base_exc` of its WorkerGroupError
    entries) or the controller's failure (`controller_failure`)."""
    found = []
    for name in ("_base_exc", "controller_failure"):
        inner = getattr(err, name, None)
        if isinstance(inner, BaseException):
            found.append(inner)
    return found


def ray_train_report_logger() -> Optional[logging.Logger]:
    """Ray Train logs every report at INFO on a logger named by its file path (outside `ray.train`, so
    RunConfig's LoggingConfig does not reach it); None on a Ray without that module."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:
        return None
    return logging.getLogger(context.__file__)


def set_aside_snapshot(experiment: Path) -> Optional[Path]:
    """Move Ray Train's snapshot of an earlier attempt out of the way (to `<name>.before-resume`), so a
    resumed run in the same folder starts from the checkpoint it was given; returns where it went, or
    None where there was none. (The checkpoints themselves: prefinetune/run/checkpoints.py.)"""
    snapshot = Path(experiment) / SNAPSHOT
    if not snapshot.is_file():
        return None
    aside = snapshot.with_name(SNAPSHOT + ".before-resume")
    snapshot.replace(aside)
    return aside


# Ray Tune logs its "interrupted ... Resume experiment with: Tuner.restore(...)" warning on the logger of
# the module that runs the experiment; prefinetune says instead to run the same command again.
TUNE_LOGGER = "ray.tune.tune"
# Tuner.restore reads the experiment's results back and warns "Failed to fetch metrics for N trial(s)",
# with a FileNotFoundError line for each, about every trial that had not reported yet: on a resume these
# are exactly the trials still to run, and prefinetune says how many finished instead.
ANALYSIS_LOGGER = "ray.tune.analysis.experiment_analysis"


@contextlib.contextmanager
def quiet_tune_restore_hint():
    """Ray Tune's warnings on TUNE_LOGGER and ANALYSIS_LOGGER turned off while a comparison runs (their
    errors stay)."""
    loggers = [logging.getLogger(name) for name in (TUNE_LOGGER, ANALYSIS_LOGGER)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def interrupted_trial(error: BaseException | None) -> bool:
    """True when a trial's error is Ctrl-C reaching its process (a terminal sends SIGINT to the whole
    process group, Ray's workers included): a KeyboardInterrupt, or Ray's wrapper of one."""
    for name in ("cause", "_base_exc", "__cause__"):
        inner = getattr(error, name, None)
        if isinstance(inner, BaseException) and inner is not error and interrupted_trial(inner):
            return True
    return isinstance(error, KeyboardInterrupt) or "KeyboardInterrupt" in str(error or "")


# At the end of every run Ray Train's controller stops its placement-group cleaner (a detached actor that
# removes the workers' placement group should the controller die) and waits 12 s; on a loaded machine the
# cleaner's own check of the controller (a State API call of up to 10 s) outlasts that, and the controller
# logs the GetTimeoutError with its traceback (~15 lines), though the cleaner then exits by itself once
# the controller is gone and nothing is left behind.
CLEANER_LOGGER = "ray.train.v2._internal.callbacks.placement_group_callback"
CLEANER_STOP_FAILED = "Failed to stop PlacementGroupCleaner gracefully."


class _SlowCleanerStop(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        from ray.exceptions import GetTimeoutError

        error = record.exc_info[1] if record.exc_info else None
        return not (record.getMessage() == CLEANER_STOP_FAILED and isinstance(error, GetTimeoutError))


def quiet_slow_cleaner_stop() -> None:
    """In the calling process (Ray Train's controller: prefinetune/run/controller.py), the cleaner's stop
    timing out is not logged; any other failure to stop it still is. Idempotent."""
    logger = logging.getLogger(CLEANER_LOGGER)
    if not any(isinstance(f, _SlowCleanerStop) for f in logger.filters):
        logger.addFilter(_SlowCleanerStop())
