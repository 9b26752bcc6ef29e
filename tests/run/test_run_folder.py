"""One run, one folder (prefinetune/run/run_folder.py), in this process: the lock a run holds on its folder,
which recipe keys a resume may change, and a bad --resume-from refused before anything is written.
(On a real finished run through Ray: tests/test_worker_failure.py.)

    python -m pytest tests/run/test_run_folder.py -q
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from prefinetune.recipe.config import RecipeError, load_recipe
from prefinetune.run.driver import run
from prefinetune.run.run_folder import LOCK_FILE, RunLock, changed_keys


def test_a_second_writer_is_refused_naming_the_holder_and_a_stale_lock_is_taken_over(tmp_path):
    with RunLock(tmp_path):
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(RecipeError, match=rf"run folder {re.escape(str(tmp_path))} is in use by another run "
                                              rf"\(pid {os.getpid()} on host {re.escape(socket.gethostname())}"):
            RunLock(tmp_path).__enter__()
    assert not (tmp_path / LOCK_FILE).exists()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": int(gone.stdout)}))
    with RunLock(tmp_path):               # its process is gone: taken over
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": "another-host", "pid": 1}))
    with pytest.raises(RecipeError, match="pid 1 on host another-host.*if that run is gone, delete"):
        RunLock(tmp_path).__enter__()


def test_a_resume_may_change_where_and_how_long_but_not_what_is_trained():
    saved = {"run": {"name": "a", "output_dir": "/x", "seed": 0}, "train": {"updates": 8, "batch_size": 4},
             "optim": {"lr": 1e-4}, "scaling": {"num_workers": 2}, "tasks": [{"name": "rte"}]}
    moved = {**saved, "run": {"name": "b", "output_dir": "/y", "seed": 0}, "train": {"updates": 16, "batch_size": 4},
             "scaling": {"num_workers": 4}}
    assert changed_keys(saved, moved) == []
    other = {**moved, "optim": {"lr": 5e-5}, "train": {"updates": 16, "batch_size": 8}, "tasks": [{"name": "cola"}]}
    assert changed_keys(saved, other) == ["optim.lr", "tasks", "train.batch_size"]


def test_a_locked_folder_or_a_missing_resume_folder_is_refused_before_ray(tmp_path):
    import ray

    recipe = load_recipe("recipes/local_cpu.yaml", [f"run.output_dir={tmp_path}", "run.name=r",
                                                    "data.synthetic_rows=50"])
    with pytest.raises(RecipeError, match=f"--resume-from {re.escape(str(tmp_path / 'nowhere'))}: no such folder"):
        run(recipe, resume_from=str(tmp_path / "nowhere"))
    assert not (tmp_path / "r").exists()
    with RunLock(tmp_path / "r"):
        with pytest.raises(RecipeError, match="is in use by another run"):
            run(recipe)
    assert not ray.is_initialized()
