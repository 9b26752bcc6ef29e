"""The pure slot schedule and log(n) scaling (policies and strategies: tests/sampling/test_sampling.py).

    python -m pytest tests/sampling/test_schedule.py -q
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from prefinetune.losses.scaling import scale_loss
from prefinetune.recipe.config import SamplingSection
from prefinetune.sampling.policies import policy_probabilities
from prefinetune.sampling.schedule import plan_update, worker_slots

SIZES = {"big": 6000, "mid": 3000, "small": 1000}


def natural_plan(seed, update_index, slots, sizes, batch_size, policy="natural"):
    """Update `update_index` of the batch-heterogeneous schedule under a fixed policy."""
    return plan_update(SamplingSection(policy=policy), seed, update_index, 100, slots, sizes, batch_size)


def test_natural_and_uniform_probabilities():
    assert policy_probabilities("natural", SIZES) == pytest.approx({"big": 0.6, "mid": 0.3, "small": 0.1})
    assert policy_probabilities("uniform", SIZES) == pytest.approx({t: 1 / 3 for t in SIZES})
    uniform = policy_probabilities("uniform", SIZES)
    assert policy_probabilities("temperature", SIZES, alpha=0.0) == pytest.approx(uniform)
    with pytest.raises(ValueError, match="unknown sampling policy 'nope'"):
        policy_probabilities("nope", SIZES)
    with pytest.raises(ValueError, match=r"no training rows.*\['empty'\]"):
        policy_probabilities("natural", {"a": 3, "empty": 0})


def test_drawn_tasks_follow_natural_proportions():
    counts = {t: 0 for t in SIZES}
    for update_index in range(400):
        for slot in natural_plan(seed=1, update_index=update_index, slots=16, sizes=SIZES, batch_size=2):
            counts[slot.task] += 1
    observed = np.array([counts[t] for t in SIZES])
    expected = observed.sum() * np.array([0.6, 0.3, 0.1])
    assert chisquare(observed, expected).pvalue > 0.001, counts


def test_schedule_is_a_pure_function_of_seed_step_slot():
    a = natural_plan(5, 17, 8, SIZES, 4)
    assert a == natural_plan(5, 17, 8, SIZES, 4)
    assert a != natural_plan(6, 17, 8, SIZES, 4) and a != natural_plan(5, 18, 8, SIZES, 4)
    # Independent of the number of workers: the slots of all workers make up the same update.
    for world in (1, 2, 4, 8):
        merged = sorted((s for r in range(world) for s in worker_slots(a, r, world)), key=lambda s: s.index)
        assert merged == a


@pytest.mark.parametrize("strategy", ["batch_heterogeneous", "batch_homogeneous", "dataset_homogeneous"])
def test_plan_update_splits_over_workers(strategy):
    plan = plan_update(SamplingSection(strategy=strategy), 2, 9, 40, 8, SIZES, 3)
    assert [s.index for s in plan] == list(range(8))
    for world in (1, 2, 4, 8):
        merged = sorted((s for r in range(world) for s in worker_slots(plan, r, world)), key=lambda s: s.index)
        assert merged == plan


def test_rows_are_distinct_and_in_range():
    sizes = {"tiny": 5, "big": 10**6}
    for slot in natural_plan(0, 0, 32, sizes, batch_size=8, policy="uniform"):
        assert len(set(slot.rows)) == len(slot.rows) == min(8, sizes[slot.task])
        assert all(0 <= r < sizes[slot.task] for r in slot.rows)


def test_worker_slots_refuses_uneven_split():
    with pytest.raises(ValueError, match="6 slots do not split evenly over 4 workers"):
        worker_slots(natural_plan(0, 0, 6, SIZES, 1), 0, 4)


def test_scaled_loss_is_one_at_chance_level():
    for n in (2, 3, 5, 17):
        logits = torch.zeros(4, n)       # a uniform guess has cross-entropy log(n)
        ce = torch.nn.functional.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
        assert float(scale_loss(ce, n)) == pytest.approx(1.0)
        assert float(ce) == pytest.approx(math.log(n))
    with pytest.raises(ValueError, match="n >= 2"):
        scale_loss(torch.tensor(1.0), 1)
