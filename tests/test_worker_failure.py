"""Faults against an uninterrupted 2-worker ZeRO-2 run (Ray Train, MiniLM, synthetic data, MT-Uncertainty
sampling: the schedule depends on the weights, and the sampler's record travels in the checkpoint):
- a worker killed mid-run, its newest checkpoint torn: once Ray Train has registered the update-4
  checkpoint, a file of it is cut short and one worker gets SIGKILL after update 5; Ray Train restarts
  the group (`scaling.max_failures`) from that checkpoint, which gives way to the previous whole one
  (update 2) with a warning, and the run ends with the uninterrupted run's weights, the same metrics
  after the restart point, and each update once in metrics.jsonl;
- one run, one folder (prefinetune/run/run_folder.py): a finished run's folder is not started again, nor
  resumed from its final checkpoint or with another recipe; --resume-from an earlier checkpoint of it,
  torn, falls back to the whole one before it, whatever Ray Train's own record of the folder says;
- (resuming on another number of workers: tests/distributed/test_checkpoint_resume.py, 2 -> 1 and
  1 -> 2 through the same `load_checkpoint` the worker loop calls;)
(a NaN loss on a worker: its message on every rank, tests/distributed/test_nonfinite.py; through Ray's
wrapper and serializer to the driver, tests/test_run_errors.py; the driver's one line with the checkpoint
to resume from after a worker's stop, through a real run: tests/test_disk_full.py.)

    python -m pytest tests/test_worker_failure.py -q
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REPO  # noqa: E402

from prefinetune.recipe.config import load_recipe

UPDATES, EVERY, KILL_AT = 8, 2, 5


@pytest.fixture(scope="module")
def local_ray():
    import ray

    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def straight(tmp_path_factory, local_ray):
    import ray

    from prefinetune.run.driver import run

    out = tmp_path_factory.mktemp("faults")
    result = run(_recipe(out, "straight", failures=0))
    # the local Ray has a temp folder of its own, so another local Ray on the machine cannot break it
    assert ray._private.worker._global_node.get_temp_dir_path().startswith("/tmp/prefinetune-ray-")
    return result, out


def _same_weights(a_export: str, b_export: str) -> None:
    for weights in ("model.safetensors", "heads.safetensors"):
        a, b = load_file(Path(a_export) / weights), load_file(Path(b_export) / weights)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=1e-5, msg=lambda m: f"{weights} {key}: {m}")


def _recipe(out: Path, name: str, failures: int, workers: int = 2, *extra: str):
    return load_recipe(REPO / "recipes" / "local_cpu.yaml", [
        f"run.output_dir={out}", f"run.name={name}", f"train.updates={UPDATES}", "train.slots_per_update=2",
        "train.batch_size=4", "train.log_every=1", "data.synthetic_rows=100", "model.max_length=24",
        f"checkpoint.every_updates={EVERY}", "checkpoint.keep=4", f"eval.every_updates={EVERY}", "eval.max_rows=8",
        f"scaling.max_failures={failures}", f"scaling.num_workers={workers}",
        # the model picks each slot's task (its record travels in the checkpoint): the hardest schedule to resume
        "sampling.policy=mt_uncertainty", "sampling.candidate_tasks=2", *extra])


def _registered_update(experiment: Path) -> int | None:
    """The update of the newest checkpoint Ray Train has registered (its snapshot beside the checkpoints)."""
    try:
        latest = json.loads((experiment / "checkpoint_manager_snapshot.json").read_text())["latest_checkpoint_result"]
        return latest["metrics"]["update"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        return None


def _tear_and_kill(run_dir: Path, tear: int, kill_after: int, killed: dict) -> None:
    """Once Ray Train has registered checkpoint `tear` and the run has finished `kill_after` (progress.json),
    cut a file of that checkpoint short, then SIGKILL rank 1's process."""
    from prefinetune.distributed.checkpoint_files import checkpoint_update

    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            done = json.loads((run_dir / "progress.json").read_text())["update"]
            pid = json.loads((run_dir / "workers" / "rank-1.json").read_text())["pid"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            time.sleep(0.05)
            continue
        experiment = run_dir / "ray" / run_dir.name
        if done >= kill_after and _registered_update(experiment) == tear:
            folder = next(p for p in experiment.glob("checkpoint_*") if checkpoint_update(p) == tear)
            victim = next(folder.glob("*/zero_pp_rank_1_*optim_states.pt"))
            victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
            os.kill(pid, signal.SIGKILL)
            killed.update(pid=pid, after=done, torn=folder, victim=victim)
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_worker_restarts_past_a_torn_checkpoint_and_matches_an_uninterrupted_run(straight, tmp_path, capfd):
    from prefinetune.run.driver import run

    straight, straight_out = straight
    (tmp_path / "straight").symlink_to(straight_out / "straight")
    killed: dict = {}
    killer = threading.Thread(target=_tear_and_kill, args=(tmp_path / "killed", KILL_AT - 1, KILL_AT, killed),
                              daemon=True)
    killer.start()
    restarted = run(_recipe(tmp_path, "killed", failures=1))
    killer.join(timeout=5)
    assert killed and killed["after"] < UPDATES, killed
    new_pid = json.loads((tmp_path / "killed" / "workers" / "rank-1.json").read_text())["pid"]
    assert new_pid != killed["pid"], "rank 1 was not restarted"
    printed = capfd.readouterr()
    said = printed.out + printed.err
    resumed_from = int(re.search(r"resumed after update (\d+)", said)[1])
    assert resumed_from == KILL_AT - 1 - EVERY, said[-3000:]          # the checkpoint before the torn one
    assert f"checkpoint {killed['torn']} is torn ({killed['victim']} (rank 1) has" in said
    assert "resuming from the previous whole one" in said and f"(update {resumed_from})" in said

    def records(name: str) -> list[dict]:
        return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    for kind in ("lr", f"dev/{'syn_nli'}/accuracy"):       # training windows and evals: each update once
        updates = [r["update"] for r in records("killed") if kind in r]
        assert updates == [r["update"] for r in records("straight") if kind in r], kind
    for a, b in zip(records("straight"), records("killed")):
        if a["update"] > resumed_from and "lr" in a:
            losses = {k: v for k, v in a.items() if k.startswith(("loss/", "seen/", "mix/", "uncertainty/"))}
            assert {k: b[k] for k in losses} == pytest.approx(losses, rel=1e-5), a["update"]
    assert any(k.startswith("uncertainty/") for r in records("killed") for k in r)
    assert _sampler_record(tmp_path / "killed", UPDATES) == _sampler_record(tmp_path / "straight", UPDATES)
    assert restarted["metrics"] == pytest.approx(straight["metrics"], rel=1e-5)
    _same_weights(straight["export"], restarted["export"])


def _sampler_record(run_dir: Path, update: int) -> dict:
    """MT-Uncertainty's record (candidates offered, slots won per task) in the checkpoint of `update`."""
    from prefinetune.distributed.checkpoint_files import checkpoint_update

    folder = next(p for p in (run_dir / "ray").glob("*/checkpoint_*") if checkpoint_update(p) == update)
    state = torch.load(folder / f"update-{update:07d}" / "mp_rank_00_model_states.pt", weights_only=False,
                       map_location="cpu", mmap=True)
    assert sum(state["uncertainty"]["won"]) == UPDATES * 2
    return state["uncertainty"]


@pytest.mark.slow
def test_a_run_folder_is_one_run_and_resume_from_means_that_checkpoint(straight, tmp_path, capfd):
    """A copy of the finished straight run's folder (Ray Train's snapshot in it names update 8):
    starting it again, resuming from its final checkpoint or with another learning rate are refused
    before Ray starts; --resume-from its update-6 checkpoint, torn, resumes from the whole one before it
    (update 4), never from Ray's newest, and ends with the straight run's weights."""
    import shutil

    from prefinetune.distributed.checkpoint_files import checkpoint_update
    from prefinetune.recipe.config import RecipeError
    from prefinetune.run.driver import run

    straight, straight_out = straight
    shutil.copytree(straight_out / "straight", tmp_path / "straight", ignore=shutil.ignore_patterns("export"))
    experiment = tmp_path / "straight" / "ray" / "straight"
    by_update = {checkpoint_update(p): p for p in experiment.glob("checkpoint_*") if p.is_dir()}
    assert sorted(by_update) == [2, 4, 6, 8]
    recipe = _recipe(tmp_path, "straight", failures=0)
    refusals = [
        ({}, f"already holds run 'straight', finished at update 8 (its export: {tmp_path / 'straight' / 'export'}): "
             f"another --name / --output-dir for a new run, or --resume-from {by_update[8]} with --updates more "
             "than 8 to train on"),
        ({"resume_from": str(by_update[8])}, "holds update 8 and train.updates is 8: nothing is left to train"),
        ({"resume_from": str(by_update[6]), "lr": True}, "whose recipe differs in ['optim.lr']"),
        ({"resume_from": str(tmp_path / "straight")}, "not a checkpoint (no DeepSpeed 'latest' file in it)"),
    ]
    for how, message in refusals:
        given = _recipe(tmp_path, "straight", 0, 2, "optim.lr=5e-5") if how.get("lr") else recipe
        with pytest.raises(RecipeError, match=re.escape(message)):
            run(given, resume_from=how.get("resume_from"))
    assert not (tmp_path / "straight" / "export").exists()
    torn = by_update[6]
    victim = next(torn.glob("*/zero_pp_rank_1_*optim_states.pt"))
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    resumed = run(recipe, resume_from=str(torn))
    said = "".join(capfd.readouterr())
    assert f"checkpoint {torn} is torn ({victim} (rank 1) has" in said
    assert f"resuming from the previous whole one, {by_update[4]} (update 4)" in said
    assert "resumed after update 4" in said and "Ray Train's record of the earlier attempt moved to" in said
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in records if "lr" in r] == list(range(1, UPDATES + 1))      # each update once
    _same_weights(straight["export"], resumed["export"])
