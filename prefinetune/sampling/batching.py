"""Token-budget, length-bucketed rows for one slot's homogeneous batch, and its padding efficiency.

A slot's batch is padded to its longest row, so it computes rows x longest length tokens. With a
token budget, rows of similar length are batched together and a slot holds as many as fit:

    buckets = LengthBuckets.from_lengths(split.lengths, 8)     # once per task: 8 least-padding buckets
    rows = budget_rows(rng, buckets, token_budget=4096)        # per slot, with the schedule's rng
    padding_efficiency(split.lengths[list(rows)])              # real tokens / tokens computed

From a recipe, `prefinetune.run.step.TrainData` builds each task's buckets (train.length_buckets, None
meaning 8) when train.token_budget is set and hands the schedule `budget_rows` as its row drawer;
`train.token_budget: auto` (the default) gives each task the budget whose slots hold batch_size rows
on average (`budget_for_rows`, at most batch_size x max_length); with `token_budget: null` the
schedule draws batch_size random rows (`plain_rows`).

How a slot's rows are drawn (`budget_rows`, pure given the rng):
- Bucket b holds the rows with boundaries[b-1] < length <= boundaries[b]; its longest row is L_b.
- A batch from bucket b has k_b = min(n_b, max(1, token_budget // L_b), max_rows) distinct rows drawn
  uniformly from the bucket, so rows x longest length <= k_b x L_b <= token_budget, except a bucket
  whose rows are each longer than the budget: those go one row per batch.
- Bucket b is drawn with probability proportional to n_b / k_b (rows / rows per batch). Then every
  row of the task is in a slot with the same probability, 1 / sum_b(n_b / k_b): short rows, which come
  many to a batch, are not over-sampled. (Drawing b in proportion to n_b alone would sample rows of
  length-16 buckets 8 times as often as rows of length-128 ones under the same budget.)
- k_b is fixed per bucket (from L_b, not from the rows drawn), which is what makes the rate exact.

Loss weighting: slots now hold different numbers of rows. With a per-slot MEAN loss, a row in a
k-row slot weighs 1/k, so short rows (large k) would count less than long ones in the expected
gradient. Weighting a slot's mean loss by len(rows) / expected_rows(buckets, budget) (i.e. summing
its per-row losses and dividing by the task's expected rows per slot) makes the expected gradient the
plain mean over the task's rows again, as with fixed batch_size rows.

Bucket boundaries (`least_padding_boundaries`, the default): for a count m, the m boundaries that
minimise the padding sum_rows(L_bucket - length) over the task's own lengths (an exact dynamic
programme over the distinct lengths), each bucket holding at least 1/(4m) of the rows so that no
bucket is so small that its rows always come together. Tasks differ (CoLA's rows are ~11 tokens, BoolQ's
~108), so boundaries are chosen per task; explicit boundaries can be passed instead.

Padding efficiency (`padding_efficiency`): real tokens / tokens computed. Row lengths suffice for
classification, regression, span windows and summarization sources. A multiple-choice row is K
sequences and its `length` is the longest choice: pass per-row lists of per-choice lengths for the
exact figure (collate builds [B*K, L]: K the most choices, L the longest choice). With row lengths
only, the figure is an upper bound: it counts no padding between the shorter and longest choices of
a row. With multiple choice the budget bounds rows x L, the tensor is K times that: pass
token_budget // K where the budget should bound the [B*K, L] tensor.

Without a budget, `plain_rows` is today's behaviour: `batch_size` distinct rows, uniform.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

__all__ = ["DEFAULT_BUCKETS", "check_boundaries", "bucket_index", "least_padding_boundaries", "LengthBuckets",
           "rows_per_batch", "bucket_probabilities", "expected_rows", "budget_for_rows", "budget_rows", "plain_rows",
           "batch_tokens", "padding_efficiency"]

DEFAULT_BUCKETS = 8
_MAX_DP_LENGTHS = 1024  # distinct candidate boundaries the dynamic programme works over (O(m * d^2))

Boundaries = Union[int, Sequence[int], None]


def check_boundaries(boundaries: Sequence[int]) -> tuple[int, ...]:
    """Bucket upper bounds as a tuple of ints: at least one, positive integers, strictly increasing."""
    values = list(boundaries)
    if not values:
        raise ValueError("bucket boundaries: need at least one (the last one at least the longest row)")
    for v in values:
        if isinstance(v, bool) or not float(v).is_integer():
            raise ValueError(f"bucket boundaries must be whole numbers of tokens, got {v!r} in {values}")
    ints = [int(v) for v in values]
    if ints[0] < 1:
        raise ValueError(f"bucket boundaries must be positive, got {ints[0]} in {ints}")
    for prev, cur in zip(ints, ints[1:]):
        if cur <= prev:
            raise ValueError(f"bucket boundaries must be strictly increasing: {cur} follows {prev} in {ints}")
    return tuple(ints)


def _check_lengths(lengths) -> np.ndarray:
    arr = np.asarray(lengths)
    if arr.ndim != 1:
        raise ValueError(f"lengths must be one number per row (1-D), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("lengths: a task with no rows cannot be bucketed")
    if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0:
        raise ValueError("lengths must be non-negative integers (tokens per row)")
    return arr.astype(np.int64)


def bucket_index(lengths, boundaries: Sequence[int]) -> np.ndarray:
    """Bucket of each row: the first b with length <= boundaries[b]."""
    bounds = check_boundaries(boundaries)
    arr = _check_lengths(lengths)
    if arr.max() > bounds[-1]:
        raise ValueError(f"a row of {int(arr.max())} tokens is longer than the last bucket boundary "
                         f"{bounds[-1]}: the last boundary must be at least the longest row")
    return np.searchsorted(np.asarray(bounds), arr, side="left")


def _padding_costs(values: np.ndarray, counts: np.ndarray, lengths_sum: np.ndarray, min_rows: int) -> np.ndarray:
    """cost[i, j]: padding of one bucket holding distinct lengths i..j (inf where i > j or too few rows)."""
    rows = np.concatenate([[0], np.cumsum(counts)])
    tokens = np.concatenate([[0], np.cumsum(lengths_sum)])
    i, j = np.arange(len(values))[:, None], np.arange(len(values))[None, :]
    in_bucket = rows[j + 1] - rows[i]
    cost = (values[j] * in_bucket - (tokens[j + 1] - tokens[i])).astype(np.float64)
    cost[(i > j) | (in_bucket < min_rows)] = np.inf
    return cost


def least_padding_boundaries(lengths, count: int = DEFAULT_BUCKETS,
                             min_rows: Optional[int] = None) -> tuple[int, ...]:
    """At most `count` boundaries minimising sum_rows(bucket's longest - length), every bucket holding
    at least `min_rows` rows (default ceil(rows / (4 * count))). The last boundary is the longest row."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"bucket count must be a positive integer, got {count!r}")
    arr = _check_lengths(lengths)
    min_rows = math.ceil(arr.size / (4 * count)) if min_rows is None else max(1, int(min_rows))
    step = max(1, math.ceil(int(arr.max()) / _MAX_DP_LENGTHS))
    values, counts = np.unique(-(-arr // step) * step, return_counts=True)   # candidate boundaries
    sums = np.bincount(np.searchsorted(values, arr), weights=arr, minlength=len(values))
    cost = _padding_costs(values, counts, sums, min(min_rows, arr.size))
    best, starts = cost[0].copy(), [np.zeros(len(values), dtype=np.int64)]
    for _ in range(1, min(count, len(values))):
        total = best[:-1, None] + cost[1:, :]          # row s-1: last bucket starts at distinct length s
        start = np.argmin(total, axis=0) + 1
        extended = total[start - 1, np.arange(len(values))]
        better = extended < best
        starts.append(np.where(better, start, -1))
        best = np.where(better, extended, best)
    return _trace_boundaries(values, starts)


def _trace_boundaries(values: np.ndarray, starts: list[np.ndarray]) -> tuple[int, ...]:
    """Walk the programme's choices back from the longest length to the bucket ends."""
    ends, j, layer = [], len(values) - 1, len(starts) - 1
    while j >= 0:
        while layer > 0 and starts[layer][j] < 0:     # this many buckets did not help: fewer did as well
            layer -= 1
        ends.append(int(values[j]))
        j = int(starts[layer][j]) - 1 if layer > 0 else -1
        layer -= 1
    return tuple(reversed(ends))


@dataclass(frozen=True, eq=False)
class LengthBuckets:
    """A task's rows grouped by length: boundaries, row ids of each bucket, each bucket's longest row."""
    boundaries: tuple[int, ...]
    rows: tuple[np.ndarray, ...]      # ascending row ids, one array per bucket (may be empty)
    longest: tuple[int, ...]          # longest row of each bucket (0 when empty)

    @classmethod
    def from_lengths(cls, lengths, boundaries: Boundaries = None) -> "LengthBuckets":
        """Group rows by length. `boundaries`: None (DEFAULT_BUCKETS least-padding buckets), a count
        (that many least-padding buckets, 1: no bucketing), or explicit increasing upper bounds."""
        arr = _check_lengths(lengths)
        if boundaries is None:
            bounds = least_padding_boundaries(arr, DEFAULT_BUCKETS)
        elif isinstance(boundaries, (int, np.integer, bool)):
            bounds = least_padding_boundaries(arr, boundaries)
        else:
            bounds = check_boundaries(boundaries)
        index = bucket_index(arr, bounds)
        rows = tuple(np.flatnonzero(index == b) for b in range(len(bounds)))
        longest = tuple(int(arr[r].max()) if r.size else 0 for r in rows)
        return cls(bounds, rows, longest)

    @property
    def size(self) -> int:
        """Rows of the task."""
        return int(sum(r.size for r in self.rows))

    @property
    def counts(self) -> np.ndarray:
        """Rows per bucket."""
        return np.array([r.size for r in self.rows], dtype=np.int64)


def _check_budget(token_budget: int, max_rows: Optional[int]) -> None:
    if isinstance(token_budget, bool) or not isinstance(token_budget, (int, np.integer)) or token_budget < 1:
        raise ValueError(f"token_budget must be a positive number of tokens, got {token_budget!r}")
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer))
                                 or max_rows < 1):
        raise ValueError(f"max_rows must be a positive integer or None, got {max_rows!r}")


def rows_per_batch(buckets: LengthBuckets, token_budget: int, max_rows: Optional[int] = None) -> np.ndarray:
    """k_b = min(rows in b, max(1, budget // longest_b), max_rows); 0 for an empty bucket."""
    _check_budget(token_budget, max_rows)
    longest = np.maximum(np.array(buckets.longest, dtype=np.int64), 1)
    k = np.minimum(buckets.counts, np.maximum(1, token_budget // longest))
    return k if max_rows is None else np.minimum(k, max_rows)


def bucket_probabilities(buckets: LengthBuckets, token_budget: int, max_rows: Optional[int] = None) -> np.ndarray:
    """P(bucket) proportional to rows / rows per batch: every row of the task is drawn equally often."""
    k = rows_per_batch(buckets, token_budget, max_rows)
    weights = np.divide(buckets.counts, k, out=np.zeros(len(k)), where=k > 0)
    return weights / weights.sum()


def expected_rows(buckets: LengthBuckets, token_budget: int, max_rows: Optional[int] = None) -> float:
    """Mean rows per slot of the task: sum_b P(b) k_b (= rows / sum_b(n_b / k_b))."""
    k = rows_per_batch(buckets, token_budget, max_rows)
    return float((bucket_probabilities(buckets, token_budget, max_rows) * k).sum())


def budget_for_rows(buckets: LengthBuckets, rows: int, ceiling: int) -> int:
    """The smallest token budget (at most `ceiling`) whose slots hold `rows` rows on average: what
    `train.token_budget: auto` gives each task, so a slot keeps batch_size rows on average, rows of like
    length batched together. expected_rows grows with the budget, so a bisection finds it."""
    if rows < 1 or ceiling < 1:
        raise ValueError(f"budget_for_rows needs rows >= 1 and a ceiling >= 1, got {rows}, {ceiling}")
    low, high = 1, max(int(ceiling), 1)
    if expected_rows(buckets, high) < rows:
        return high
    while low < high:
        middle = (low + high) // 2
        if expected_rows(buckets, middle) >= rows:
            high = middle
        else:
            low = middle + 1
    return low


def budget_rows(rng: np.random.Generator, buckets: LengthBuckets, token_budget: int,
                max_rows: Optional[int] = None) -> tuple[int, ...]:
    """One slot's rows: a bucket (see `bucket_probabilities`), then k_b distinct rows of it, uniformly."""
    k = rows_per_batch(buckets, token_budget, max_rows)
    p = bucket_probabilities(buckets, token_budget, max_rows)
    b = int(rng.choice(len(p), p=p))
    return tuple(int(r) for r in rng.choice(buckets.rows[b], size=int(k[b]), replace=False))


def plain_rows(rng: np.random.Generator, size: int, batch_size: int) -> tuple[int, ...]:
    """Without a budget: min(batch_size, size) distinct rows of 0..size-1, uniformly (the schedule's rows)."""
    return tuple(int(r) for r in rng.choice(size, size=min(batch_size, size), replace=False))


def batch_tokens(lengths) -> tuple[int, int]:
    """(real tokens, tokens computed) of one batch padded to its longest row. `lengths`: tokens per row,
    or per row a list of per-choice lengths (multiple choice: computed = rows x most choices x longest)."""
    if len(lengths) == 0:
        return 0, 0
    if np.ndim(lengths[0]) == 0:
        arr = np.asarray(lengths, dtype=np.int64)
        return int(arr.sum()), int(arr.size * arr.max())
    choices = [np.asarray(row, dtype=np.int64) for row in lengths]
    longest = max((int(c.max()) for c in choices if c.size), default=0)
    return int(sum(c.sum() for c in choices)), len(choices) * max(c.size for c in choices) * longest


def padding_efficiency(lengths) -> float:
    """Real tokens / tokens computed of one batch (see `batch_tokens`); sum both over batches to
    log a task's efficiency over many slots."""
    real, computed = batch_tokens(lengths)
    if computed == 0:
        raise ValueError("padding_efficiency of an empty batch (no rows or no tokens)")
    return real / computed
