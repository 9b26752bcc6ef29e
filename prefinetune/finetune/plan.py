"""Pure choices of a fine-tuning run: which splits select and score, which training rows it uses, and
how many updates its epochs make.

    roles = split_roles({"train", "dev"})          # SplitRoles(select="dev", test="heldout")
    train_rows, heldout_rows = choose_rows(2490, roles.needs_heldout, finetune)
    updates = updates_for_epochs(3.0, len(train_rows), rows_per_update=16)

- Model selection reads the task's dev split, the score its test split. Where one of them is missing,
  `finetune.heldout` of the training rows stand in as split "heldout" (drawn by `heldout_seed`, the
  same for every seed and fraction, and never trained on). A task with neither is refused.
- A fraction keeps the first round(f * n) rows of one seeded permutation of what is left, so with the
  same `fraction_seed` the rows of 10% are among those of 20%, as in a learning curve.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["FinetuneError", "HELDOUT", "SplitRoles", "split_roles", "choose_rows", "updates_for_epochs"]

HELDOUT = "heldout"


class FinetuneError(ValueError):
    """A fine-tuning run or comparison that cannot be done as asked; the message names what and why."""


@dataclass(frozen=True)
class SplitRoles:
    select: str          # the split hyperparameters and checkpoints are chosen on
    test: str            # the split the chosen model is scored on

    @property
    def needs_heldout(self) -> bool:
        return HELDOUT in (self.select, self.test)


def split_roles(task: str, splits) -> SplitRoles:
    """dev selects and test scores; a missing one is the held-out part of train."""
    splits = set(splits)
    if "dev" not in splits and "test" not in splits:
        raise FinetuneError(f"task {task!r} has neither a dev nor a test split (it has {sorted(splits)}): fine-tuning "
                         "selects on one and scores on the other; give it a dev split (e.g. part of a file with "
                         "#rows=START:STOP)")
    return SplitRoles("dev" if "dev" in splits else HELDOUT, "test" if "test" in splits else HELDOUT)


def choose_rows(n: int, hold_out: bool, train_fraction: float, fraction_seed: int, heldout: float,
                heldout_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training row indices, held-out row indices), each sorted, of a training split of n rows."""
    if n < 2:
        raise FinetuneError(f"a training split of {n} rows cannot be fine-tuned on")
    order = np.random.default_rng([heldout_seed, n]).permutation(n)
    k = min(max(1, round(heldout * n)), n - 1) if hold_out else 0
    held, pool = order[:k], order[k:]
    pool = pool[np.random.default_rng([fraction_seed, n, 1]).permutation(len(pool))]
    kept = pool[:max(1, round(train_fraction * len(pool)))]
    return np.sort(kept), np.sort(held)


def updates_for_epochs(epochs: float, train_rows: int, rows_per_update: int) -> int:
    """Optimizer updates that pass over `train_rows` rows `epochs` times (at least one)."""
    return max(1, math.ceil(epochs * train_rows / rows_per_update))
