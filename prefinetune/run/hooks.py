"""What a layer above the run may change in it, without the run knowing that layer: the run's length
once the shards exist, the rows it trains and scores on, the model it starts from (and its shape, again
at export), a score before the first update, the extras at its end, and what it leaves beside its
export. `RunHooks` is a plain pre-finetuning run; fine-tuning subclasses it (prefinetune/finetune/hooks.py).
A hooks object travels to the Ray Train workers and Tune trials with the recipe, so it holds no state but what pickles.

    run(recipe, hooks=FinetuneHooks())          # the driver (prefinetune/run/driver.py)
    run_worker(recipe, session, hooks=...)      # the worker loop (prefinetune/run/worker.py)
"""
from __future__ import annotations

from typing import Callable

from prefinetune.recipe.config import RecipeError

__all__ = ["RunHooks"]


class RunHooks:
    """A pre-finetuning run: every task's whole train split, scored on the recipe's eval split."""

    plots = True          # the task-mix plot at the end
    resumable: tuple = ()     # recipe keys a resume may change, beyond the run's own (run/run_folder.py)
    derived: dict = {}        # {key: the key it is set from}: changes only with it

    def resolve(self, recipe):
        """The recipe to run, once its shards exist (the driver, before any worker starts). A plain run
        refuses a recipe with sections that a layer above reads, rather than ignore them."""
        sections = recipe.upper_layer_sections()
        if sections:
            raise RecipeError(f"recipe sections {sections} are read by a layer above the run, and this run was "
                              "started without its hooks: start it through that layer's command (`prefinetune "
                              f"{sections[0]}`), or pass its hooks to run()")
        return recipe

    def splits(self, recipe, manifest: dict, open_split: Callable) -> tuple[dict, dict, dict]:
        """({task: training rows}, {split: {task: rows}} scored every eval, the same scored at the end)."""
        names = [t.name for t in recipe.tasks]
        train = {n: open_split(n, "train") for n in names}
        split = recipe.eval.split
        periodic = {split: {n: open_split(n, split) for n in names if split in manifest["tasks"][n]["splits"]}}
        return train, periodic, periodic

    def start_model(self, model, recipe) -> str | None:
        """Change the freshly built model before training (in every worker); what was done, or None."""
        return None

    def shape_model(self, model, recipe) -> str | None:
        """Change the model's structure (e.g. add adapters) after start_model, in every worker and again at
        export before the checkpoint's weights are loaded; what was done, or None."""
        return None

    def unshape_model(self, model, recipe):
        """At export, once the trained weights are loaded: undo shape_model (e.g. merge the adapters), and
        return a function that writes extra files into the export folder (returning what tasks.json adds),
        or None."""
        return None

    def score_at_start(self, recipe) -> bool:
        """Score the model before the first update (logged as update 0)."""
        return False

    def longer_hint(self, recipe, update: int) -> str:
        """How to make a run that reached `update` train on when resumed."""
        return f"--updates more than {update}"

    def finish(self, recipe, final_metrics: dict, export_dir) -> dict:
        """What the run leaves beside its export, once exported; merged into what `run` returns."""
        return {}
