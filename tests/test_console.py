"""What a user sees when the main job runs: a bounded, readable console, and a run that always ends
with what it trained, even when an optional step at its end fails.

The main job on real data (the session's shared run, tests/conftest.py) and one more run of it with
the same number of log windows, evals and checkpoints, twice the updates, and matplotlib broken on
purpose (a package of that name that fails to import comes first on PYTHONPATH), so the task-mix plot
fails. The second run reads the first one's shards.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import MAIN_JOB_UPDATES, run_main_job  # noqa: E402

ANSI = re.compile(r"\x1b\[[0-9;]*m")
PID = re.compile(r"\((\w+) pid=\d+(, ip=[^)]*)?\)")


def console_lines(out: subprocess.CompletedProcess) -> list[str]:
    """The lines a terminal would keep: colour codes off, and of a line redrawn with carriage
    returns (the progress bar) only its last state."""
    text = ANSI.sub("", out.stdout + out.stderr)
    return [line.split("\r")[-1].rstrip() for line in text.split("\n") if line.split("\r")[-1].strip()]


@pytest.fixture(scope="module")
def runs(main_job, data_root, tmp_path_factory):
    short = main_job
    tmp = tmp_path_factory.mktemp("console")
    broken = tmp / "broken_site" / "matplotlib"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise ImportError("matplotlib is broken on purpose by the test")\n')
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(broken.parent), env.get("PYTHONPATH", "")])
    updates = 2 * MAIN_JOB_UPDATES      # the main job's 2 log windows and checkpoints, and its one final eval
    every = updates // 2
    long = run_main_job(tmp, "long", "--real-data", str(data_root), "--updates", str(updates), "--slots", "2",
                        "train.batch_size=4", f"train.log_every={every}", f"checkpoint.every_updates={every}",
                        "eval.max_rows=24", f"data.shards_dir={short[1] / 'shards'}", env=env)
    return short, (long, tmp / "long")


@pytest.mark.slow
def test_a_failing_plot_costs_the_plot_not_the_run(runs):
    (short, short_dir), (long, long_dir) = runs
    assert short.returncode == 0, short.stderr[-3000:]
    assert (short_dir / "task_mix.png").is_file()
    assert long.returncode == 0, long.stderr[-3000:]
    for name in ("eval_final.json", "eval_final.txt", "export/model.safetensors", "export/tasks.json"):
        assert (long_dir / name).is_file(), name
    assert not (long_dir / "task_mix.png").exists()
    warnings = [line for line in console_lines(long) if "WARNING" in line and "task-mix plot" in line]
    assert len(warnings) == 1
    assert "ImportError: matplotlib is broken on purpose by the test" in warnings[0]
    assert json.loads((long_dir / "eval_final.json").read_text())["update"] == 2 * MAIN_JOB_UPDATES


@pytest.mark.slow
def test_the_console_is_short_and_does_not_grow_with_the_updates(runs):
    (short, short_dir), (long, _) = runs
    lines_short, lines_long = console_lines(short), console_lines(long)
    # the header, the window lines, the final table and where the export is
    text = "\n".join(lines_short)
    for expected in ("[prefinetune] recipe:", "[prefinetune] model:", "[prefinetune] tasks (",
                     "[prefinetune] workers: 2 x CPU", f"[prefinetune] run folder: {short_dir}",
                     "update 2/4: lr", "update 4/4: dev", "final dev metrics after 4 updates",
                     f"[prefinetune] export: {short_dir / 'export'}", "load_exported("):
        assert expected in text, expected
    assert sum("updates: 100%" in line for line in lines_short) == 1       # one bar, at its end
    # No line repeats (the worker's pid aside), and 2x the updates add no lines: the long run has
    # only its one warning more. A few lines of Ray's start-up differ from run to run.
    repeats = Counter(PID.sub(r"(\1)", line) for line in lines_long).most_common(1)[0]
    assert repeats[1] <= 5, repeats
    assert len(lines_long) - 1 <= len(lines_short) + 3, "\n".join(lines_long)
    assert len(lines_short) < 80, "\n".join(lines_short)
