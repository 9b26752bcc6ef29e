"""Token-budget, length-bucketed rows: the budget holds, rows are valid and sampled uniformly, bucketing
pads less than random rows, the boundaries are the least-padding ones, and the config fields validate.

    python -m pytest tests/sampling/test_batching.py -q
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chi2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny import tiny_recipe  # noqa: E402

from prefinetune.recipe.config import RecipeError, recipe_from_dict  # noqa: E402
from prefinetune.sampling.batching import (  # noqa: E402
    LengthBuckets,
    batch_tokens,
    bucket_index,
    bucket_probabilities,
    budget_for_rows,
    budget_rows,
    check_boundaries,
    expected_rows,
    least_padding_boundaries,
    padding_efficiency,
    plain_rows,
    rows_per_batch,
)


def skewed_lengths(n: int = 3000, seed: int = 0, max_length: int = 128) -> np.ndarray:
    """Log-normal token counts: mostly short rows and a long tail cut at max_length, like real text."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.lognormal(np.log(20), 0.7, size=n)), 3, max_length).astype(np.int64)


# ---------------------------------------------------------------- boundaries


@pytest.mark.parametrize("bounds, message", [
    ([], "at least one"),
    ([8, 0], "strictly increasing: 0 follows 8"),
    ([0, 8], "positive"),
    ([8, 16, 16], "strictly increasing: 16 follows 16"),
    ([8, 12.5], "whole numbers"),
])
def test_bad_boundaries_are_refused_with_the_reason(bounds, message):
    with pytest.raises(ValueError, match=message):
        check_boundaries(bounds)
    with pytest.raises(ValueError, match=message):
        LengthBuckets.from_lengths(np.array([3, 5]), bounds)


def test_the_last_boundary_must_hold_the_longest_row():
    with pytest.raises(ValueError, match=r"row of 40 tokens is longer than the last bucket boundary 32"):
        bucket_index(np.array([3, 40]), [16, 32])


def test_bad_lengths_and_counts_are_refused():
    with pytest.raises(ValueError, match="no rows"):
        LengthBuckets.from_lengths(np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="1-D"):
        LengthBuckets.from_lengths(np.ones((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="non-negative integers"):
        LengthBuckets.from_lengths(np.array([3.5, 2.0]))
    with pytest.raises(ValueError, match="bucket count must be a positive integer"):
        LengthBuckets.from_lengths(np.array([3, 5]), 0)


def test_bucket_index_puts_a_length_in_the_first_bucket_that_holds_it():
    assert bucket_index(np.array([1, 8, 9, 16, 17, 32]), [8, 16, 32]).tolist() == [0, 0, 1, 1, 2, 2]


def _padding(lengths: np.ndarray, bounds) -> int:
    index = bucket_index(lengths, bounds)
    return int(sum(lengths[index == b].max() * (index == b).sum() - lengths[index == b].sum()
                   for b in np.unique(index)))


@pytest.mark.parametrize("seed", range(5))
def test_least_padding_boundaries_match_brute_force(seed):
    lengths = np.random.default_rng(seed).integers(1, 20, size=60)
    values = np.unique(lengths)
    for count in (1, 2, 3, 4):
        got = least_padding_boundaries(lengths, count, min_rows=1)
        assert got[-1] == lengths.max() and len(got) <= count
        best = min(_padding(lengths, list(inner) + [int(values[-1])])
                   for k in range(count) for inner in itertools.combinations(values[:-1].tolist(), k))
        assert _padding(lengths, got) == best


def test_least_padding_boundaries_keep_buckets_from_getting_small():
    lengths = skewed_lengths(800)
    for count in (4, 8, 16):
        counts = LengthBuckets.from_lengths(lengths, count).counts
        assert len(counts) <= count and counts.min() >= np.ceil(len(lengths) / (4 * count))
    assert least_padding_boundaries(lengths, 1) == (int(lengths.max()),)
    few = np.array([4, 4, 9, 9, 9, 30])
    assert least_padding_boundaries(few, 8, min_rows=1) == (4, 9, 30)


def test_buckets_partition_the_rows():
    lengths = skewed_lengths(500)
    buckets = LengthBuckets.from_lengths(lengths, [16, 32, 64, 128])
    every = np.sort(np.concatenate(buckets.rows))
    assert every.tolist() == list(range(500)) and buckets.size == 500
    for rows, bound, longest in zip(buckets.rows, buckets.boundaries, buckets.longest):
        assert (lengths[rows] <= bound).all() and longest == lengths[rows].max()


# ---------------------------------------------------------------- rows of a slot


@pytest.mark.parametrize("budget", [8, 64, 300, 2000])
def test_every_batch_keeps_to_the_budget_with_distinct_valid_rows(budget):
    lengths = skewed_lengths(1000)
    buckets = LengthBuckets.from_lengths(lengths, 8)
    rng = np.random.default_rng(1)
    for _ in range(500):
        rows = budget_rows(rng, buckets, budget)
        batch = lengths[list(rows)]
        assert len(rows) >= 1 and len(set(rows)) == len(rows)
        assert all(0 <= r < len(lengths) for r in rows)
        assert len(rows) * batch.max() <= budget or len(rows) == 1


def test_max_rows_caps_a_batch_of_short_rows():
    lengths = np.full(100, 4)
    buckets = LengthBuckets.from_lengths(lengths)
    assert len(budget_rows(np.random.default_rng(0), buckets, 400)) == 100
    assert len(budget_rows(np.random.default_rng(0), buckets, 400, max_rows=10)) == 10
    assert len(budget_rows(np.random.default_rng(0), buckets, 400, max_rows=1000)) == 100


def test_rows_are_drawn_at_one_rate_whatever_their_length():
    """Chi-square over the rows: short rows come many to a batch, yet are not drawn more often."""
    lengths = skewed_lengths(400, seed=3)
    buckets = LengthBuckets.from_lengths(lengths, 6)
    assert len(set(rows_per_batch(buckets, 256).tolist())) > 2        # batches really differ in rows
    rng = np.random.default_rng(7)
    counts = np.zeros(len(lengths))
    draws = 20000
    for _ in range(draws):
        counts[list(budget_rows(rng, buckets, 256))] += 1
    expected = counts.sum() / len(lengths)
    statistic = ((counts - expected) ** 2 / expected).sum()
    assert chi2.sf(statistic, df=len(lengths) - 1) > 1e-3
    short, long = lengths <= np.median(lengths), lengths > np.median(lengths)
    assert abs(counts[short].mean() / counts[long].mean() - 1) < 0.05
    rate = 1 / (buckets.counts / rows_per_batch(buckets, 256)).sum()   # P(a given row is in a slot)
    assert counts.mean() / draws == pytest.approx(rate, rel=0.02)


def test_slot_losses_weighted_by_rows_give_the_plain_mean_over_rows():
    """Mean over a slot's rows, weighted by rows / expected_rows: unbiased for the mean over the task."""
    lengths = skewed_lengths(2000, seed=4)
    values = lengths.astype(np.float64)                  # a per-row "loss" tied to length: the worst case
    buckets = LengthBuckets.from_lengths(lengths, 8)
    mean_rows = expected_rows(buckets, 300)
    assert mean_rows == pytest.approx(buckets.size / (buckets.counts / rows_per_batch(buckets, 300)).sum())
    rng = np.random.default_rng(11)
    plain, weighted = [], []
    for _ in range(20000):
        rows = list(budget_rows(rng, buckets, 300))
        plain.append(values[rows].mean())
        weighted.append(values[rows].mean() * len(rows) / mean_rows)
    assert np.mean(weighted) == pytest.approx(values.mean(), rel=0.01)
    assert np.mean(plain) > 1.2 * values.mean()          # unweighted, long rows would count more


def test_bucket_probabilities_follow_rows_per_batch():
    buckets = LengthBuckets.from_lengths(np.array([10] * 40 + [100] * 40), [10, 100])
    assert rows_per_batch(buckets, 200).tolist() == [20, 2]
    assert bucket_probabilities(buckets, 200).tolist() == pytest.approx([2 / 22, 20 / 22])


def test_bucketing_pads_less_than_random_rows():
    lengths = skewed_lengths(3000)
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    buckets = LengthBuckets.from_lengths(lengths, 8)
    budget = 16 * int(np.median(lengths))
    random_tokens = np.sum([batch_tokens(lengths[list(plain_rows(rng_a, len(lengths), 16))]) for _ in range(500)], 0)
    bucket_tokens = np.sum([batch_tokens(lengths[list(budget_rows(rng_b, buckets, budget))]) for _ in range(500)], 0)
    random_eff, bucket_eff = random_tokens[0] / random_tokens[1], bucket_tokens[0] / bucket_tokens[1]
    assert random_eff < 0.6 and bucket_eff > 0.85
    one_bucket = LengthBuckets.from_lengths(lengths, 1)
    assert one_bucket.counts.tolist() == [3000]


def test_rows_are_a_pure_function_of_the_rng_seed():
    lengths = skewed_lengths(1000)
    buckets = LengthBuckets.from_lengths(lengths)

    def rows(seed):
        return budget_rows(np.random.default_rng(seed), buckets, 512)

    assert rows([0, 3, 1]) == rows([0, 3, 1])
    assert len({rows([0, step, 1]) for step in range(20)}) == 20
    again = LengthBuckets.from_lengths(lengths)
    assert budget_rows(np.random.default_rng(5), again, 512) == rows(5)


def test_without_a_budget_rows_are_todays_plain_draw():
    for n, size in [(100, 16), (5, 16)]:
        expected = tuple(int(r) for r in np.random.default_rng(9).choice(n, size=min(size, n), replace=False))
        assert plain_rows(np.random.default_rng(9), n, size) == expected


def test_budgets_refuse_what_cannot_work():
    buckets = LengthBuckets.from_lengths(skewed_lengths(100))
    with pytest.raises(ValueError, match="token_budget must be a positive number"):
        budget_rows(np.random.default_rng(0), buckets, 0)
    with pytest.raises(ValueError, match="max_rows must be a positive integer"):
        budget_rows(np.random.default_rng(0), buckets, 256, max_rows=0)


# ---------------------------------------------------------------- padding efficiency


def test_padding_efficiency_of_rows_and_of_choices():
    assert batch_tokens([3, 5, 8]) == (16, 24)
    assert padding_efficiency(np.array([4, 4])) == 1.0
    # multiple choice: 2 rows, the most choices 3, the longest choice 6 -> 2 x 3 x 6 computed
    assert batch_tokens([[6, 2, 4], [5, 5]]) == (22, 36)
    assert padding_efficiency([[6, 2, 4], [5, 5]]) == pytest.approx(22 / 36)
    assert padding_efficiency([6, 5]) > padding_efficiency([[6, 2, 4], [5, 5]])   # row lengths: an upper bound
    with pytest.raises(ValueError, match="empty batch"):
        padding_efficiency([])


# ---------------------------------------------------------------- config


def test_train_defaults_budget_each_task_and_null_keeps_random_rows():
    train = recipe_from_dict(tiny_recipe()).train
    assert train.token_budget == "auto" and train.length_buckets is None
    assert recipe_from_dict(tiny_recipe(train={"token_budget": None})).train.token_budget is None
    budget = recipe_from_dict(tiny_recipe(train={"token_budget": 4096})).train
    assert LengthBuckets.from_lengths(skewed_lengths(), budget.length_buckets).boundaries == \
        LengthBuckets.from_lengths(skewed_lengths(), 8).boundaries        # None: 8 least-padding buckets
    for train in ({}, {"token_budget": None}, {"token_budget": 4096}, {"token_budget": 4096, "length_buckets": 16}):
        recipe = recipe_from_dict(tiny_recipe(train=train))
        assert recipe_from_dict(recipe.model_dump(mode="json")) == recipe     # travels to workers as data
    train = recipe_from_dict(tiny_recipe(train={"token_budget": 4096, "length_buckets": 16})).train
    assert (train.token_budget, train.length_buckets) == (4096, 16)


@pytest.mark.parametrize("train, message", [
    ({"token_budget": 4}, r"key 'train\.token_budget': .*Input should be greater than or equal to 8"),
    ({"token_budget": 512, "length_buckets": 0}, r"key 'train\.length_buckets': Input should be greater"),
    ({"token_budget": 512, "length_buckets": 500}, r"key 'train\.length_buckets': Input should be less"),
    ({"token_budget": None, "length_buckets": 4}, r"key 'train': .*length_buckets acts only with a token_budget"),
    ({"token_budget": "big"}, r"key 'train\.token_budget': Input should be 'auto'; or Input should be a valid"),
])
def test_bad_budget_settings_name_the_key(train, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(tiny_recipe(train=train))


@pytest.mark.parametrize("rows", [1, 4, 16, 64])
def test_budget_for_rows_is_the_smallest_budget_that_holds_rows_on_average(rows):
    buckets = LengthBuckets.from_lengths(skewed_lengths(), 8)
    budget = budget_for_rows(buckets, rows, ceiling=rows * 512)
    assert expected_rows(buckets, budget) >= rows
    assert budget == 1 or expected_rows(buckets, budget - 1) < rows
    assert budget_for_rows(buckets, rows, ceiling=8) == min(budget, 8)       # the ceiling caps it


def test_auto_budget_slots_hold_batch_size_rows_on_average_with_less_padding():
    from prefinetune.run.step import TrainData

    lengths = skewed_lengths()

    class Split:
        def __init__(self):
            self.lengths = lengths

        def __len__(self):
            return len(lengths)

    recipe = recipe_from_dict(tiny_recipe())
    task = recipe.tasks[0].name
    data = TrainData({task: Split()}, recipe.tasks[:1], 0, "auto", None, batch_size=16, max_length=512)
    rng = np.random.default_rng(0)
    draws = [data.draw(task, rng) for _ in range(3000)]
    assert np.mean([len(d) for d in draws]) == pytest.approx(16, rel=0.1)
    auto = sum(batch_tokens(lengths[list(d)])[0] for d in draws) / sum(batch_tokens(lengths[list(d)])[1] for d in draws)
    plain = [lengths[list(plain_rows(rng, len(lengths), 16))] for _ in range(3000)]
    random_rows = sum(batch_tokens(x)[0] for x in plain) / sum(batch_tokens(x)[1] for x in plain)
    assert auto > random_rows + 0.2, (auto, random_rows)
