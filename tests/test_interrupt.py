"""A run stopped by its user, for real: the main job's CLI (local Ray, 2 CPU workers, a tiny BERT) gets
Ctrl-C as a terminal sends it (SIGINT to its whole process group, Ray's processes included) once it has
saved a checkpoint. It exits 130 with one line naming the newest whole checkpoint and the command that
resumes from it, and leaves no Ray process and no lock behind; while it ran, its folder's lock named it.
SIGTERM's 143 and the exit codes' mapping: tests/test_cli.py.

    python -m pytest tests/test_interrupt.py -q
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REPO  # noqa: E402


def _command(bert: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "launch/local_cpu.py", "--model", str(bert), "--output-dir", str(out), "--name", "run",
            "--updates", "400", "--slots", "2", "data.synthetic_rows=60", "train.batch_size=2", "model.max_length=24",
            "checkpoint.every_updates=2", "train.log_every=50", "eval.every_updates=1000", "eval.max_rows=4", *extra]


def _wait_for_update(run_dir: Path, update: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the run ended before it was interrupted"
        try:
            if json.loads((run_dir / "progress.json").read_text())["update"] >= update:
                return
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"the run did not reach update {update} in {timeout} s")


@pytest.mark.slow
def test_ctrl_c_exits_130_naming_the_checkpoint_to_resume_from(tmp_path):
    from ray_heads import processes_naming

    from prefinetune.model.tiny import save_tiny_bert

    bert = save_tiny_bert(tmp_path / "bert")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run_dir = tmp_path / "run"
    # its output goes to files: a pipe nobody reads while the test waits would fill and stall the run
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.Popen(_command(bert, tmp_path), cwd=REPO, env=env, stdout=out, stderr=err, text=True,
                                start_new_session=True)
    try:
        _wait_for_update(run_dir, 3, proc)           # the update-2 checkpoint is saved
        holder = json.loads((run_dir / ".lock").read_text())
        assert holder["pid"] == proc.pid
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out, err = (tmp_path / "out.txt").read_text(), (tmp_path / "err.txt").read_text()
    assert proc.returncode == 130, (out[-2000:], err[-3000:])
    line = next((x for x in err.splitlines() if x.startswith("[prefinetune] interrupted: ")), None)
    assert line is not None, err[-3000:]
    found = re.search(r"The newest whole checkpoint, untouched, is (\S+) \(update (\d+)\): resume with "
                      r"--resume-from (\S+)", line)
    assert found and found[1] == found[3] and int(found[2]) >= 2 and int(found[2]) % 2 == 0, line
    assert Path(found[1]).parent == run_dir / "ray" / "run" and (Path(found[1]) / "latest").is_file()
    assert not (run_dir / ".lock").exists()
    ray_temp = re.search(r"starting a local Ray \(its logs: (\S+)\)", out)[1]
    deadline = time.time() + 60           # the local Ray goes down with its driver
    while processes_naming(ray_temp) and time.time() < deadline:
        time.sleep(0.5)
    assert processes_naming(ray_temp) == []
