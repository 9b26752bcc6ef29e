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
from pathlib import Path

import pytest

from prefinetune.finetune.hooks import FinetuneHooks
from prefinetune.recipe.config import RecipeError, load_recipe
from prefinetune.run.driver import run
from prefinetune.run.run_folder import LOCK_FILE, RESUMABLE, RunLock, changed_keys


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_runs_lock_is_taken(tmp_path):
    with RunLock(tmp_path):
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(RecipeError, match=rf"run folder {re.escape(str(tmp_path))} is in use by another run "
                                              rf"\(pid {os.getpid()} on host {re.escape(socket.gethostname())}"):
            RunLock(tmp_path).__enter__()
    assert not (tmp_path / LOCK_FILE).exists()
    # another process holds it: refused, naming that process
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / LOCK_FILE)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RecipeError, match=rf"in use by another run \(pid {holder.pid} on host"):
            RunLock(tmp_path).__enter__()
    finally:
        holder.kill()
        holder.wait()
    # its process is gone, so is its lock (the kernel's): the file it left is taken over
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == holder.pid
    with RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()


HOLD = """import fcntl, json, os, sys, time
f = open(sys.argv[1], "a+")
fcntl.flock(f, fcntl.LOCK_EX)
f.write(json.dumps({"host": "h", "pid": os.getpid(), "since": "now"})); f.flush()
print("locked", flush=True)
time.sleep(60)
"""


def test_a_resume_may_change_where_and_how_long_but_not_what_is_trained():
    saved = {"run": {"name": "a", "output_dir": "/x", "seed": 0}, "train": {"updates": 8, "batch_size": 4},
             "optim": {"lr": 1e-4}, "scaling": {"num_workers": 2}, "tasks": [{"name": "rte"}]}
    moved = {**saved, "run": {"name": "b", "output_dir": "/y", "seed": 0}, "train": {"updates": 16, "batch_size": 4},
             "scaling": {"num_workers": 4}}
    assert changed_keys(saved, moved) == []
    other = {**moved, "optim": {"lr": 5e-5}, "train": {"updates": 16, "batch_size": 8}, "tasks": [{"name": "cola"}]}
    assert changed_keys(saved, other) == ["optim.lr", "tasks", "train.batch_size"]
    # a fine-tuning run resumed for more epochs: its warm-up follows from its fraction; skips may change
    ft = {**saved, "finetune": {"epochs": 3, "warmup_fraction": 0.06}, "optim": {"lr": 1e-4, "warmup_updates": 5}}
    longer = {**ft, "finetune": {"epochs": 5, "warmup_fraction": 0.06}, "optim": {"lr": 1e-4, "warmup_updates": 8},
              "train": {"updates": 40, "batch_size": 4, "nonfinite_skips": 2}}
    assert changed_keys(ft, longer) == ["finetune.epochs", "optim.warmup_updates"]      # a plain run's rules
    hooks = FinetuneHooks()                                  # fine-tuning's: epochs, and the warm-up they set
    assert changed_keys(ft, longer, RESUMABLE + hooks.resumable, hooks.derived) == []
    moved_warmup = {**saved, "optim": {"lr": 1e-4, "warmup_updates": 8}}
    assert changed_keys(saved, moved_warmup, RESUMABLE + hooks.resumable, hooks.derived) == ["optim.warmup_updates"]


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


def test_a_run_folder_is_resumed_only_from_its_own_checkpoints(tmp_path):
    """A folder that holds run 'r' (a checkpoint of it): resuming another run's checkpoint into it is
    refused, before Ray; resuming its own passes these checks."""
    from prefinetune.run.run_folder import check_start

    def checkpoint(folder: Path) -> Path:
        folder.mkdir(parents=True)
        (folder / "latest").write_text("update-0000002")
        return folder

    recipe = load_recipe("recipes/local_cpu.yaml", [f"run.output_dir={tmp_path}", "run.name=r"])
    own = checkpoint(tmp_path / "r" / "ray" / "r" / "checkpoint_1")
    other = checkpoint(tmp_path / "other" / "ray" / "other" / "checkpoint_1")
    with pytest.raises(RecipeError, match=rf"already holds run 'r', and --resume-from {re.escape(str(other))} is not "
                                          "one of its checkpoints"):
        check_start(recipe, str(other))
    check_start(recipe, str(own))
    # not resuming: refused, saying how far it got (its only checkpoint has no file lists: not whole)
    with pytest.raises(RecipeError, match=r"already holds run 'r' \(it reached update 2\): no whole checkpoint to "
                                          r"continue from, or another --name / --output-dir for a new run"):
        check_start(recipe, None)
    (tmp_path / "r" / "eval_final.json").write_text("{}")      # the run finished
    with pytest.raises(RecipeError, match=r"already holds run 'r', finished at update 2 \(its export: "):
        check_start(recipe, None)


def test_how_to_train_on_is_said_by_the_layer_that_set_the_length():
    from prefinetune.run.hooks import RunHooks

    finetuning = load_recipe("recipes/finetune/rte.yaml")
    assert finetuning.finetune.epochs is not None
    assert FinetuneHooks().longer_hint(finetuning, 12) == "a larger finetune.epochs"
    assert RunHooks().longer_hint(load_recipe("recipes/local_cpu.yaml"), 12) == "--updates more than 12"
    assert FinetuneHooks().longer_hint(load_recipe("recipes/finetune/rte.yaml", ["finetune.epochs=null",
                                                                                "train.updates=30"]), 12) \
        == "--updates more than 12"
