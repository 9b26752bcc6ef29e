"""Faults against an uninterrupted 2-worker ZeRO-2 run (Ray Train, a tiny BERT, synthetic data, MT-Uncertainty
sampling: the schedule depends on the weights, and the sampler's record travels in the checkpoint), all
on a copy of that run's finished folder:
- one run, one folder (prefinetune/run/run_folder.py): a finished run's folder is not started again, nor
  resumed from its final checkpoint or with another recipe; --resume-from an earlier checkpoint of it,
  torn, falls back to the whole one before it, whatever Ray Train's own record of the folder says, and
  the earlier attempt's later checkpoints are set aside (superseded/);
- a worker killed mid-run, its newest checkpoint torn: in that resumed run, once Ray Train has registered
  a new checkpoint, a file of it is cut short and one worker gets SIGKILL; Ray Train restarts the group
  (`scaling.max_failures`) from that checkpoint, which gives way to the previous whole one with a
  warning, and the run ends with the uninterrupted run's weights, the same metrics, and each update once
  in metrics.jsonl;
- checkpoint.keep by prefinetune's rule (prefinetune/run/checkpoints.py): each torn checkpoint is set
  aside (torn/), so it never stands in the count for a whole one, and the run ends with its `keep` newest;
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

# 20 updates of a tiny BERT: a checkpoint every 2, all kept in the straight run; the kill comes after update 7,
# and Ray Train registers a checkpoint up to one health check (0.2 s in the suite) after the update that saved
# it: the 13 updates left leave time for it
UPDATES, EVERY = 20, 2


@pytest.fixture(scope="module")
def local_ray():
    import ray

    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    from prefinetune.model.tiny import save_tiny_bert

    return save_tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def straight(tmp_path_factory, local_ray, bert):
    import ray

    from prefinetune.run.driver import run

    out = tmp_path_factory.mktemp("faults")
    result = run(_recipe(bert, out, "straight", failures=0))
    # the local Ray has a temp folder of its own, so another local Ray on the machine cannot break it
    assert ray._private.worker._global_node.get_temp_dir_path().startswith("/tmp/prefinetune-ray-")
    return result, out


def _same_weights(a_export: str, b_export: str) -> None:
    for weights in ("model.safetensors", "heads.safetensors"):
        a, b = load_file(Path(a_export) / weights), load_file(Path(b_export) / weights)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=1e-5, msg=lambda m: f"{weights} {key}: {m}")


def _recipe(bert: Path, out: Path, name: str, failures: int, workers: int = 2, *extra: str):
    return load_recipe(REPO / "recipes" / "local_cpu.yaml", [
        f"model.name_or_path={bert}", f"run.output_dir={out}", f"run.name={name}", f"train.updates={UPDATES}",
        "train.slots_per_update=2",
        "train.batch_size=4", "train.log_every=1", "data.synthetic_rows=100", "model.max_length=24",
        f"checkpoint.every_updates={EVERY}", f"checkpoint.keep={UPDATES // EVERY}", f"eval.every_updates={EVERY}",
        "eval.max_rows=8",
        f"scaling.max_failures={failures}", f"scaling.num_workers={workers}",
        # the model picks each slot's task (its record travels in the checkpoint): the hardest schedule to resume
        "sampling.policy=mt_uncertainty", "sampling.candidate_tasks=2", *extra])


def _registered(experiment: Path) -> tuple[int, str] | None:
    """(update, folder name) of the newest checkpoint Ray Train has registered (its snapshot beside the
    checkpoints)."""
    try:
        latest = json.loads((experiment / "checkpoint_manager_snapshot.json").read_text())["latest_checkpoint_result"]
        return latest["metrics"]["update"], latest["checkpoint_dir_name"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        return None


def _tear(folder: Path) -> tuple[Path, bytes]:
    """Cut rank 1's optimizer file of checkpoint `folder` to half its bytes; the file and its bytes before."""
    victim = next(folder.glob("*/zero_pp_rank_1_*optim_states.pt"))
    whole = victim.read_bytes()
    victim.write_bytes(whole[: len(whole) // 2])
    return victim, whole


def _settled(experiment: Path, quiet: float, deadline: float) -> tuple[int, str]:
    """The newest checkpoint Ray Train has registered, once it has not changed for `quiet` seconds."""
    seen, since = None, time.time()
    while time.time() < deadline:
        now = _registered(experiment)        # None while the controller rewrites its snapshot
        if now is not None and now != seen:
            seen, since = now, time.time()
        elif seen is not None and time.time() - since >= quiet:
            return seen
        time.sleep(0.05)
    raise TimeoutError(f"Ray Train's snapshot in {experiment} did not settle (last read: {seen})")


def _tear_and_kill(run_dir: Path, tear_from: int, kill_after: int, old: set, killed: dict) -> None:
    """Once Ray Train has registered a new checkpoint (not in `old`) of update `tear_from` or later and the run
    has finished `kill_after` updates (progress.json): stop rank 1 (SIGSTOP), so at most the checkpoint rank
    1 has already reported can still be registered (Ray Train registers one once every worker reported it,
    and a report starts with a barrier across ranks), wait until Ray Train's record stays the same for 3 s,
    cut a file of its newest checkpoint short (and, if a newer one came in meanwhile, mend it and cut that
    one), then SIGKILL rank 1, whatever went wrong before: Ray Train restarts from that torn checkpoint,
    whichever update it is. (Tearing update `tear_from` and killing without the stop raced the run: a
    newer checkpoint was registered between the check and the kill once, and Ray restarted from that whole
    one.)"""
    deadline = time.time() + 600
    experiment = run_dir / "ray" / run_dir.name
    while time.time() < deadline:
        registered = _registered(experiment)
        if registered is None or registered[0] < tear_from or registered[1] in old:
            time.sleep(0.05)
            continue
        try:
            done = json.loads((run_dir / "progress.json").read_text())["update"]
            pid = json.loads((run_dir / "workers" / "rank-1.json").read_text())["pid"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            time.sleep(0.05)
            continue
        if done >= kill_after:
            os.kill(pid, signal.SIGSTOP)
            try:
                torn = _settled(experiment, 3.0, deadline)
                victim, whole = _tear(experiment / torn[1])
                while (now := _settled(experiment, 0.5, deadline)) != torn:
                    victim.write_bytes(whole)
                    torn = now
                    victim, whole = _tear(experiment / torn[1])
                killed.update(update=torn[0], torn=experiment / torn[1], victim=victim)
            except Exception as error:         # noqa: BLE001 - said by the test's assertion on `killed`
                killed.update(error=repr(error))
            finally:
                os.kill(pid, signal.SIGKILL)
            killed.update(pid=pid, after=done)
            return
        time.sleep(0.05)
    killed.update(error="the run never reached the point of the kill")


def _sampler_record(run_dir: Path, update: int, skip: set = frozenset()) -> dict:
    """MT-Uncertainty's record (candidates offered, slots won per task) in the checkpoint of `update` (not
    one of the folders in `skip`)."""
    from prefinetune.distributed.checkpoint_files import checkpoint_update

    folder = next(p for p in (run_dir / "ray").glob("*/checkpoint_*") if checkpoint_update(p) == update
                  and p not in skip)
    state = torch.load(folder / f"update-{update:07d}" / "mp_rank_00_model_states.pt", weights_only=False,
                       map_location="cpu", mmap=True)
    assert sum(state["uncertainty"]["won"]) == UPDATES * 2
    return state["uncertainty"]


@pytest.mark.slow
def test_one_folder_one_run_and_a_killed_worker_restarts_past_torn_checkpoints(straight, bert, tmp_path, capfd):
    """A copy of the finished straight run's folder (Ray Train's snapshot in it names update 20):
    - starting it again, resuming from its final checkpoint or with another learning rate are refused
      before Ray starts;
    - --resume-from its update-4 checkpoint, torn, resumes from the whole one before it (update 2), never
      from Ray's newest; the checkpoints past it go to superseded/, the torn one to torn/;
    - in that resumed run (checkpoint.keep 2), after update 7 and once Ray Train has registered its new
      update-6 checkpoint, rank 1 is stopped, a file of the newest registered checkpoint (6 or, if one came
      in meanwhile, 8) is cut short and rank 1 gets SIGKILL: Ray Train restarts the group
      (`scaling.max_failures`) from that checkpoint, which gives way to the previous whole one (kept: the
      torn one is set aside, not counted) with a warning;
    and the run ends with the straight run's weights, metrics and sampler record, each update once in
    metrics.jsonl, and its 2 newest checkpoints."""
    import shutil

    from prefinetune.distributed.checkpoint_files import check_files, checkpoint_update
    from prefinetune.recipe.config import RecipeError
    from prefinetune.run.driver import run

    straight, straight_out = straight
    shutil.copytree(straight_out / "straight", tmp_path / "straight", ignore=shutil.ignore_patterns("export"))
    run_dir = tmp_path / "straight"
    experiment = run_dir / "ray" / "straight"
    by_update = {checkpoint_update(p): p for p in experiment.glob("checkpoint_*") if p.is_dir()}
    assert sorted(by_update) == list(range(EVERY, UPDATES + 1, EVERY))
    recipe = _recipe(bert, tmp_path, "straight", 1, 2, "checkpoint.keep=2")
    refusals = [
        ({}, f"already holds run 'straight', finished at update {UPDATES} (its export: {run_dir / 'export'}): "
             f"another --name / --output-dir for a new run, or --resume-from {by_update[UPDATES]} with --updates "
             f"more than {UPDATES} to train on"),
        ({"resume_from": str(by_update[UPDATES])},
         f"holds update {UPDATES} and train.updates is {UPDATES}: nothing is left to train"),
        ({"resume_from": str(by_update[6]), "lr": True}, "whose recipe differs in ['optim.lr']"),
        ({"resume_from": str(run_dir)}, "not a checkpoint (no DeepSpeed 'latest' file in it)"),
    ]
    for how, message in refusals:
        given = _recipe(bert, tmp_path, "straight", 1, 2, "optim.lr=5e-5") if how.get("lr") else recipe
        with pytest.raises(RecipeError, match=re.escape(message)):
            run(given, resume_from=how.get("resume_from"))
    assert not (run_dir / "export").exists()
    torn = by_update[4]
    victim, _ = _tear(torn)
    killed: dict = {}
    killer = threading.Thread(target=_tear_and_kill, args=(run_dir, 6, 7, {p.name for p in by_update.values()},
                                                           killed), daemon=True)
    killer.start()
    resumed = run(recipe, resume_from=str(torn))
    killer.join(timeout=5)
    said = "".join(capfd.readouterr())
    # the explicit --resume-from, torn: the whole one before it, whatever Ray Train's record said
    assert f"checkpoint {torn} is torn ({victim} (rank 1) has" in said
    assert f"resuming from the previous whole one, {by_update[2]} (update 2)" in said
    assert "Ray Train's record of the earlier attempt moved to" in said
    assert (f"{UPDATES // EVERY - 2} checkpoint(s) of a later update (an earlier attempt's) set aside in "
            f"{experiment / 'superseded'}: ") in said
    aside = {p.name: checkpoint_update(p) for p in (experiment / "superseded").iterdir()}
    earlier = {by_update[u].name for u in range(6, UPDATES + 1, EVERY)}
    assert earlier <= set(aside), aside
    # the killed worker: restarted by Ray Train from its newest checkpoint (update 6 or a later one), torn, so
    # from the whole one before it
    assert "error" not in killed and killed["after"] < UPDATES and 6 <= killed["update"] < UPDATES, killed
    fallback = killed["update"] - EVERY
    # besides them, at most what the killed attempt left past the checkpoint the restart went back to
    assert all(name in earlier or update is None or update > fallback for name, update in aside.items()), aside
    assert json.loads((run_dir / "workers" / "rank-1.json").read_text())["pid"] != killed["pid"], "not restarted"
    assert f"checkpoint {killed['torn']} is torn ({killed['victim']} (rank 1) has" in said
    assert "resumed after update 2" in said and f"resumed after update {fallback}" in said, said[-3000:]
    # both torn checkpoints set aside, out of the count: the run ends with its 2 newest, whole
    assert f"set aside in {experiment / 'torn'}: {killed['torn'].name}" in said
    assert sorted(p.name for p in (experiment / "torn").iterdir()) == sorted([torn.name, killed["torn"].name])
    kept = sorted(p for p in experiment.glob("checkpoint_*") if p.is_dir())
    assert [checkpoint_update(p) for p in kept] == [UPDATES - EVERY, UPDATES], kept
    assert all(check_files(p) is None for p in kept)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (straight_out / "straight" / "metrics.jsonl").read_text().splitlines()]
    for kind in ("lr", "dev/syn_nli/accuracy"):       # training windows and evals: each update once
        assert [r["update"] for r in records if kind in r] == [r["update"] for r in reference if kind in r], kind
    for a, b in zip(reference, records):
        if "lr" in a:
            losses = {k: v for k, v in a.items() if k.startswith(("loss/", "seen/", "mix/", "uncertainty/"))}
            assert {k: b[k] for k in losses} == pytest.approx(losses, rel=1e-5), a["update"]
    assert any(k.startswith("uncertainty/") for r in records for k in r)
    assert _sampler_record(run_dir, UPDATES, skip=set(by_update.values())) == _sampler_record(
        straight_out / "straight", UPDATES)
    assert resumed["metrics"] == pytest.approx(straight["metrics"], rel=1e-5)
    _same_weights(straight["export"], resumed["export"])
