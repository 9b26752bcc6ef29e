"""Faults against an uninterrupted 2-worker ZeRO-2 run (Ray Train, MiniLM, synthetic data, MT-Uncertainty
sampling: the schedule depends on the weights, and the sampler's record travels in the checkpoint):
- a worker killed mid-run: SIGKILL to one worker between two checkpoints; Ray Train restarts the group
  from the last checkpoint (`scaling.max_failures`) and the run ends with the uninterrupted run's
  weights, the same metrics after the restart point, and each update once in metrics.jsonl;
- a torn checkpoint: a file of the newest checkpoint cut short; resuming from it uses the previous
  whole one, with a warning, and ends with the same weights again;
- (resuming on another number of workers: tests/distributed/test_checkpoint_resume.py, 2 -> 1 and
  1 -> 2 through the same `load_checkpoint` the worker loop calls;)
- a NaN loss on a worker: the driver raises the worker's own message (task, update, slot, rows) with
  the checkpoint to resume from, not Ray's traceback.

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


def _kill_rank_1_after(run_dir: Path, update: int, killed: dict) -> None:
    """Wait until the run has finished `update` (progress.json), then SIGKILL rank 1's process."""
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            done = json.loads((run_dir / "progress.json").read_text())["update"]
            pid = json.loads((run_dir / "workers" / "rank-1.json").read_text())["pid"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            time.sleep(0.05)
            continue
        if done >= update:
            os.kill(pid, signal.SIGKILL)
            killed.update(pid=pid, after=done)
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_worker_restarts_from_checkpoint_and_matches_an_uninterrupted_run(straight, tmp_path, capfd):
    from prefinetune.run.driver import run

    straight, straight_out = straight
    (tmp_path / "straight").symlink_to(straight_out / "straight")
    killed: dict = {}
    killer = threading.Thread(target=_kill_rank_1_after, args=(tmp_path / "killed", KILL_AT, killed), daemon=True)
    killer.start()
    restarted = run(_recipe(tmp_path, "killed", failures=1))
    killer.join(timeout=5)
    assert killed and killed["after"] < UPDATES, killed
    new_pid = json.loads((tmp_path / "killed" / "workers" / "rank-1.json").read_text())["pid"]
    assert new_pid != killed["pid"], "rank 1 was not restarted"
    printed = capfd.readouterr()
    resumed_from = int(re.search(r"resumed after update (\d+)", printed.out + printed.err)[1])
    assert 2 <= resumed_from <= killed["after"] and resumed_from % EVERY == 0

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
def test_a_torn_checkpoint_gives_way_to_the_previous_whole_one(straight, tmp_path, capfd):
    import shutil

    from prefinetune.distributed.checkpoint_files import checkpoint_update
    from prefinetune.run.driver import run

    straight, straight_out = straight
    saved = tmp_path / "checkpoints"
    shutil.copytree(straight_out / "straight" / "ray" / "straight", saved)
    by_update = {checkpoint_update(p): p for p in saved.glob("checkpoint_*") if p.is_dir()}
    assert sorted(by_update) == [2, 4, 6, 8]
    torn = by_update[8]          # the newest: the previous whole one leaves the fewest updates to run again
    victim = next(torn.glob("*/zero_pp_rank_1_*optim_states.pt"))
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    resumed = run(_recipe(tmp_path, "resumed", failures=0), resume_from=str(torn))
    printed = capfd.readouterr()
    assert f"checkpoint {torn} is torn ({victim} (rank 1) has" in printed.out + printed.err
    assert f"resuming from the previous whole one, {by_update[6]} (update 6)" in printed.out + printed.err
    records = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in records if "lr" in r] == [7, 8]
    _same_weights(straight["export"], resumed["export"])


@pytest.mark.slow
def test_a_nan_on_a_worker_stops_the_run_with_the_workers_message_and_where_to_resume(straight, tmp_path):
    from prefinetune.run.driver import run
    from prefinetune.run.errors import RunFailed

    with pytest.raises(RunFailed) as err:     # lr 1e30: update 2's losses are NaN, after the update-1 checkpoint
        run(_recipe(tmp_path, "nan", 0, 2, "optim.lr=1e30", "optim.warmup_updates=0", "train.updates=4",
                    "checkpoint.every_updates=1", "sampling.policy=natural", "sampling.candidate_tasks=null"))
    said = str(err.value)
    assert re.match(r"update 2, slot \d: task 'syn_\w+' gave a non-finite loss \(nan\) on its training rows \[",
                    said), said
    assert re.search(r"The newest whole checkpoint, untouched, is \S+checkpoint_\S+ \(update 1\): resume with "
                     r"--resume-from", said), said
