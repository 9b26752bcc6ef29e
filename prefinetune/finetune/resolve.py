"""The driver's side of a fine-tuning run, once the shards exist: the run's length from its epochs, and
the checks that must fail before any worker (or trial) starts.

    recipe = resolve_finetune(recipe)      # train.updates (and warm-up) set from finetune.epochs
"""
from __future__ import annotations

from prefinetune.data.shards import read_manifest
from prefinetune.finetune.conditioning import check_conditioning
from prefinetune.finetune.head_reuse import head_source
from prefinetune.finetune.plan import updates_for_epochs
from prefinetune.finetune.splits import finetune_roles, finetune_rows
from prefinetune.recipe.config import RecipeConfig, recipe_from_dict

__all__ = ["resolve_finetune", "training_rows"]


def training_rows(recipe: RecipeConfig) -> int:
    """How many training rows the run uses (its fraction, less the held-out rows)."""
    manifest = read_manifest(recipe.shards_path)
    task = recipe.tasks[0].name
    kept, _ = finetune_rows(recipe, manifest["tasks"][task]["splits"]["train"]["rows"],
                            finetune_roles(recipe, manifest))
    return len(kept)


def resolve_finetune(recipe: RecipeConfig) -> RecipeConfig:
    """The recipe with train.updates (and, with warmup_fraction, optim.warmup_updates) from finetune.epochs;
    raises ValueError for a task without dev and test, or a head that cannot be reused, RecipeError for a
    finetune.lora that does not fit the backbone."""
    head_source(recipe)                          # errors (labels, family) before anything starts
    check_conditioning(recipe)                   # a CA-MTL export needs its conditioning here
    ft = recipe.finetune
    if ft.lora is not None:
        from prefinetune.finetune.lora import check_lora

        check_lora(recipe)
    data = recipe.model_dump(mode="json")
    if ft.epochs is not None:
        t = recipe.train
        updates = updates_for_epochs(ft.epochs, training_rows(recipe), t.slots_per_update * t.batch_size)
        data["train"].update(updates=updates, updates_from_epochs=ft.epochs)
        if ft.warmup_fraction is not None:
            data["optim"]["warmup_updates"] = round(ft.warmup_fraction * updates)
    else:
        training_rows(recipe)                    # the split roles are checked either way
    return recipe_from_dict(data, "<resolved finetune recipe>")
