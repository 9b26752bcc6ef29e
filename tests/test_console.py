"""What a user sees when the main job runs (the session's shared run, tests/conftest.py): a bounded,
readable console. (A run whose optional plot fails still ends with what it trained:
tests/test_ray_job.py.)
"""
from __future__ import annotations

import re
import subprocess
from collections import Counter

import pytest

ANSI = re.compile(r"\x1b\[[0-9;]*m")
PID = re.compile(r"\((\w+) pid=\d+(, ip=[^)]*)?\)")


def console_lines(out: subprocess.CompletedProcess) -> list[str]:
    """The lines a terminal would keep: colour codes off, and of a line redrawn with carriage
    returns (the progress bar) only its last state."""
    text = ANSI.sub("", out.stdout + out.stderr)
    return [line.split("\r")[-1].rstrip() for line in text.split("\n") if line.split("\r")[-1].strip()]


@pytest.mark.slow
def test_the_console_is_short_and_says_what_the_run_did(main_job):
    short, short_dir = main_job
    assert short.returncode == 0, short.stderr[-3000:]
    assert (short_dir / "task_mix.png").is_file()
    lines_short = console_lines(short)
    # the header, the window lines, the final table and where the export is
    text = "\n".join(lines_short)
    for expected in ("[prefinetune] recipe:", "[prefinetune] model:", "[prefinetune] tasks (",
                     "[prefinetune] workers: 2 x CPU", f"[prefinetune] run folder: {short_dir}",
                     "update 2/4: lr", "update 4/4: dev", "final dev metrics after 4 updates",
                     f"[prefinetune] export: {short_dir / 'export'}", "load_exported("):
        assert expected in text, expected
    assert sum("updates: 100%" in line for line in lines_short) == 1       # one bar, at its end
    # the suite's bystander Ray runs beside this one: Ray Train's processes still find their own Ray
    assert "multiple active Ray instances" not in text and "Failed to stop PlacementGroupCleaner" not in text
    # No line repeats (the worker's pid aside; a few of Ray's start-up lines come once per worker). That
    # twice the updates print no more lines: tests/run/test_worker_console.py, on the worker loop itself.
    repeats = Counter(PID.sub(r"(\1)", line) for line in lines_short).most_common(1)[0]
    assert repeats[1] <= 5, repeats
    assert len(lines_short) < 80, "\n".join(lines_short)
