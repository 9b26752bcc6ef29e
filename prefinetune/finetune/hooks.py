"""Fine-tuning as a layer above the run: the hooks (prefinetune/run/hooks.py) that make a run of a recipe
with a `finetune:` section a fine-tuning run. The driver and the worker loop know nothing of fine-tuning.

- resolve: train.updates (and warm-up) from finetune.epochs, once the shards exist; the head check
  (prefinetune/finetune/resolve.py);
- splits: the fraction of the training rows, the held-out rows, the select and test splits
  (prefinetune/finetune/splits.py);
- start_model: the export's head for the task, where it is reused (prefinetune/finetune/head_reuse.py);
- shape_model / unshape_model: LoRA adapters (finetune.lora), added for training and merged at export
  (prefinetune/finetune/lora.py);
- score_at_start: finetune.eval_at_start (update 0 in metrics.jsonl);
- finish: finetune.json beside the export (prefinetune/finetune/summary.py); no task-mix plot.

    run(recipe, hooks=FinetuneHooks())           # what `prefinetune finetune` does
"""
from __future__ import annotations

from typing import Callable

from prefinetune.run.hooks import RunHooks

__all__ = ["FinetuneHooks", "hooks_for"]


class FinetuneHooks(RunHooks):
    plots = False
    resumable = ("finetune.epochs",)     # resumed for more epochs
    derived = {"optim.warmup_updates": "finetune.warmup_fraction"}     # a fraction of the run's length

    def longer_hint(self, recipe, update: int) -> str:
        epochs = recipe.finetune is not None and recipe.finetune.epochs is not None
        return "a larger finetune.epochs" if epochs else super().longer_hint(recipe, update)

    def resolve(self, recipe):
        from prefinetune.finetune.resolve import resolve_finetune

        return resolve_finetune(recipe)

    def splits(self, recipe, manifest: dict, open_split: Callable) -> tuple[dict, dict, dict]:
        from prefinetune.finetune.splits import finetune_splits

        train, final, roles = finetune_splits(recipe, manifest, open_split)
        return train, {roles.select: final[roles.select]}, final

    def start_model(self, model, recipe) -> str | None:
        from prefinetune.finetune.conditioning import start_conditioning
        from prefinetune.finetune.head_reuse import start_heads

        conditioned = start_conditioning(model, recipe)
        heads = start_heads(model, recipe)
        return f"{heads}; {conditioned}" if conditioned else heads

    def shape_model(self, model, recipe) -> str | None:
        if recipe.finetune.lora is None:
            return None
        from prefinetune.finetune.lora import add_lora

        return add_lora(model, recipe.finetune.lora)

    def unshape_model(self, model, recipe):
        if recipe.finetune.lora is None:
            return None
        from prefinetune.finetune.lora import merge_lora

        return merge_lora(model, recipe)

    def score_at_start(self, recipe) -> bool:
        return recipe.finetune.eval_at_start

    def finish(self, recipe, final_metrics: dict, export_dir) -> dict:
        from prefinetune.finetune.summary import write_summary

        return {"summary": write_summary(recipe, final_metrics, export_dir)}


def hooks_for(recipe) -> RunHooks:
    """FinetuneHooks for a recipe with a finetune: section, else RunHooks (a plain pre-finetuning run)."""
    return FinetuneHooks() if recipe.finetune is not None else RunHooks()
