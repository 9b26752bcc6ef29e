"""Heads move only when trained, under DeepSpeed ZeRO-2 on two real gloo workers: with 8 classification
tasks and 2 slots an update, each update trains at most 2 tasks, and every other task's head (its rows
of the stacked bank: projection, bias and, per_task, its dense layer) comes out of the update
bit-identical, for both fc head designs (model.head_dense) and for attention heads of two widths
(model.head: attention: the task's rows of its width group) with Wu et al.'s per-task alignment matrices
(model.alignment: per_task) and CA-MTL's task embeddings (model.conditioning: camtl). Trained heads do move.

    python -m pytest tests/distributed/test_untrained_heads.py -q
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import free_port, rank_env  # noqa: E402
from tiny import tiny_bert, tiny_recipe, tiny_splits  # noqa: E402

from prefinetune.model.multitask import build_model
from prefinetune.recipe.config import recipe_from_dict
from prefinetune.sampling.schedule import plan_update, worker_slots

WORLD, TASKS, UPDATES = 2, 8, 4


def _widths() -> dict:
    return {f"task{i}": 8 if i % 2 else 16 for i in range(TASKS)}


def _recipe(design: str) -> dict:
    model = ({"head": "attention", "head_dim": _widths(), "alignment": "per_task", "conditioning": "camtl",
              "camtl": {"task_embedding_dim": 8, "attention_blocks": 2, "bottleneck_dim": 8}}
             if design == "attention" else {"head_dense": design})
    recipe = tiny_recipe(deepspeed={"zero_stage": 2}, model=model,
                         train={"updates": UPDATES, "slots_per_update": 2, "batch_size": 3},
                         optim={"lr": 1e-2, "warmup_updates": 0, "weight_decay": 0.1})
    recipe["tasks"] = [{**recipe["tasks"][i % 3], "name": f"task{i}"} for i in range(TASKS)]
    return recipe


def _heads(engine) -> dict:
    return {k: v.detach().clone() for k, v in engine.module.state_dict().items()
            if k.startswith(("classification.", "alignment.", "conditioning.task_embedding"))}


def _worker(rank: int, port: int, out: str) -> None:
    """Both head designs, one engine after the other, in one spawn of the workers."""
    rank_env(rank, WORLD, port)
    for head_dense in DESIGNS:
        Path(out, head_dense).mkdir(parents=True, exist_ok=True)
        _train(rank, _recipe(head_dense), str(Path(out, head_dense)))
    torch.distributed.destroy_process_group()


def _train(rank: int, recipe_dict: dict, out: str) -> None:
    from prefinetune.distributed.engine import build_engine
    from prefinetune.run.step import TrainData, run_update

    recipe = recipe_from_dict(recipe_dict)
    engine = build_engine(build_model(recipe, backbone=tiny_bert(seed=0)), recipe, WORLD, on_gpu=False)
    data = TrainData(tiny_splits(recipe), recipe.tasks, pad_id=0)
    ids = {t.name: i for i, t in enumerate(recipe.tasks)}
    states, plans = [_heads(engine)], []
    for u in range(UPDATES):
        plan = plan_update(recipe.sampling, recipe.run.seed, u, UPDATES, 2, data.sizes, recipe.train.batch_size)
        run_update(engine, ids, worker_slots(plan, rank, WORLD), data, torch.device("cpu"), recipe.run.seed, u)
        states.append(_heads(engine))
        plans.append({s.task for s in plan})
    torch.save({"states": states, "plans": plans}, f"{out}/rank{rank}.pt")


def _rows(state: dict, index: int, per_task: bool, design: str = "") -> dict:
    if design == "attention":          # the task's row of each tensor of its width group
        from prefinetune.model.attention_heads import AttentionHeadBank

        group, row = AttentionHeadBank.placement(list(_widths().values()))[index]
        prefix = f"classification.groups.{group}."
        rows = {k: v[row] for k, v in state.items() if k.startswith(prefix)}
        return {**rows, "alignment.weight": state["alignment.weight"][index],        # Wu et al.'s R_t too
                "conditioning.task_embedding": state["conditioning.task_embedding"][index]}      # CA-MTL's z_t
    rows = {k: state[f"classification.{k}"][index] for k in ("out_weight", "out_bias")}
    if per_task:
        rows.update({k: state[f"classification.{k}"][index] for k in ("dense_weight", "dense_bias")})
    return rows


DESIGNS = ("per_task", "shared", "attention")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, gloo) -> Path:
    out = tmp_path_factory.mktemp("heads")
    gloo.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("head_dense", DESIGNS)
def test_heads_of_tasks_not_trained_in_an_update_come_out_bit_identical(head_dense, runs):
    recipe_dict = _recipe(head_dense)
    tmp_path = runs / head_dense
    names = [t["name"] for t in recipe_dict["tasks"]]
    per_task = head_dense == "per_task"
    untrained_checked = 0
    for rank in range(WORLD):
        saved = torch.load(tmp_path / f"rank{rank}.pt")
        for u, trained in enumerate(saved["plans"]):
            before, after = saved["states"][u], saved["states"][u + 1]
            assert 0 < len(trained) <= 2
            for index, name in enumerate(names):
                old, new = _rows(before, index, per_task, head_dense), _rows(after, index, per_task, head_dense)
                assert len(old) == (10 if head_dense == "attention" else 4 if per_task else 2)
                if name in trained:
                    assert any(not torch.equal(old[k], new[k]) for k in old), (u, name)
                else:
                    untrained_checked += 1
                    for key in old:
                        assert torch.equal(old[key], new[key]), f"update {u + 1}: {name}'s {key} moved untrained"
            if head_dense == "shared":      # the one shared dense layer trains with every classification task
                assert not torch.equal(before["classification.dense_weight"], after["classification.dense_weight"])
    assert untrained_checked >= WORLD * UPDATES * (TASKS - 2)
    if head_dense != "attention":
        dense = saved["states"][0]["classification.dense_weight"]
        assert dense.shape[0] == (TASKS if per_task else 1)
