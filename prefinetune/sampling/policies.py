"""Task sampling: how likely each task is at update t, and which task an update trains on.

Policies give P(task) as a pure function of (update_index, total updates):

- ``natural``: P(T) ∝ min(N_T, cap), the task's training rows (Muppet's choice; T5's
  "examples-proportional mixing" when `examples_cap` is set).
- ``uniform``: every task alike.
- ``rates``: P(T) ∝ rate_T, an explicit mixture (`sampling.rates`, seqio's mixture rates); a rate
  "examples" is min(N_T, cap), in the same units as the numbers.
- ``temperature``: P(T) ∝ min(N_T, cap)^alpha. alpha = 1 is natural, alpha = 0 uniform. alpha is fixed or
  annealed from alpha_start (update index 0) to alpha_end (update index total) by a linear, exponential (geometric:
  alpha_start * (alpha_end / alpha_start)^(t / total)) or cosine schedule. Wolfe & Lundgaard (2022)
  found exponential 1.0 -> 0.1 best; it is the default when `policy: temperature` names no alpha.

Strategies (Muppet section 5.2) say how the policy fills the S slots of an update:

- ``batch_heterogeneous``: each slot draws its own task (the slot schedule in `schedule.py`).
- ``batch_homogeneous``: one task per update, drawn from the policy with a generator keyed on (seed, update_index).
- ``dataset_homogeneous``: the tasks one after another in a seeded order; task T trains for a block of
  consecutive updates whose length is its share of the run's updates (largest-remainder apportionment
  of the policy's probabilities averaged over the run), so the run is one pass through the task sequence.

Everything here is a pure function of (seed, update_index[, total]): a resumed run continues the same schedule.

    python -c "from prefinetune.sampling.policies import task_blocks, policy_probabilities as p; \
print(task_blocks(0, p('temperature', {'a': 900, 'b': 100}, alpha=0.5), 10))"
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple, Optional

import numpy as np

if TYPE_CHECKING:
    from prefinetune.recipe.config import SamplingSection

__all__ = ["POLICIES", "ANNEALS", "STRATEGIES", "annealed_alpha", "alpha_at", "policy_probabilities",
           "probabilities_at", "run_probabilities", "apportion", "task_order", "task_blocks",
           "dataset_blocks", "draw_task", "update_task"]

POLICIES = ("natural", "uniform", "temperature", "rates")
ANNEALS = ("none", "linear", "exponential", "cosine")
STRATEGIES = ("batch_heterogeneous", "batch_homogeneous", "dataset_homogeneous")

# Generator keys for draws that are not a slot's own ([seed, update_index, slot]). numpy's SeedSequence pads a
# shorter key with zeros, so these keys carry a 4th, non-zero word that no slot key has.
_NOT_A_SLOT = 0xFFFFFFFF
_UPDATE_TASK_STREAM = 1
_TASK_ORDER_STREAM = 2


def annealed_alpha(anneal: str, alpha_start: float, alpha_end: float, update_index: int, total: int) -> float:
    """alpha at `update_index` of `total`: exactly alpha_start at update index 0 and alpha_end from index `total` on."""
    if total < 1:
        raise ValueError(f"total updates must be >= 1, got {total}")
    frac = min(max(update_index / total, 0.0), 1.0)
    if frac == 0.0:
        return float(alpha_start)
    if frac == 1.0:
        return float(alpha_end)
    if anneal == "linear":
        return alpha_start * (1.0 - frac) + alpha_end * frac
    if anneal == "exponential":
        if alpha_start <= 0 or alpha_end <= 0:
            raise ValueError("exponential annealing needs alpha_start > 0 and alpha_end > 0")
        return math.exp(math.log(alpha_start) + frac * (math.log(alpha_end) - math.log(alpha_start)))
    if anneal == "cosine":
        return alpha_end + (alpha_start - alpha_end) * 0.5 * (1.0 + math.cos(math.pi * frac))
    raise ValueError(f"unknown anneal schedule {anneal!r}; known: linear, exponential, cosine")


def alpha_at(sampling: "SamplingSection", update_index: int, total: int) -> float:
    """The temperature exponent the recipe's sampling section gives at `update_index` of `total`."""
    if sampling.anneal == "none":
        return float(sampling.alpha)
    return annealed_alpha(sampling.anneal, sampling.alpha_start, sampling.alpha_end, update_index, total)


def _check_sizes(sizes: dict[str, int]) -> None:
    if not sizes:
        raise ValueError("task_probabilities needs at least one task")
    empty = sorted(t for t, n in sizes.items() if n <= 0)
    if empty:
        raise ValueError(f"tasks with no training rows cannot be sampled: {empty}")


def policy_probabilities(policy: str, sizes: dict[str, int], alpha: float = 1.0,
                         examples_cap: Optional[int] = None, rates=None) -> dict[str, float]:
    """P(task) in the order of `sizes`: natural, uniform, temperature with exponent `alpha`, or `rates`
    ({task: number or "examples"})."""
    _check_sizes(sizes)
    n = np.array([sizes[t] for t in sizes], dtype=np.float64)
    if examples_cap is not None:
        n = np.minimum(n, float(examples_cap))
    if policy == "natural":
        weights = n
    elif policy == "uniform":
        weights = np.ones(len(sizes))
    elif policy == "temperature":
        weights = (n / n.max()) ** alpha      # scaled first: no overflow for large alpha
    elif policy == "rates":
        rates = dict(rates or {})
        missing = [t for t in sizes if t not in rates]
        if missing:
            raise ValueError(f"policy 'rates' has no rate for tasks {missing}")
        weights = np.array([n[i] if rates[t] == "examples" else float(rates[t]) for i, t in enumerate(sizes)])
        if not weights.sum() > 0:
            raise ValueError(f"policy 'rates': every rate is 0 ({rates})")
    else:
        raise ValueError(f"unknown sampling policy {policy!r}; known: {', '.join(POLICIES)}")
    return dict(zip(sizes, (weights / weights.sum()).tolist()))


def probabilities_at(sampling: "SamplingSection", sizes: dict[str, int], update_index: int,
                     total: int) -> dict[str, float]:
    """P(task) at update `update_index` of `total` under the recipe's sampling section."""
    alpha = alpha_at(sampling, update_index, total) if sampling.policy == "temperature" else 1.0
    return policy_probabilities(sampling.policy, sizes, alpha, sampling.examples_cap, sampling.rates)


def run_probabilities(sampling: "SamplingSection", sizes: dict[str, int], total: int) -> dict[str, float]:
    """P(task) averaged over updates 0..total-1: each task's expected share of the whole run."""
    if sampling.policy != "temperature" or sampling.anneal == "none":
        return probabilities_at(sampling, sizes, 0, total)
    _check_sizes(sizes)
    n = np.array([sizes[t] for t in sizes], dtype=np.float64)
    if sampling.examples_cap is not None:
        n = np.minimum(n, float(sampling.examples_cap))
    alphas = np.array([alpha_at(sampling, t, total) for t in range(total)])
    weights = (n / n.max())[None, :] ** alphas[:, None]
    mean = (weights / weights.sum(axis=1, keepdims=True)).mean(axis=0)
    return dict(zip(sizes, mean.tolist()))


def apportion(probabilities: dict[str, float], total: int) -> dict[str, int]:
    """Split `total` whole units in proportion to `probabilities` (Hamilton's largest-remainder method).

    Each task gets floor(p * total); the units left go one each to the largest remainders (ties to the
    earlier task). The parts sum to `total`; a task whose quota is below one may get 0.
    """
    names = list(probabilities)
    p = np.array([probabilities[t] for t in names], dtype=np.float64)
    quotas = p / p.sum() * total
    parts = np.floor(quotas).astype(np.int64)
    left = total - int(parts.sum())
    order = sorted(range(len(names)), key=lambda i: (-(quotas[i] - parts[i]), i))
    for i in order[:left]:
        parts[i] += 1
    return {t: int(k) for t, k in zip(names, parts)}


def task_order(seed: int, names: list[str]) -> list[str]:
    """The seeded order in which dataset-homogeneous training visits the tasks."""
    rng = np.random.default_rng([seed, _NOT_A_SLOT, _NOT_A_SLOT, _TASK_ORDER_STREAM])
    return [names[i] for i in rng.permutation(len(names))]


def task_blocks(seed: int, probabilities: dict[str, float], total: int) -> list[tuple[str, int, int]]:
    """Dataset-homogeneous plan: (task, first update, updates) in training order; tasks apportioned 0
    updates are left out. The blocks tile updates 0..total-1."""
    parts = apportion(probabilities, total)
    blocks, start = [], 0
    for task in task_order(seed, list(probabilities)):
        if parts[task]:
            blocks.append((task, start, parts[task]))
            start += parts[task]
    return blocks


def dataset_blocks(sampling: "SamplingSection", seed: int, sizes: dict[str, int],
                   total: int) -> list[tuple[str, int, int]]:
    """The recipe's dataset-homogeneous plan: `task_blocks` of the run-averaged probabilities."""
    return list(_dataset_blocks(_Frozen.of(sampling), seed, tuple(sizes.items()), total))


def draw_task(seed: int, update_index: int, probabilities: dict[str, float]) -> str:
    """Batch-homogeneous: the one task of update `update_index`, drawn from `probabilities`."""
    rng = np.random.default_rng([seed, update_index, _NOT_A_SLOT, _UPDATE_TASK_STREAM])
    names = list(probabilities)
    return names[int(rng.choice(len(names), p=np.array([probabilities[t] for t in names])))]


def update_task(sampling: "SamplingSection", seed: int, update_index: int, total: int, sizes: dict[str, int]) -> str:
    """The task every slot of update `update_index` trains on, for the homogeneous strategies."""
    if sampling.strategy == "batch_homogeneous":
        return draw_task(seed, update_index, probabilities_at(sampling, sizes, update_index, total))
    if sampling.strategy == "dataset_homogeneous":
        if not 0 <= update_index < total:
            raise ValueError(f"dataset_homogeneous: update index {update_index} is outside the run's updates "
                             f"0..{total - 1}")
        blocks = _dataset_blocks(_Frozen.of(sampling), seed, tuple(sizes.items()), total)
        starts = [first for _, first, _ in blocks]
        return blocks[int(np.searchsorted(starts, update_index, side="right")) - 1][0]
    raise ValueError(f"strategy {sampling.strategy!r} draws a task per slot, not per update")


class _Frozen(NamedTuple):
    """The fields of a sampling section that set probabilities, hashable so plans can be cached."""
    policy: str
    alpha: float
    anneal: str
    alpha_start: float
    alpha_end: float
    examples_cap: Optional[int]
    rates: Optional[tuple]

    @classmethod
    def of(cls, sampling) -> "_Frozen":
        values = {f: getattr(sampling, f) for f in cls._fields}
        values["rates"] = tuple(values["rates"].items()) if values["rates"] is not None else None
        return cls(**values)


@lru_cache(maxsize=16)
def _dataset_blocks(sampling: _Frozen, seed: int, sizes: tuple[tuple[str, int], ...],
                    total: int) -> tuple[tuple[str, int, int], ...]:
    return tuple(task_blocks(seed, run_probabilities(sampling, dict(sizes), total), total))
