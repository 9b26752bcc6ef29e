"""The splits a fine-tuning worker reads: the chosen training rows, the held-out rows where the task
needs them, and the splits that select and score (rules in prefinetune/finetune/plan.py).

    train, scored, roles = finetune_splits(recipe, manifest, open_split)
"""
from __future__ import annotations

from prefinetune.finetune.plan import HELDOUT, SplitRoles, choose_rows, split_roles

__all__ = ["finetune_roles", "finetune_rows", "finetune_splits"]


def finetune_roles(recipe, manifest: dict) -> SplitRoles:
    task = recipe.tasks[0].name
    return split_roles(task, manifest["tasks"][task]["splits"])


def finetune_rows(recipe, train_rows: int, roles: SplitRoles):
    """(training row indices, held-out row indices) of the task's training split."""
    ft = recipe.finetune
    seed = recipe.run.seed if ft.fraction_seed is None else ft.fraction_seed
    return choose_rows(train_rows, roles.needs_heldout, ft.train_fraction, seed, ft.heldout, ft.heldout_seed)


def finetune_splits(recipe, manifest: dict, open_split) -> tuple[dict, dict, SplitRoles]:
    """({task: training rows}, {split: {task: rows}} for the select and test splits, roles);
    `open_split(task, split)` opens a prepared split."""
    task = recipe.tasks[0].name
    roles = finetune_roles(recipe, manifest)
    full = open_split(task, "train")
    kept, held = finetune_rows(recipe, len(full), roles)
    scored = {}
    for split in dict.fromkeys((roles.select, roles.test)):
        scored[split] = {task: full.select(held, HELDOUT) if split == HELDOUT else open_split(task, split)}
    return {task: full.select(kept, "train")}, scored, roles
