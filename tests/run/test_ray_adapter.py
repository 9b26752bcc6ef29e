"""Each function of prefinetune/run/ray_adapter.py on the installed Ray, with Ray's own classes and files:
when a Ray release moves what the adapter reads, these fail (and setup.cfg's bound on Ray stays).

    python -m pytest tests/run/test_ray_adapter.py -q
"""
from __future__ import annotations

import json
import logging
import time

from ray.train.v2._internal.exceptions import UserExceptionWithTraceback
from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

from prefinetune.run.errors import CheckpointWriteError, stop_reason
from prefinetune.run.ray_adapter import (
    SNAPSHOT,
    ray_train_report_logger,
    set_aside_snapshot,
    worker_failures,
    wrapped_causes,
)


def test_a_worker_group_failure_gives_each_ranks_exception_and_what_it_wraps():
    own = CheckpointWriteError("update 4: rank 1 could not write its checkpoint")
    wrapped = UserExceptionWithTraceback(own, "Traceback ...")
    err = WorkerGroupError("rank 1 failed", {1: wrapped, 0: ValueError("other")})
    assert set(worker_failures(err)) == {0, 1}
    assert wrapped_causes(worker_failures(err)[1]) == [own]
    assert stop_reason(err) == str(own)
    assert worker_failures(ValueError("not Ray's")) == {} and wrapped_causes(ValueError("x")) == []


def test_a_controller_failure_gives_the_controllers_exception():
    inner = OSError(28, "No space left on device")
    assert wrapped_causes(ControllerError(inner)) == [inner]


def test_the_report_logger_is_the_one_ray_train_logs_reports_on():
    from ray.train.v2._internal.execution import context

    logger = ray_train_report_logger()
    assert isinstance(logger, logging.Logger) and logger.name == context.__file__
    assert "Reporting training result" in open(context.__file__).read()     # what it is turned down for


def test_the_snapshot_is_where_ray_train_keeps_it_and_is_set_aside_whole(tmp_path):
    from ray.train.v2._internal.execution.storage import StorageContext

    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="run")
    assert storage.checkpoint_manager_snapshot_path.endswith(f"run/{SNAPSHOT}")
    experiment = tmp_path / "run"
    experiment.mkdir(exist_ok=True)
    (experiment / SNAPSHOT).write_text(json.dumps({"checkpoint_results": []}))
    aside = set_aside_snapshot(experiment)
    assert not (experiment / SNAPSHOT).exists() and json.loads(aside.read_text()) == {"checkpoint_results": []}
    assert set_aside_snapshot(experiment) is None


def test_tunes_restore_hint_and_missing_metrics_warning_are_logged_where_they_are_quieted():
    import ray.tune.analysis.experiment_analysis as analysis_module
    import ray.tune.tune as tune_module

    from prefinetune.run.ray_adapter import ANALYSIS_LOGGER, TUNE_LOGGER, quiet_tune_restore_hint

    assert tune_module.__name__ == TUNE_LOGGER and "Resume experiment with" in open(tune_module.__file__).read()
    assert analysis_module.__name__ == ANALYSIS_LOGGER
    assert "Failed to fetch metrics" in open(analysis_module.__file__).read()
    loggers = [logging.getLogger(TUNE_LOGGER), logging.getLogger(ANALYSIS_LOGGER)]
    before = [logger.level for logger in loggers]
    with quiet_tune_restore_hint():
        for logger in loggers:
            assert not logger.isEnabledFor(logging.WARNING) and logger.isEnabledFor(logging.ERROR)
    assert [logger.level for logger in loggers] == before


def test_a_trial_stopped_by_ctrl_c_is_told_from_a_failed_one():
    from ray.exceptions import RayTaskError

    from prefinetune.run.ray_adapter import interrupted_trial

    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as err:
        wrapped = RayTaskError("train_fn", "Traceback ... KeyboardInterrupt", err)
    assert interrupted_trial(wrapped) and interrupted_trial(KeyboardInterrupt())
    assert not interrupted_trial(RayTaskError("train_fn", "Traceback ... ValueError: bad", ValueError("bad")))
    assert not interrupted_trial(None)


def test_a_slow_stop_of_ray_trains_placement_group_cleaner_is_not_logged_and_other_failures_are():
    """Ray Train's own callback stops a real (slow, or failing) cleaner actor with its own code: the
    timeout is logged where and as the adapter expects, and not once the filter is on; another failure
    still is."""
    import shutil
    import tempfile

    import ray
    from ray.exceptions import GetTimeoutError
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    from prefinetune.run.ray_adapter import CLEANER_LOGGER, CLEANER_STOP_FAILED, quiet_slow_cleaner_stop

    @ray.remote(num_cpus=0)
    class Cleaner:
        def __init__(self, fail: bool):
            self.fail = fail

        def stop(self):
            if self.fail:
                raise ValueError("the cleaner broke")
            time.sleep(3)

    class Kept(logging.Handler):          # on the logger itself: Ray's loggers do not propagate to the root
        def __init__(self):
            super().__init__()
            self.records = []

        def emit(self, record):
            self.records.append(record)

    def stop(fail: bool = False) -> list[logging.LogRecord]:
        callback = PlacementGroupCleanerCallback(stop_timeout=60 if fail else 0.3)
        callback._cleaner = Cleaner.remote(fail)
        kept = Kept()
        logger.addHandler(kept)
        try:
            callback._stop_cleaner()
        finally:
            logger.removeHandler(kept)
        return kept.records

    assert PlacementGroupCleanerCallback.__module__ == CLEANER_LOGGER
    temp = tempfile.mkdtemp(prefix="pft-ray-", dir="/tmp")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    logger = logging.getLogger(CLEANER_LOGGER)
    filters = list(logger.filters)
    try:
        [record] = stop()
        assert record.getMessage() == CLEANER_STOP_FAILED and isinstance(record.exc_info[1], GetTimeoutError)
        quiet_slow_cleaner_stop()
        quiet_slow_cleaner_stop()
        assert len(logger.filters) == len(filters) + 1
        assert stop() == []
        [record] = stop(fail=True)
        assert record.getMessage() == CLEANER_STOP_FAILED and "the cleaner broke" in str(record.exc_info[1])
    finally:
        logger.filters[:] = filters
        if started:
            ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
