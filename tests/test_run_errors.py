"""How the driver finds why a Ray Train run stopped (prefinetune/run/errors.py), on Ray Train's own
error classes: a worker's RunStopped message through Ray's wrapper, the lowest rank first; a failed
write of Ray Train's controller; and nothing for other failures, which keep Ray's traceback.

    python -m pytest tests/test_run_errors.py -q
"""
from __future__ import annotations

import errno

from ray.train.v2._internal.exceptions import UserExceptionWithTraceback
from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

from prefinetune.run.errors import CheckpointWriteError, stop_reason, storage_error
from prefinetune.run.ray_adapter import worker_failures, wrapped_causes
from prefinetune.run.step import NonFiniteLossError


def test_a_workers_own_stop_is_found_through_rays_wrapper_lowest_rank_first():
    failures = {1: UserExceptionWithTraceback(CheckpointWriteError("rank 1: disk full"), "traceback 1"),
                0: UserExceptionWithTraceback(NonFiniteLossError("update 3, slot 0: nan"), "traceback 0")}
    assert stop_reason(WorkerGroupError("two workers failed", failures)) == "update 3, slot 0: nan"
    other = WorkerGroupError("one failed", {0: UserExceptionWithTraceback(ValueError("a bug"), "tb")})
    assert stop_reason(other) is None and storage_error(other) is None


def test_only_a_failed_write_of_the_controller_is_a_storage_error():
    full = ControllerError(OSError(errno.ENOSPC, "Error writing bytes to file"))
    assert storage_error(full) == "Ray Train could not write to the run's storage ([Errno 28] No space left on device)"
    assert stop_reason(full) is None
    refused = ControllerError(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    assert storage_error(refused) is None


def test_a_nan_stop_crosses_rays_serializer_whole():
    """What a worker's NaN stop becomes on its way to the driver: the error of step.py, wrapped as Ray
    Train wraps a worker's exception and sent through Ray's own serializer (cloudpickle), still gives the
    driver the worker's message, with its class. (The message itself, on every rank: tests/distributed/
    test_nonfinite.py; the driver's line with the checkpoint to resume from, through a real Ray Train
    run: tests/test_disk_full.py.)"""
    import ray.cloudpickle as pickle

    said = "update 2, slot 1: task 'syn_nli' gave a non-finite loss (nan) on its training rows [3, 4]"
    failures = {1: UserExceptionWithTraceback(NonFiniteLossError(said), "Traceback ...")}
    arrived = pickle.loads(pickle.dumps(WorkerGroupError("worker 1 failed", failures)))
    assert stop_reason(arrived) == said
    assert [type(e) for e in wrapped_causes(worker_failures(arrived)[1])] == [NonFiniteLossError]
