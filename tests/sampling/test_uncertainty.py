"""MT-Uncertainty sampling (CA-MTL): entropies per family, the normalised score, seeded candidates, the
choice of a slot's task on a real tiny model, the sampler's record, and the recipe checks."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import binomtest, entropy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny import family_splits, mixed_recipe, tiny_bart, tiny_bert, tiny_recipe  # noqa: E402

from prefinetune.model.multitask import build_model
from prefinetune.recipe.config import RecipeError, recipe_from_dict
from prefinetune.run.step import TrainData
from prefinetune.sampling.schedule import plan_update
from prefinetune.sampling.uncertainty import (
    UncertaintySampler,
    candidate_order,
    candidate_slot,
    choose_slot,
    example_entropy,
    uncertainty_scores,
)

CPU = torch.device("cpu")


def _scipy_entropy(logits) -> float:
    p = torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=-1).numpy()
    return float(entropy(p))


# ---------------------------------------------------------------- entropies, per family

def test_classification_entropy_is_shannon_entropy_of_the_softmax():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0)) * 3
    got = example_entropy("classification", logits, {})
    np.testing.assert_allclose(got.numpy(), [_scipy_entropy(row) for row in logits], rtol=1e-5)


def test_multiple_choice_entropy_ranges_over_the_real_choices_only():
    scores = torch.tensor([[0.3, -1.0, 2.0, 0.0], [1.0, 1.0, 5.0, 7.0]])
    choice_mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    got = example_entropy("multiple_choice", scores, {"choice_mask": choice_mask})
    expected = [_scipy_entropy(scores[0]), _scipy_entropy(scores[1, :2])]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    assert got[1].item() == pytest.approx(math.log(2), rel=1e-6)   # two equal real scores: uniform


def test_span_entropy_is_the_mean_of_start_and_end_over_real_positions():
    g = torch.Generator().manual_seed(1)
    start, end = torch.randn(2, 7, generator=g), torch.randn(2, 7, generator=g)
    start[1, 5:], end[1, 5:] = -1e4, -1e4            # padding, as the model masks it
    got = example_entropy("span", (start, end), {})
    expected = [(_scipy_entropy(start[0]) + _scipy_entropy(end[0])) / 2,
                (_scipy_entropy(start[1, :5]) + _scipy_entropy(end[1, :5])) / 2]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_summarization_entropy_averages_the_reference_tokens():
    logits = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([[4, 5, 3], [4, 3, -100]])
    got = example_entropy("summarization", logits, {"labels": labels})
    expected = [np.mean([_scipy_entropy(logits[0, t]) for t in range(3)]),
                np.mean([_scipy_entropy(logits[1, t]) for t in range(2)])]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_regression_has_no_distribution_to_score():
    with pytest.raises(ValueError, match="no predictive distribution.*'regression'"):
        example_entropy("regression", torch.zeros(3), {})


# ---------------------------------------------------------------- the score

def test_scores_are_ca_mtl_per_example_scores_averaged_over_the_batch():
    per_example = [np.array([0.2, 0.6, 0.4]), np.array([1.0, 0.9]), np.array([0.05, 0.15])]
    n = [2, 4, 3]
    means = [h.mean() for h in per_example]
    top = max(means)
    expected = [np.mean([h / (math.log(k) * top) for h in hs]) for hs, k in zip(per_example, n)]
    got = uncertainty_scores(means, [math.log(k) for k in n])
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # The division by max Hbar is common to all candidates: the winner is the largest Hbar / H'.
    assert int(np.argmax(got)) == int(np.argmax([m / math.log(k) for m, k in zip(means, n)]))


def test_a_model_certain_of_everything_scores_zero_not_nan():
    np.testing.assert_array_equal(uncertainty_scores([0.0, 0.0], [math.log(2), math.log(3)]), [0.0, 0.0])
    np.testing.assert_array_equal(uncertainty_scores([0.5, 0.0], [0.0, math.log(3)]), [0.0, 0.0])


# ---------------------------------------------------------------- candidates

def test_candidate_order_is_seeded_and_draws_k_tasks_uniformly():
    names = ["a", "b", "c", "d", "e"]
    assert candidate_order(7, 3, 1, names) == candidate_order(7, 3, 1, names)
    assert sorted(candidate_order(7, 3, 1, names)) == names
    orders = {tuple(candidate_order(7, update_index, 0, names)) for update_index in range(20)}
    assert len(orders) > 10, "the order must change from slot to slot"
    draws = [candidate_order(0, update_index, slot, names, k=2) for update_index in range(400) for slot in range(2)]
    assert all(len(set(d)) == 2 for d in draws)
    for task in names:   # each task is among the k = 2 of 5 with probability 2/5
        hits = sum(task in d for d in draws)
        assert binomtest(hits, len(draws), 0.4).pvalue > 1e-3, (task, hits)


def test_candidate_rows_are_a_pure_function_of_seed_step_slot_and_task():
    a = candidate_slot(1, 4, 2, 0, "t", size=50, batch_size=6)
    assert a == candidate_slot(1, 4, 2, 0, "t", size=50, batch_size=6)
    assert len(set(a.rows)) == 6 and all(0 <= r < 50 for r in a.rows)
    others = {candidate_slot(1, 4, 2, i, "t", 50, 6).rows for i in range(1, 6)}
    assert a.rows not in others, "each task's candidate has its own generator"


def test_plan_update_points_to_the_sampler_for_mt_uncertainty():
    recipe = recipe_from_dict(tiny_recipe(sampling={"policy": "mt_uncertainty"}))
    with pytest.raises(ValueError, match="mt_uncertainty.*UncertaintySampler"):
        plan_update(recipe.sampling, 0, 0, 3, 4, {"two": 10, "three": 10, "four": 10}, 2)


# ---------------------------------------------------------------- choosing a slot on a real model

FAMILIES = ["classification", "multiple_choice", "span"]


def _model_and_data(families=FAMILIES, backbone=tiny_bert, **sampling):
    recipe = recipe_from_dict(mixed_recipe(families, sampling={"policy": "mt_uncertainty", **sampling}))
    model = build_model(recipe, backbone=backbone(seed=0))
    data = TrainData(family_splits(recipe), recipe.tasks, pad_id=0)
    return recipe, model, data, {t.name: model.task_id(t.name) for t in recipe.tasks}


def _scipy_score(model, task, batch) -> tuple[float, float]:
    """(mean entropy, log n) of a candidate batch, by scipy on float64 probabilities."""
    with torch.no_grad():
        out = model(model.task_id(task.name), batch)["outputs"]
    if task.family == "classification":
        rows = [_scipy_entropy(r) for r in out], out.shape[-1]
    elif task.family == "multiple_choice":
        rows = [_scipy_entropy(r[m]) for r, m in zip(out, batch["choice_mask"])], out.shape[-1]
    elif task.family == "span":
        real = batch["attention_mask"].bool()
        rows = [(_scipy_entropy(s[m]) + _scipy_entropy(e[m])) / 2 for s, e, m in zip(*out, real)], out[0].shape[-1]
    else:
        real = batch["labels"] != -100
        rows = [np.mean([_scipy_entropy(t) for t in seq[m]]) for seq, m in zip(out, real)], out.shape[-1]
    return float(np.mean(rows[0])), math.log(rows[1])


@pytest.mark.parametrize("families,backbone", [(FAMILIES, tiny_bert),
                                               (FAMILIES + ["summarization"], tiny_bart)])
def test_choose_slot_scores_every_candidate_and_takes_the_most_uncertain(families, backbone):
    recipe, model, data, ids = _model_and_data(families, backbone)
    model.train()
    for slot in range(3):
        chosen, scores = choose_slot(model, data, ids, seed=5, update_index=2, slot=slot, batch_size=4, device=CPU)
        model.eval()
        order = candidate_order(5, 2, slot, list(ids))
        stats = [_scipy_score(model, recipe.task(t), data.batch(
            candidate_slot(5, 2, slot, list(ids).index(t), t, data.sizes[t], 4), CPU)) for t in order]
        model.train()
        top = max(h for h, _ in stats)
        expected = {t: h / (n * top) for t, (h, n) in zip(order, stats)}
        assert scores == pytest.approx(expected, rel=1e-4)
        assert chosen.task == max(order, key=lambda t: expected[t])
        assert chosen == candidate_slot(5, 2, slot, list(ids).index(chosen.task), chosen.task,
                                        data.sizes[chosen.task], 4), "the slot trains on the scored batch"
    assert model.training, "scoring must give the model back in training mode"
    assert all(p.grad is None for p in model.parameters()), "scoring must not touch gradients"


def test_a_task_the_model_has_no_idea_about_wins_every_slot():
    recipe, model, data, ids = _model_and_data()
    with torch.no_grad():     # every head sure of itself except classification3's, which is exactly uniform
        model.classification.out_weight.mul_(1000.0)
        model.classification.out_weight[1].zero_()
        model.classification.out_bias[1].zero_()
        model.multiple_choice.out_weight.mul_(1000.0)
        model.span.weight.mul_(1000.0)
    for slot in range(4):
        chosen, scores = choose_slot(model, data, ids, seed=0, update_index=0, slot=slot, batch_size=4, device=CPU)
        assert chosen.task == "classification3", scores
        # Its Hbar = log 3 = H' is also the largest Hbar: U = log 3 / (log 3 * log 3).
        assert scores["classification3"] == pytest.approx(1 / math.log(3), rel=1e-5)


def test_candidate_tasks_limits_what_is_scored():
    _, model, data, ids = _model_and_data(candidate_tasks=2)
    for slot in range(6):
        chosen, scores = choose_slot(model, data, ids, 0, 1, slot, 4, CPU, k=2)
        assert list(scores) == candidate_order(0, 1, slot, list(ids), k=2) and chosen.task in scores


# ---------------------------------------------------------------- the sampler and its record

def test_sampler_plans_a_whole_update_on_one_worker_and_keeps_its_record():
    _, model, data, ids = _model_and_data()
    sampler = UncertaintySampler(ids)
    plan, mine = sampler.plan(model, data, ids, seed=2, update_index=0, slots=4, rank=0, world=1, device=CPU,
                              batch_size=4)
    assert plan == mine and [s.index for s in plan] == [0, 1, 2, 3]
    for slot in plan:
        assert slot == choose_slot(model, data, ids, 2, 0, slot.index, 4, CPU)[0]
    state = sampler.state_dict()
    assert sum(state["won"]) == 4 and state["offered"] == [4] * len(ids)
    assert state["won"] == [sum(s.task == t for s in plan) for t in ids]
    window = sampler.flush()
    assert set(window) == {f"uncertainty/{t}" for t in ids} and all(0 < u <= 1 for u in window.values())
    assert sampler.flush() == {}, "flush starts a new window"

    again = UncertaintySampler(ids)
    again.load_state_dict(state)
    assert again.state_dict() == state
    with pytest.raises(ValueError, match="record is for tasks"):
        UncertaintySampler(["other"]).load_state_dict(state)


# ---------------------------------------------------------------- recipe checks

def test_recipe_checks_for_mt_uncertainty():
    with pytest.raises(RecipeError, match=r"key 'sampling'.*needs strategy 'batch_heterogeneous'"):
        recipe_from_dict(tiny_recipe(sampling={"policy": "mt_uncertainty", "strategy": "batch_homogeneous"}))
    with pytest.raises(RecipeError, match=r"candidate_tasks is for policy 'mt_uncertainty', not 'natural'"):
        recipe_from_dict(tiny_recipe(sampling={"candidate_tasks": 2}))
    with pytest.raises(RecipeError, match=r"candidate_tasks=4 is more than the recipe's 3 tasks"):
        recipe_from_dict(tiny_recipe(sampling={"policy": "mt_uncertainty", "candidate_tasks": 4}))
    with pytest.raises(RecipeError, match=r"regression predicts a number.*\['regression'\]"):
        recipe_from_dict(mixed_recipe(["classification", "regression"], sampling={"policy": "mt_uncertainty"}))
    with pytest.raises(RecipeError, match=r"examples_cap has no effect with policy 'mt_uncertainty'"):
        recipe_from_dict(tiny_recipe(sampling={"policy": "mt_uncertainty", "examples_cap": 5}))


# ---------------------------------------------------------------- what it does over training

def _easy_and_noise_splits():
    """Two binary tasks: 'easy' labels are the parity of the first real token, 'noise' labels are random."""
    from tiny import ArraySplit

    easy, noise = ArraySplit(200, 2, seed=0), ArraySplit(200, 2, seed=1)
    easy.labels = np.array([ids[1] % 2 for ids in easy.input_ids])
    return {"easy": easy, "noise": noise}


def _scores_and_wins(model, data, ids, updates: int = 5) -> tuple[dict, list]:
    sampler = UncertaintySampler(list(ids))
    for update_index in range(updates):
        sampler.plan(model, data, ids, 0, update_index, 4, 0, 1, CPU, batch_size=16)
    return sampler.flush(), sampler.state_dict()["won"]


def test_once_a_task_is_learned_the_slots_go_to_the_one_the_model_is_unsure_of():
    """CA-MTL's point: a task whose predictions have become sure stops taking slots."""
    from prefinetune.model.optim import build_optimizer
    from prefinetune.run.step import slot_loss
    from prefinetune.sampling.schedule import Slot

    recipe_dict = tiny_recipe(sampling={"policy": "mt_uncertainty"}, optim={"lr": 3e-3, "warmup_updates": 0})
    recipe_dict["tasks"] = [{**recipe_dict["tasks"][0], "name": name} for name in ("easy", "noise")]
    recipe = recipe_from_dict(recipe_dict)
    model = build_model(recipe, backbone=tiny_bert(seed=0))
    data = TrainData(_easy_and_noise_splits(), recipe.tasks, pad_id=0)
    ids = {t.name: model.task_id(t.name) for t in recipe.tasks}
    before, _ = _scores_and_wins(model, data, ids)
    assert before["uncertainty/easy"] == pytest.approx(before["uncertainty/noise"], rel=0.05), before

    optimizer, rng = build_optimizer(model, recipe.optim), np.random.default_rng(0)
    for _ in range(60):                                  # learn 'easy' only
        optimizer.zero_grad()
        batch = data.batch(Slot(0, "easy", tuple(rng.choice(200, 16, replace=False))), CPU)
        slot_loss(model, ids["easy"], recipe.task("easy"), batch)[0].backward()
        optimizer.step()
    after, won = _scores_and_wins(model, data, ids)
    assert won == [0, 20], f"'easy' is learned, 'noise' is not: the slots must go to 'noise' ({after})"
    assert after["uncertainty/easy"] < 0.5 * after["uncertainty/noise"], after


def test_candidates_follow_the_token_budget():
    from tiny import tiny_splits

    recipe = recipe_from_dict(tiny_recipe(sampling={"policy": "mt_uncertainty"},
                                          train={"token_budget": 40, "length_buckets": 2}))
    model = build_model(recipe, backbone=tiny_bert(seed=0))
    splits = tiny_splits(recipe)
    data = TrainData(splits, recipe.tasks, 0, recipe.train.token_budget, recipe.train.length_buckets)
    ids = {t.name: model.task_id(t.name) for t in recipe.tasks}
    for slot in range(6):
        chosen, _ = choose_slot(model, data, ids, 0, 0, slot, recipe.train.batch_size, CPU)
        lengths = splits[chosen.task].lengths[list(chosen.rows)]
        assert len(chosen.rows) == 1 or len(chosen.rows) * lengths.max() <= 40, (chosen, lengths)
        assert chosen == candidate_slot(0, 0, slot, list(ids).index(chosen.task), chosen.task,
                                        data.sizes[chosen.task], recipe.train.batch_size, data.row_drawer)
