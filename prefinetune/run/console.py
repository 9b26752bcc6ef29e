"""A readable console: the third-party chatter that a run would otherwise print once per worker,
per checkpoint or per saved folder, turned down at its source (log levels, progress-bar switches).
What prefinetune prints itself (header, progress bar, window lines, final table) is untouched, and so
are warnings and errors of every library.

    from prefinetune.run.console import quiet_libraries
    quiet_libraries(on_gpu=False)      # at the start of each worker, and in the driver before the export
"""
from __future__ import annotations

import logging
import os
import sys
import warnings

__all__ = ["quiet_libraries", "say"]


def say(line: str, stream=None) -> None:
    """One line on stdout (or `stream`), written directly: inside a Ray Train worker, `print` is
    patched to go both to the stream and through the logging system, so every line came out twice."""
    stream = stream or sys.stdout
    stream.write(line + "\n")
    stream.flush()


def quiet_libraries(on_gpu: bool) -> None:
    """Turn down informational output that repeats with workers, checkpoints or saved folders."""
    if not on_gpu:      # else DeepSpeed warns in every process that it fell back to the CPU
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    # DeepSpeed's ZeRO checkpointing calls a torch collective that torch deprecates, at every save.
    warnings.filterwarnings("ignore", message=r".*all_gather_into_tensor.* is deprecated", category=FutureWarning)
    _quiet_ray_train_reports()
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()   # "Loading weights", "Writing model shards", per folder


def _quiet_ray_train_reports() -> None:
    """Ray Train logs every report at INFO ("Reporting training result N: ...", all metrics), per
    worker; RunConfig's LoggingConfig (WARNING) does not reach that logger (prefinetune/run/ray_adapter.py)."""
    from prefinetune.run.ray_adapter import ray_train_report_logger

    logger = ray_train_report_logger()
    if logger is not None:        # another Ray layout: its lines stay
        logger.setLevel(logging.WARNING)
