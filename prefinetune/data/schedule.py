"""The slot schedule: which task and which rows fill each slot of each update.

An update has S slots (S independent of the number of workers W). Slot k of update t is a pure
function of (seed, t, k): its task is drawn from the sampling policy's probabilities and its rows
uniformly without replacement from that task's training split. Worker r runs slots r, r+W, r+2W, ...
Because nothing depends on W or on earlier draws, a run resumed on a different number of workers
makes the same updates, and the schedule's whole state is the update counter.

    >>> plan = update_plan(seed=0, step=3, slots=4, sizes={"a": 100, "b": 10}, batch_size=2)
    >>> [s.task for s in plan] == [s.task for s in update_plan(0, 3, 4, {"a": 100, "b": 10}, 2)]
    True
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Slot", "task_probabilities", "slot_plan", "update_plan", "worker_slots"]


@dataclass(frozen=True)
class Slot:
    """One micro-step's work: a homogeneous batch of `rows` from one task."""
    index: int
    task: str
    rows: tuple[int, ...]


def task_probabilities(policy: str, sizes: dict[str, int]) -> dict[str, float]:
    """P(task) under a policy: 'natural' (proportional to training rows, Muppet's default) or 'uniform'."""
    if not sizes:
        raise ValueError("task_probabilities needs at least one task")
    empty = sorted(t for t, n in sizes.items() if n <= 0)
    if empty:
        raise ValueError(f"tasks with no training rows cannot be sampled: {empty}")
    if policy == "natural":
        weights = np.array([sizes[t] for t in sizes], dtype=np.float64)
    elif policy == "uniform":
        weights = np.ones(len(sizes))
    else:
        raise ValueError(f"unknown sampling policy {policy!r}; known: natural, uniform")
    return dict(zip(sizes, (weights / weights.sum()).tolist()))


def slot_plan(seed: int, step: int, slot: int, probabilities: dict[str, float],
              sizes: dict[str, int], batch_size: int) -> Slot:
    """Slot `slot` of update `step`: a task drawn from `probabilities`, then its rows."""
    rng = np.random.default_rng([seed, step, slot])
    names = list(probabilities)
    task = names[int(rng.choice(len(names), p=np.array([probabilities[t] for t in names])))]
    n = sizes[task]
    rows = rng.choice(n, size=min(batch_size, n), replace=False)
    return Slot(slot, task, tuple(int(r) for r in rows))


def update_plan(seed: int, step: int, slots: int, sizes: dict[str, int], batch_size: int,
                policy: str = "natural") -> list[Slot]:
    """All slots of one update."""
    probabilities = task_probabilities(policy, sizes)
    return [slot_plan(seed, step, k, probabilities, sizes, batch_size) for k in range(slots)]


def worker_slots(plan: list[Slot], rank: int, world_size: int) -> list[Slot]:
    """The slots worker `rank` of `world_size` runs: rank, rank + W, rank + 2W, ..."""
    if len(plan) % world_size:
        raise ValueError(f"{len(plan)} slots do not split evenly over {world_size} workers")
    return plan[rank::world_size]
