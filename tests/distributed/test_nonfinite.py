"""A NaN loss stops the run on every rank at the same micro-step, naming task, update, slot and rows,
before any weight takes it in: two real gloo workers under ZeRO-2, one of which meets a regression row
whose target is NaN (injected in memory: the readers refuse such rows in files). With skipping on
(train.nonfinite_skips), that update is skipped on every rank instead: the weights come out of it
bit-identical, and the next update gives what a run that never met the NaN row gives.

    python -m pytest tests/distributed/test_nonfinite.py -q
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import free_port, rank_env  # noqa: E402
from tiny import FamilySplit, mixed_recipe, tiny_bert  # noqa: E402

from prefinetune.model.multitask import build_model
from prefinetune.recipe.config import recipe_from_dict
from prefinetune.sampling.schedule import Slot

WORLD, BAD_ROW = 2, 7


def _splits(recipe) -> dict:
    splits = {t.name: FamilySplit(t.family, 30, seed=i, num_labels=t.num_labels if t.label_names else 2)
              for i, t in enumerate(recipe.tasks)}
    splits["regression"].rows[BAD_ROW]["label"] = math.nan
    return splits


def _both(rank: int, recipes: tuple, port: int, out: str) -> None:
    """One spawn for both scenarios (a spawn costs more than either): stopping, then skipping."""
    rank_env(rank, WORLD, port)
    _worker(rank, recipes[0], out)
    _skip_worker(rank, recipes[1], out)
    torch.distributed.destroy_process_group()


def _worker(rank: int, recipe_dict: dict, out: str) -> None:
    from prefinetune.distributed.engine import build_engine
    from prefinetune.run.step import NonFiniteLossError, TrainData, run_update

    recipe = recipe_from_dict(recipe_dict)
    engine = build_engine(build_model(recipe, backbone=tiny_bert(seed=0)), recipe, WORLD, on_gpu=False)
    data = TrainData(_splits(recipe), recipe.tasks, pad_id=0)
    ids = {t.name: i for i, t in enumerate(recipe.tasks)}
    before = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
    clean = [Slot(rank, "classification2", (0, 1, 2)), Slot(rank + 2, "classification3", (3, 4))]
    run_update(engine, ids, clean, data, torch.device("cpu"), 0, 0)             # update 1: fine
    after_first = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
    # update 2: rank 1's second slot holds the NaN row; rank 0's slots are clean
    second = [Slot(rank, "classification2", (5, 6)),
              Slot(rank + 2, "regression" if rank == 1 else "classification3", (2, BAD_ROW, 9))]
    message = None
    try:
        run_update(engine, ids, second, data, torch.device("cpu"), 0, 1)
    except NonFiniteLossError as err:
        message = str(err)
    changed = any(not torch.equal(before[k], after_first[k]) for k in before)
    Path(out, f"rank{rank}.json").write_text(json.dumps({"message": message, "first_update_moved": changed}))
    torch.save({k: v.detach().clone() for k, v in engine.module.state_dict().items()}, f"{out}/state{rank}.pt")
    torch.save(after_first, f"{out}/first{rank}.pt")


@pytest.fixture(scope="module")
def ran(tmp_path_factory, gloo):
    out = tmp_path_factory.mktemp("nonfinite")
    stop = mixed_recipe(["classification", "regression"], train={"slots_per_update": 4, "batch_size": 3},
                        deepspeed={"zero_stage": 2}, scaling={"num_workers": WORLD, "use_gpu": False})
    skip = mixed_recipe(["classification", "regression"], train={"slots_per_update": 4, "batch_size": 3,
                                                                 "nonfinite_skips": 1},
                        deepspeed={"zero_stage": 2}, scaling={"num_workers": WORLD, "use_gpu": False})
    gloo.spawn(_both, args=((stop, skip), free_port(), str(out)), nprocs=WORLD)
    return out


@pytest.mark.slow
def test_nan_loss_stops_every_rank_naming_task_update_slot_and_rows(ran):
    tmp_path = ran
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    expected = (f"update 2, slot 3: task 'regression' gave a non-finite loss (nan) on its training rows "
                f"[2, {BAD_ROW}, 9]")
    for report in reports:
        assert report["message"] is not None and report["message"].startswith(expected), report
        assert report["first_update_moved"]
    for r in range(WORLD):      # the failed update left the weights as the first one made them
        state, first = torch.load(tmp_path / f"state{r}.pt"), torch.load(tmp_path / f"first{r}.pt")
        assert all(torch.equal(state[k], first[k]) for k in state)


def _state(engine) -> dict:
    return {k: v.detach().clone() for k, v in engine.module.state_dict().items()}


def _skip_worker(rank: int, recipe_dict: dict, out: str) -> None:
    """Run A: updates 1, 2 (rank 1 meets the NaN row), 3 with skipping on. Run B, the reference: updates 1
    and 3 alone, on a fresh engine from the same start."""
    from prefinetune.distributed.engine import build_engine
    from prefinetune.run.step import TrainData, run_update

    recipe = recipe_from_dict(recipe_dict)
    data = TrainData(_splits(recipe), recipe.tasks, pad_id=0)
    ids = {t.name: i for i, t in enumerate(recipe.tasks)}
    updates = {0: [Slot(rank, "classification2", (0, 1, 2)), Slot(rank + 2, "classification3", (3, 4))],
               1: [Slot(rank, "classification2", (5, 6)),
                   Slot(rank + 2, "regression" if rank == 1 else "classification3", (2, BAD_ROW, 9))],
               2: [Slot(rank, "regression", (0, 1)), Slot(rank + 2, "classification2", (8, 9, 10))]}
    cpu = torch.device("cpu")
    states, skipped = {}, {}
    for run, indices in (("A", [0, 1, 2]), ("B", [0, 2])):
        engine = build_engine(build_model(recipe, backbone=tiny_bert(seed=0)), recipe, WORLD, on_gpu=False)
        for i in indices:
            done = run_update(engine, ids, updates[i], data, cpu, 0, i, skip_nonfinite=True)
            skipped[f"{run}{i}"] = done.skipped
            states[f"{run}{i}"] = _state(engine)
    torch.save(states, f"{out}/skip{rank}.pt")
    Path(out, f"skip{rank}.json").write_text(json.dumps(skipped))


@pytest.mark.slow
def test_with_skipping_on_a_nan_update_is_skipped_on_every_rank_and_leaves_no_trace(ran):
    tmp_path = ran
    for r in range(WORLD):
        skipped = json.loads((tmp_path / f"skip{r}.json").read_text())
        assert skipped["A1"].startswith(f"update 2, slot 3: task 'regression' gave a non-finite loss (nan) on "
                                        f"its training rows [2, {BAD_ROW}, 9]"), skipped
        assert [skipped[k] for k in ("A0", "A2", "B0", "B2")] == [None] * 4
        states = torch.load(tmp_path / f"skip{r}.pt")
        assert any(not torch.equal(states["A0"][k], states["A2"][k]) for k in states["A0"])   # update 3 moved
        for k in states["A0"]:
            assert torch.equal(states["A1"][k], states["A0"][k]), k     # the skipped update changed nothing
            assert torch.equal(states["A2"][k], states["B2"][k]), k     # nor anything after it: no NaN left
