"""Optional steps at the end of a run (plots, extra folders): a failure costs that step, never the run.

    from prefinetune.run.best_effort import best_effort
    best_effort("task-mix plot", plot_task_mix, metrics_path, png_path)

The step's result is returned, or None after one warning line that names the step and the error.
What a run must not lose (final metrics, the backbone export) is written before any such step.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

from prefinetune.run.console import say

__all__ = ["best_effort", "failure_reason", "warn"]


def warn(message: str) -> None:
    """One warning line on stderr."""
    say(f"[prefinetune] WARNING: {message}", sys.stderr)


def failure_reason(err: BaseException) -> str:
    """'ErrorType: first line of its message', for one-line warnings and records."""
    message = str(err).strip()
    return f"{type(err).__name__}: {message.splitlines()[0] if message else 'no message'}"


def best_effort(what: str, step: Callable[..., Any], *args, **kwargs) -> Any:
    """step(*args, **kwargs), or None with a warning line if it raises (any Exception)."""
    try:
        return step(*args, **kwargs)
    except Exception as err:   # noqa: BLE001 - optional by design; the warning names the error
        warn(f"{what} failed and was skipped ({failure_reason(err)}); the run goes on")
        return None
