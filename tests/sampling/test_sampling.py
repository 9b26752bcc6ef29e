"""Task sampling policies, alpha schedules, batching strategies, the sampling config and the task-mix log.

    python -m pytest tests/sampling/test_sampling.py -q
"""
from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError
from scipy.stats import chisquare

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny import tiny_recipe  # noqa: E402

from prefinetune.recipe.config import RecipeError, SamplingSection, recipe_from_dict
from prefinetune.run.task_mix import TaskMix, mix_record, plot_task_mix, read_task_mix
from prefinetune.sampling import policies as sm
from prefinetune.sampling.policies import (
    alpha_at,
    annealed_alpha,
    apportion,
    dataset_blocks,
    policy_probabilities,
    probabilities_at,
    run_probabilities,
    task_blocks,
    task_order,
)
from prefinetune.sampling.schedule import plan_update

SIZES = {"big": 8000, "mid": 2000, "small": 500, "tiny": 50}
STRATEGIES = ("batch_heterogeneous", "batch_homogeneous", "dataset_homogeneous")


def _counts(tasks) -> np.ndarray:
    return np.array([sum(t == name for t in tasks) for name in SIZES])


def _slot_tasks(sampling: SamplingSection, updates: int, slots: int, seed: int = 3) -> list[str]:
    return [s.task for i in range(updates) for s in plan_update(sampling, seed, i, updates, slots, SIZES, 1)]


# ---- policies -------------------------------------------------------------------------------------------

def test_policy_formulas():
    n = np.array([8000, 2000, 500, 50], dtype=float)
    assert list(policy_probabilities("natural", SIZES).values()) == pytest.approx(n / n.sum())
    assert list(policy_probabilities("uniform", SIZES).values()) == pytest.approx([0.25] * 4)
    w = np.minimum(n, 1000) ** 0.5
    assert list(policy_probabilities("temperature", SIZES, 0.5, 1000).values()) == pytest.approx(w / w.sum())
    capped = np.minimum(n, 1000)
    natural_capped = policy_probabilities("natural", SIZES, examples_cap=1000)
    assert list(natural_capped.values()) == pytest.approx(capped / capped.sum())
    assert policy_probabilities("temperature", SIZES, 1.0) == pytest.approx(policy_probabilities("natural", SIZES))
    assert policy_probabilities("temperature", SIZES, 0.0) == pytest.approx(policy_probabilities("uniform", SIZES))
    huge = policy_probabilities("temperature", {"a": 10**9, "b": 1}, alpha=50.0)   # no overflow
    assert huge["a"] == 1.0 and huge["b"] >= 0.0
    with pytest.raises(ValueError, match="unknown sampling policy 'mt'; known: natural, uniform, temperature"):
        policy_probabilities("mt", SIZES)


@pytest.mark.parametrize("section, expected", [
    (dict(policy="natural"), policy_probabilities("natural", SIZES)),
    (dict(policy="uniform"), policy_probabilities("uniform", SIZES)),
    (dict(policy="temperature", alpha=0.3, examples_cap=1500),
     policy_probabilities("temperature", SIZES, 0.3, 1500)),
])
def test_drawn_slot_tasks_follow_the_policy(section, expected):
    sampling = SamplingSection(**section)
    observed = _counts(_slot_tasks(sampling, updates=300, slots=16))
    assert chisquare(observed, observed.sum() * np.array(list(expected.values()))).pvalue > 0.001, observed


def test_annealed_draws_follow_the_per_update_probabilities():
    sampling = SamplingSection(policy="temperature", anneal="exponential")
    updates, slots = 200, 16
    expected = slots * sum(np.array(list(probabilities_at(sampling, SIZES, t, updates).values()))
                           for t in range(updates))
    tasks = _slot_tasks(sampling, updates, slots)
    observed = _counts(tasks)
    assert chisquare(observed, expected).pvalue > 0.001, (observed, expected)
    # The mix moves toward uniform: the tiny task is drawn far more at the end than at the start.
    head, tail = tasks[: 50 * slots], tasks[-50 * slots:]
    assert tail.count("tiny") > 3 * max(head.count("tiny"), 1)


# ---- alpha schedules --------------------------------------------------------------------------------------

@pytest.mark.parametrize("anneal", ["linear", "exponential", "cosine"])
@pytest.mark.parametrize("start, end", [(1.0, 0.1), (0.1, 1.0), (0.7, 0.3)])
def test_alpha_schedules_hit_their_endpoints_and_are_monotone(anneal, start, end):
    total = 1000
    alphas = [annealed_alpha(anneal, start, end, t, total) for t in range(total + 1)]
    assert alphas[0] == start and alphas[-1] == end
    steps = np.diff(alphas)
    assert (steps <= 0).all() if end < start else (steps >= 0).all()
    assert annealed_alpha(anneal, start, end, total + 50, total) == end   # past the end: held at alpha_end


def test_alpha_midpoints():
    assert annealed_alpha("exponential", 1.0, 0.1, 500, 1000) == pytest.approx(math.sqrt(0.1), rel=1e-12)
    assert annealed_alpha("linear", 1.0, 0.1, 500, 1000) == pytest.approx(0.55)
    assert annealed_alpha("cosine", 1.0, 0.1, 500, 1000) == pytest.approx(0.55)
    assert annealed_alpha("cosine", 1.0, 0.1, 250, 1000) == pytest.approx(0.1 + 0.9 * (1 + math.sqrt(0.5)) / 2)
    default = SamplingSection(policy="temperature")
    assert alpha_at(default, 0, 10) == 1.0 and alpha_at(default, 10, 10) == 0.1
    assert alpha_at(default, 5, 10) == pytest.approx(math.sqrt(0.1))
    assert alpha_at(SamplingSection(policy="temperature", alpha=0.4), 7, 10) == 0.4


# ---- purity and resume ----------------------------------------------------------------------------------

def _sections():
    return [SamplingSection(strategy=s, policy="temperature", examples_cap=3000) for s in STRATEGIES] + [
        SamplingSection(strategy="batch_heterogeneous"), SamplingSection(strategy="dataset_homogeneous")]


@pytest.mark.parametrize("sampling", _sections(), ids=lambda s: f"{s.strategy}-{s.policy}")
def test_same_seed_same_schedule_different_seed_differs(sampling):
    def run(seed):
        return [plan_update(sampling, seed, t, 60, 4, SIZES, 3) for t in range(60)]
    a = run(11)
    assert a == run(11)
    assert a != run(12)


@pytest.mark.parametrize("sampling", _sections(), ids=lambda s: f"{s.strategy}-{s.policy}")
def test_a_resumed_schedule_continues_identically(sampling):
    total, k = 80, 37
    full = [plan_update(sampling, 5, t, total, 4, SIZES, 3) for t in range(total)]
    sm._dataset_blocks.cache_clear()              # as in a fresh process after a restart
    resumed = [plan_update(sampling, 5, t, total, 4, SIZES, 3) for t in range(k, total)]
    assert resumed == full[k:]


# ---- batch-homogeneous ------------------------------------------------------------------------------------

def test_batch_homogeneous_updates_share_one_task_drawn_from_the_policy():
    sampling = SamplingSection(strategy="batch_homogeneous", policy="temperature", alpha=0.5)
    updates = 2000
    plans = [plan_update(sampling, 9, t, updates, 2, SIZES, 4) for t in range(updates)]
    assert all(len({s.task for s in plan}) == 1 for plan in plans)
    observed = _counts([plan[0].task for plan in plans])
    expected = updates * np.array(list(policy_probabilities("temperature", SIZES, 0.5).values()))
    assert chisquare(observed, expected).pvalue > 0.001, observed
    wide = plan_update(sampling, 9, 0, updates, 16, SIZES, 4)
    assert len({s.task for s in wide}) == 1 and [s.index for s in wide] == list(range(16))
    assert all(len(set(s.rows)) == len(s.rows) == 4 and max(s.rows) < SIZES[s.task] for s in wide)


# ---- dataset-homogeneous ----------------------------------------------------------------------------------

def test_apportion_is_largest_remainder():
    assert apportion({"a": 0.6, "b": 0.3, "c": 0.1}, 7) == {"a": 4, "b": 2, "c": 1}     # 4.2, 2.1, 0.7
    assert apportion({"a": 0.5, "b": 0.5}, 3) == {"a": 2, "b": 1}                       # tie: earlier task
    assert apportion({"a": 0.98, "b": 0.01, "c": 0.01}, 10) == {"a": 10, "b": 0, "c": 0}
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.dirichlet(np.ones(6))
        total = int(rng.integers(1, 500))
        parts = apportion(dict(zip("abcdef", p)), total)
        assert sum(parts.values()) == total
        assert all(abs(parts[t] - q * total) < 1 for t, q in zip("abcdef", p))


@pytest.mark.parametrize("section", [dict(), dict(policy="temperature"), dict(policy="uniform")])
def test_dataset_homogeneous_runs_each_task_once_in_a_block(section):
    sampling = SamplingSection(strategy="dataset_homogeneous", **section)
    total = 157
    tasks = [plan_update(sampling, 4, t, total, 4, SIZES, 2) for t in range(total)]
    assert all(len({s.task for s in plan}) == 1 for plan in tasks)
    sequence = [plan[0].task for plan in tasks]
    runs = [(task, len(list(group))) for task, group in itertools.groupby(sequence)]
    assert len({task for task, _ in runs}) == len(runs) == len(SIZES)          # contiguous, each once
    parts = apportion(run_probabilities(sampling, SIZES, total), total)
    assert dict(runs) == parts and sum(parts.values()) == total
    assert [task for task, _ in runs] == task_order(4, list(SIZES))
    assert dataset_blocks(sampling, 4, SIZES, total) == task_blocks(4, run_probabilities(sampling, SIZES, total), total)


def test_dataset_homogeneous_with_annealing_uses_the_run_average():
    sampling = SamplingSection(strategy="dataset_homogeneous", policy="temperature")
    total = 400
    mean = np.mean([list(probabilities_at(sampling, SIZES, t, total).values()) for t in range(total)], axis=0)
    assert list(run_probabilities(sampling, SIZES, total).values()) == pytest.approx(mean)
    natural = SamplingSection(strategy="dataset_homogeneous")
    shares = dict((t, n) for t, _, n in dataset_blocks(sampling, 0, SIZES, total))
    natural_shares = dict((t, n) for t, _, n in dataset_blocks(natural, 0, SIZES, total))
    assert shares["tiny"] > natural_shares["tiny"] and shares["big"] < natural_shares["big"]


def test_dataset_homogeneous_order_depends_on_the_seed_and_steps_stay_in_the_run():
    orders = {tuple(task_order(seed, list(SIZES))) for seed in range(20)}
    assert len(orders) > 5 and all(sorted(o) == sorted(SIZES) for o in orders)
    sampling = SamplingSection(strategy="dataset_homogeneous")
    with pytest.raises(ValueError, match=r"update index 10 is outside the run's updates 0\.\.9"):
        plan_update(sampling, 0, 10, 10, 2, SIZES, 1)


# ---- config ------------------------------------------------------------------------------------------------

def test_sampling_defaults():
    s = SamplingSection()
    assert (s.policy, s.strategy, s.anneal, s.examples_cap) == ("natural", "batch_heterogeneous", "none", None)
    t = SamplingSection(policy="temperature")                     # Wolfe & Lundgaard's best schedule
    assert (t.anneal, t.alpha_start, t.alpha_end) == ("exponential", 1.0, 0.1)
    assert SamplingSection(policy="temperature", alpha=0.5).anneal == "none"
    assert SamplingSection(policy="temperature", anneal="cosine", alpha_end=0.2).alpha_end == 0.2
    for s in (t, SamplingSection(policy="temperature", alpha=0.5, strategy="dataset_homogeneous")):
        assert SamplingSection.model_validate(s.model_dump()) == s   # travels to workers unchanged


@pytest.mark.parametrize("section, message", [
    (dict(policy="temperature", anneal="exponential", alpha_end=0.0),
     r"anneal 'exponential'.*alpha_start > 0 and alpha_end > 0.*alpha_end=0\.0"),
    (dict(policy="temperature", anneal="exponential", alpha_start=0.0), r"alpha_start > 0.*alpha_start=0\.0"),
    (dict(policy="natural", alpha=0.5), "alpha is the temperature exponent: it needs policy 'temperature'"),
    (dict(policy="uniform", anneal="linear"), "anneal='linear' .* needs policy 'temperature'"),
    (dict(policy="uniform", examples_cap=100), "examples_cap has no effect with policy 'uniform'"),
    (dict(policy="temperature", alpha=0.5, alpha_end=0.2), "alpha_end only apply with anneal"),
    (dict(policy="temperature", anneal="linear", alpha=0.5), "alpha is the fixed exponent; with anneal='linear'"),
    (dict(policy="temperature", alpha=-1.0), "alpha\n.*greater than or equal to 0"),
    (dict(examples_cap=0), "examples_cap\n.*greater than or equal to 1"),
    (dict(strategy="interleaved"), "strategy\n.*'batch_heterogeneous', 'batch_homogeneous' or 'dataset_homogeneous'"),
    (dict(policy="bogus"), "policy\n.*'natural', 'uniform', 'temperature', 'rates' or 'mt_uncertainty'"),
    (dict(temperature=2), "temperature\n.*Extra inputs are not permitted"),
])
def test_sampling_validation_names_the_key(section, message):
    with pytest.raises(ValidationError, match=message):
        SamplingSection(**section)


def test_recipe_errors_name_the_sampling_section():
    with pytest.raises(RecipeError, match=r"key 'sampling': .*alpha_end > 0"):
        recipe_from_dict(tiny_recipe(sampling={"policy": "temperature", "alpha_end": 0}))
    with pytest.raises(RecipeError, match=r"key 'sampling\.strategy'"):
        recipe_from_dict(tiny_recipe(sampling={"strategy": "nope"}))
    r = recipe_from_dict(tiny_recipe(sampling={"policy": "temperature", "strategy": "batch_homogeneous"}))
    assert r.sampling.anneal == "exponential"
    assert SamplingSection.model_validate(r.sampling.model_dump(mode="json")) == r.sampling


# ---- task mix --------------------------------------------------------------------------------------------

def test_task_mix_counts_a_window_and_resets():
    mix = TaskMix(SIZES)
    sampling = SamplingSection(strategy="batch_homogeneous")
    plans = [plan_update(sampling, 0, t, 10, 8, SIZES, 1) for t in range(10)]
    for plan in plans:
        mix.add(plan)
    record = mix.flush()
    assert set(record) == {f"mix/{t}" for t in SIZES} and sum(record.values()) == pytest.approx(1.0)
    assert record["mix/big"] == sum(p[0].task == "big" for p in plans) / 10
    assert mix.flush() == {f"mix/{t}": 0.0 for t in SIZES}
    assert mix_record({"a": 3, "b": 1}) == {"mix/a": 0.75, "mix/b": 0.25}
    with pytest.raises(KeyError, match="'other' is not one of"):
        mix.add([type("S", (), {"task": "other"})()])


@pytest.mark.parametrize("windows", [12, 150])     # bars, then a stacked area
def test_plot_task_mix_writes_a_png(tmp_path, windows):
    sampling = SamplingSection(policy="temperature", strategy="batch_homogeneous")
    mix, path = TaskMix(SIZES), tmp_path / "metrics.jsonl"
    with path.open("w") as f:
        f.write(json.dumps({"update": 0, "lr": 1e-5}) + "\n")                  # lines without a mix are skipped
        for t in range(windows * 4):
            mix.add(plan_update(sampling, 1, t, windows * 4, 4, SIZES, 1))
            if (t + 1) % 4 == 0:
                f.write(json.dumps({"update": t + 1, "loss/big": 0.5, **mix.flush()}) + "\n")
    updates, names, fractions = read_task_mix(path)
    assert updates == list(range(4, windows * 4 + 1, 4)) and names == list(SIZES)
    assert fractions.shape == (4, windows) and np.allclose(fractions.sum(axis=0), 1.0)
    png = plot_task_mix(path, tmp_path / "plots" / "mix.png")
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (1000, 500)


def test_plot_task_mix_needs_mix_records(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"update": 1, "lr": 0.1}) + "\n")
    with pytest.raises(ValueError, match="no 'mix/<task>' records"):
        plot_task_mix(path, tmp_path / "x.png")
