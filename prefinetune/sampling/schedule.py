"""The slot schedule: which task and which rows fill each slot of each update.

An update has S slots (S independent of the number of workers W). Slot k of update t is a pure
function of (seed, t, k[, total updates]): its task comes from the recipe's sampling policy and
strategy (`prefinetune.sampling.policies`), its rows uniformly without replacement from that task's
training split. Worker r runs slots r, r+W, r+2W, ... Because nothing depends on W or on earlier
draws, a run resumed on a different number of workers makes the same updates, and the schedule's
whole state is the update counter.

`plan_update(sampling, ...)` is the entry for a recipe's `sampling` section (policies natural, uniform,
temperature with annealing; strategies batch_heterogeneous, batch_homogeneous, dataset_homogeneous).

    >>> from prefinetune.recipe.config import SamplingSection
    >>> plan = plan_update(SamplingSection(), seed=0, update_index=3, total_updates=10, slots=4,
    ...                    sizes={"a": 100, "b": 10}, batch_size=2)
    >>> plan == plan_update(SamplingSection(), 0, 3, 10, 4, {"a": 100, "b": 10}, 2)
    True

    python -m pytest tests/sampling/test_schedule.py tests/sampling/test_sampling.py -q
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from prefinetune.sampling.batching import plain_rows
from prefinetune.sampling.policies import probabilities_at, update_task

if TYPE_CHECKING:
    from prefinetune.recipe.config import SamplingSection

__all__ = ["Slot", "draw_rows", "slot_rows", "slot_plan", "plan_update", "worker_slots"]


@dataclass(frozen=True)
class Slot:
    """One micro-step's work: a homogeneous batch of `rows` from one task."""
    index: int
    task: str
    rows: tuple[int, ...]


def draw_rows(rng: np.random.Generator, task: str, n: int, batch_size: int, draw=None) -> tuple[int, ...]:
    """`batch_size` (at most n) distinct random rows, or what `draw(task, rng)` picks (token budgets)."""
    if draw is not None:
        return tuple(int(r) for r in draw(task, rng))
    return plain_rows(rng, n, batch_size)


def slot_rows(seed: int, update_index: int, slot: int, n: int, batch_size: int, task: str = "",
              draw=None) -> tuple[int, ...]:
    """Rows of slot `slot` of update `update_index` when its task is fixed for the whole update."""
    return draw_rows(np.random.default_rng([seed, update_index, slot]), task, n, batch_size, draw)


def slot_plan(seed: int, update_index: int, slot: int, probabilities: dict[str, float],
              sizes: dict[str, int], batch_size: int, draw=None) -> Slot:
    """Slot `slot` of update `update_index`: a task drawn from `probabilities`, then its rows (`draw(task, rng)`
    picks them under a token budget; the same rng keeps the slot a pure function of (seed, update_index, slot))."""
    rng = np.random.default_rng([seed, update_index, slot])
    names = list(probabilities)
    task = names[int(rng.choice(len(names), p=np.array([probabilities[t] for t in names])))]
    return Slot(slot, task, draw_rows(rng, task, sizes[task], batch_size, draw))


def plan_update(sampling: "SamplingSection", seed: int, update_index: int, total_updates: int, slots: int,
                sizes: dict[str, int], batch_size: int, draw=None) -> list[Slot]:
    """All slots of update `update_index` (0-based) of a run of `total_updates`, under the recipe's sampling
    section: its policy (with alpha at this update) and its strategy."""
    if sampling.policy == "mt_uncertainty":
        raise ValueError("policy 'mt_uncertainty' needs the model's predictions to pick a slot's task: "
                         "plan its updates with prefinetune.sampling.uncertainty.UncertaintySampler")
    if sampling.strategy == "batch_heterogeneous":
        probabilities = probabilities_at(sampling, sizes, update_index, total_updates)
        return [slot_plan(seed, update_index, k, probabilities, sizes, batch_size, draw) for k in range(slots)]
    task = update_task(sampling, seed, update_index, total_updates, sizes)
    return [Slot(k, task, slot_rows(seed, update_index, k, sizes[task], batch_size, task, draw)) for k in range(slots)]


def worker_slots(plan: list[Slot], rank: int, world_size: int) -> list[Slot]:
    """The slots worker `rank` of `world_size` runs: rank, rank + W, rank + 2W, ..."""
    if len(plan) % world_size:
        raise ValueError(f"{len(plan)} slots do not split evenly over {world_size} workers")
    return plan[rank::world_size]
