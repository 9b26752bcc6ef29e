"""The run's score (`eval.select`), early stopping (`eval.patience`) and the best checkpoint
(`export.which: best`): pure pieces, read by the worker loop, the checkpoint retention and the driver.

    value = score(metrics, recipe)                   # the select metric of one evaluation, or None
    stop = Patience(recipe).after_eval(update, metrics)   # the reason to stop early, or None
    write_score(folder, score_record(update, metrics, recipe))   # rank 0, into a checkpoint before it is listed
    best = best_checkpoint(folders, mode)            # the kept checkpoint with the best score

The score is `dev/<task>/<metric>` (eval.split), or with metric `mean` the mean over the tasks of each
task's first metric (its first in the eval's output: accuracy for classification, pearson for
regression, exact match for spans, rouge1 for summarization). A tie is no improvement; among equal
scores the earlier update is the best.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from prefinetune.recipe.config import RecipeConfig

__all__ = ["SCORE_FILE", "score", "better", "Patience", "score_record", "write_score", "read_score",
           "best_checkpoint", "export_choice"]

SCORE_FILE = "select.json"


def _first_metrics(metrics: dict, split: str) -> dict[str, float]:
    first: dict[str, float] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == split and parts[2] != "rows" and parts[1] not in first:
            first[parts[1]] = float(value)
    return first


def score(metrics: dict, recipe: RecipeConfig) -> Optional[float]:
    """The select metric of one evaluation's `metrics`, or None when it holds none."""
    select, split = recipe.eval.select, recipe.eval.split
    if select is None:
        return None
    if select.metric == "mean":
        first = _first_metrics(metrics, split)
        return sum(first.values()) / len(first) if first else None
    value = metrics.get(f"{split}/{select.metric}")
    return None if value is None else float(value)


def better(a: Optional[float], b: Optional[float], mode: str) -> bool:
    """`a` strictly better than `b` (None is worst)."""
    if a is None:
        return False
    if b is None:
        return True
    return a > b if mode == "max" else a < b


class Patience:
    """Early stopping: after each evaluation, the reason to stop once `eval.patience` evaluations in a row
    have not improved on the best score, else None. Keeps its best across a resume (`state`)."""

    def __init__(self, recipe: RecipeConfig, state: Optional[dict] = None):
        self.recipe, self.limit = recipe, recipe.eval.patience
        state = state or {}
        self.best, self.best_update, self.waited = state.get("best"), state.get("best_update"), state.get("waited", 0)

    def after_eval(self, update: int, metrics: dict) -> Optional[str]:
        if self.recipe.eval.select is None:
            return None
        value = score(metrics, self.recipe)
        if better(value, self.best, self.recipe.eval.select.mode):
            self.best, self.best_update, self.waited = value, update, 0
            return None
        self.waited += 1
        if self.limit is None or self.waited < self.limit:
            return None
        select = self.recipe.eval.select
        return (f"early stop after update {update}: {self.recipe.eval.split} {select.metric} ({select.mode}) has not "
                f"improved for {self.waited} evaluations (eval.patience={self.limit}); the best, {self.best:.4f}, "
                f"was at update {self.best_update}")

    def state(self) -> dict:
        return {"best": self.best, "best_update": self.best_update, "waited": self.waited}


def score_record(update: int, metrics: dict, recipe: RecipeConfig) -> Optional[dict]:
    """What a checkpoint keeps of its evaluation (None without eval.select): its score and the metrics."""
    select = recipe.eval.select
    if select is None:
        return None
    return {"update": update, "metric": select.metric, "mode": select.mode, "split": recipe.eval.split,
            "score": score(metrics, recipe), "metrics": metrics}


def write_score(folder: Path, record: dict) -> None:
    Path(folder, SCORE_FILE).write_text(json.dumps(record, indent=2))


def read_score(folder: Path) -> Optional[dict]:
    try:
        return json.loads(Path(folder, SCORE_FILE).read_text())
    except (OSError, ValueError):
        return None


def best_checkpoint(folders, mode: str) -> Optional[Path]:
    """The folder with the best score (ties: the earlier update), or None when none has one."""
    best, best_key = None, None
    for folder in folders:
        record = read_score(folder)
        if record is None or record.get("score") is None:
            continue
        key = (record["score"], -record["update"]) if mode == "max" else (-record["score"], -record["update"])
        if best_key is None or key > best_key:
            best, best_key = Path(folder), key
    return best


def export_choice(recipe: RecipeConfig) -> str:
    """'best' or 'last': export.which, by default best when the recipe names a score."""
    return recipe.export.which or ("best" if recipe.eval.select is not None else "last")
