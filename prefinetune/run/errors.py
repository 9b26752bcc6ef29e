"""Errors that stop a run on its workers with a message that says it all (what failed, where, what is
intact, what to do), and how the driver finds one inside Ray Train's failure to print it alone:

    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as err:
        reason = stop_reason(err)      # the RunStopped message of the first worker that has one, or None
        reason = reason or storage_error(err)   # Ray Train's own write to storage failed (a full disk)
"""
from __future__ import annotations

import errno
import os
from typing import Optional

from prefinetune.run.ray_adapter import worker_failures, wrapped_causes

__all__ = ["RunStopped", "CheckpointWriteError", "RunFailed", "RunInterrupted", "stop_reason", "storage_error"]


class RunStopped(Exception):
    """Base of the errors a worker stops the run with on purpose (non-finite loss, checkpoint not written)."""


class CheckpointWriteError(RunStopped, OSError):
    """A checkpoint could not be written (disk full, folder gone, quota); the earlier ones are untouched."""


class RunFailed(RuntimeError):
    """Raised by the driver with a worker's RunStopped message; the entry points print it and exit 1."""


class RunInterrupted(RuntimeError):
    """Raised by the driver when the user stopped the run (Ctrl-C, SIGTERM): the message names the
    newest whole checkpoint and the resume command; the entry points exit 130 (143 for SIGTERM)."""


def _causes(err: BaseException):
    """err, then what it wraps: Ray Train's wrapper of a worker's exception (prefinetune/run/ray_adapter.py),
    causes, contexts."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = next(iter(wrapped_causes(err)), None) or err.__cause__ or err.__context__


def stop_reason(err: BaseException) -> Optional[str]:
    """The message of the RunStopped error behind a failed Ray Train run (lowest rank first), else None."""
    failures = worker_failures(err)
    for _, failure in sorted(failures.items()):
        for cause in _causes(failure):
            if isinstance(cause, RunStopped):
                return str(cause)
    for cause in _causes(err):
        if isinstance(cause, RunStopped):
            return str(cause)
    return None


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO, errno.EACCES}   # writes that failed


def storage_error(err: BaseException) -> Optional[str]:
    """What failed when Ray Train itself could not write (its controller keeps its state beside the
    checkpoints, so a full disk can stop it before a worker's error arrives), else None."""
    for cause in _causes(err):
        if isinstance(cause, OSError) and cause.errno in _WRITE_ERRNOS:
            return f"Ray Train could not write to the run's storage ([Errno {cause.errno}] {os.strerror(cause.errno)})"
    return None
