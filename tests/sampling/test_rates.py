"""Explicit mixtures (sampling.policy: rates) and per-task loss weights: the pure schedule's realised task
frequencies against the rates (chi-square), rates with examples_cap, and the recipe's errors; a task with
loss_weight 0 leaves its head bit-identical under DeepSpeed ZeRO-2 while the others train.

    python -m pytest tests/sampling/test_rates.py -q
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from scipy.stats import chisquare

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import free_port, rank_env  # noqa: E402
from tiny import tiny_bert, tiny_recipe, tiny_splits  # noqa: E402

from prefinetune.recipe.config import RecipeError, SamplingSection, recipe_from_dict
from prefinetune.sampling.policies import dataset_blocks, policy_probabilities
from prefinetune.sampling.schedule import plan_update

SIZES = {"a": 100, "b": 100, "c": 1000, "d": 500}
RATES = {"a": 100, "b": 50, "c": "examples", "d": 0}        # c: its rows, capped at 150


def test_rates_normalise_with_examples_capped_and_zero_left_out():
    p = policy_probabilities("rates", SIZES, examples_cap=150, rates=RATES)
    assert p == pytest.approx({"a": 1 / 3, "b": 1 / 6, "c": 1 / 2, "d": 0.0})
    assert policy_probabilities("rates", SIZES, rates={**RATES, "c": "examples"}) == pytest.approx(
        {"a": 100 / 1150, "b": 50 / 1150, "c": 1000 / 1150, "d": 0.0})           # no cap: all 1000 rows


def test_realised_frequencies_follow_the_rates():
    """Chi-square of the tasks drawn by the pure schedule (400 updates x 4 slots) against the rates."""
    sampling = SamplingSection(policy="rates", rates=RATES, examples_cap=150)
    counts = dict.fromkeys(SIZES, 0)
    for u in range(400):
        for slot in plan_update(sampling, 0, u, 400, 4, SIZES, 8):
            counts[slot.task] += 1
    assert counts["d"] == 0
    drawn = [counts[t] for t in ("a", "b", "c")]
    assert chisquare(drawn, [1600 / 3, 1600 / 6, 1600 / 2]).pvalue > 0.01, counts
    # the homogeneous strategies read the same mixture: a run's blocks are its shares of the updates
    blocks = dataset_blocks(SamplingSection(policy="rates", rates=RATES, examples_cap=150,
                                            strategy="dataset_homogeneous"), 0, SIZES, 60)
    assert {task: length for task, _, length in blocks if length} == {"a": 20, "b": 10, "c": 30}


@pytest.mark.parametrize("sampling, message", [
    ({"policy": "rates"}, "policy 'rates' takes its mixture from sampling.rates: give both or neither"),
    ({"rates": {"a": 1}}, "sampling.rates is the mixture of policy 'rates', not 'natural'"),
    ({"policy": "rates", "rates": {"task_a": 0, "task_b": 0, "task_c": 0}}, "gives every task rate 0"),
    ({"policy": "rates", "rates": {"task_a": 1, "task_b": 1, "task_c": 1}, "examples_cap": 10},
     "examples_cap caps the rate 'examples'; sampling.rates gives none"),
    ({"policy": "rates", "rates": {"task_a": 1}}, "gives no rate to tasks ['task_b', 'task_c']"),
    ({"policy": "rates", "rates": {"task_a": 1, "task_b": 1, "task_c": 1, "nope": 2}},
     "names tasks the recipe does not have: ['nope']"),
    ({"policy": "rates", "rates": {"task_a": -1, "task_b": 1, "task_c": 1}}, "greater than or equal to 0"),
])
def test_bad_rates_are_refused_naming_the_key(sampling, message):
    recipe = tiny_recipe(sampling=sampling)
    recipe["tasks"] = [{**t, "name": f"task_{n}"} for t, n in zip(recipe["tasks"], "abc")]
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(recipe)
    assert message in str(err.value) and "sampling" in str(err.value)


UPDATES = 4


def _worker(rank: int, port: int, out: str) -> None:
    from prefinetune.distributed.engine import build_engine
    from prefinetune.model.multitask import build_model
    from prefinetune.run.step import TrainData, run_update

    rank_env(rank, 1, port)
    recipe = tiny_recipe(deepspeed={"zero_stage": 2}, train={"updates": UPDATES, "slots_per_update": 3,
                                                             "batch_size": 3},
                         optim={"lr": 1e-2, "warmup_updates": 0, "weight_decay": 0.1},
                         scaling={"num_workers": 1, "use_gpu": False})
    recipe["tasks"][0]["loss_weight"] = 0.0
    recipe = recipe_from_dict(recipe)
    engine = build_engine(build_model(recipe, backbone=tiny_bert(seed=0)), recipe, 1, on_gpu=False)
    data = TrainData(tiny_splits(recipe), recipe.tasks, pad_id=0)
    ids = {t.name: i for i, t in enumerate(recipe.tasks)}
    state = [{k: v.detach().clone() for k, v in engine.module.state_dict().items()}]
    tasks = []
    for u in range(UPDATES):
        plan = plan_update(recipe.sampling, recipe.run.seed, u, UPDATES, 3, data.sizes, 3)
        run_update(engine, ids, plan, data, torch.device("cpu"), recipe.run.seed, u)
        tasks += [s.task for s in plan]
    state.append({k: v.detach().clone() for k, v in engine.module.state_dict().items()})
    torch.save({"state": state, "tasks": tasks, "names": [t.name for t in recipe.tasks]}, f"{out}/run.pt")
    torch.distributed.destroy_process_group()


def test_a_loss_weight_of_0_leaves_that_tasks_head_bit_identical(tmp_path, gloo):
    gloo.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=1)
    run = torch.load(tmp_path / "run.pt", weights_only=False)
    (before, after), names = run["state"], run["names"]
    assert names[0] in run["tasks"], "the weight-0 task had no slot: the test proves nothing"
    for key in ("classification.out_weight", "classification.out_bias", "classification.dense_weight"):
        assert torch.equal(after[key][0], before[key][0]), key              # its head: untouched
        assert not torch.equal(after[key][1], before[key][1]), key          # another task's: trained
    assert not torch.equal(after["backbone.embeddings.word_embeddings.weight"],
                           before["backbone.embeddings.word_embeddings.weight"])
