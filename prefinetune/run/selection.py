"""The run's score (`eval.select`), early stopping (`eval.patience`) and the best checkpoint
(`export.which: best`): pure pieces, read by the worker loop, the checkpoint retention and the driver.

    value = score(metrics, recipe)                   # the select metric of one evaluation, or None
    stop = Patience(recipe).after_eval(update, metrics)   # the reason to stop early, or None
    write_score(folder, score_record(update, metrics, recipe))   # rank 0, into a checkpoint before it is listed
    best = best_checkpoint(folders, mode)            # the kept checkpoint with the best score

The score is `dev/<task>/<metric>` (eval.split), or with metric `mean` the mean over the tasks of each
task's first metric (its first in the eval's output: accuracy for classification, pearson for
regression, exact match for spans, rouge1 for summarization). A tie is no improvement; among equal
scores the earlier update is the best; a NaN score (pearson of constant predictions) is never the best;
a metric the evaluation does not give stops the run at its first evaluation (SelectError).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

from prefinetune.recipe.config import RecipeConfig
from prefinetune.run.errors import RunStopped

__all__ = ["SCORE_FILE", "score", "better", "Patience", "SelectError", "score_record", "write_score",
           "read_score", "by_score", "best_checkpoint", "export_choice"]

SCORE_FILE = "select.json"


def _first_metrics(metrics: dict, split: str) -> dict[str, float]:
    first: dict[str, float] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == split and parts[2] != "rows" and parts[1] not in first:
            first[parts[1]] = float(value)
    return first


def score(metrics: dict, recipe: RecipeConfig, split: Optional[str] = None) -> Optional[float]:
    """The select metric of one evaluation's `metrics` on `split` (default eval.split; fine-tuning scores
    its select split), None when it holds none; NaN (pearson of constant predictions) stays NaN."""
    select, split = recipe.eval.select, split or recipe.eval.split
    if select is None:
        return None
    if select.metric == "mean":
        first = _first_metrics(metrics, split)
        return sum(first.values()) / len(first) if first else None
    value = metrics.get(f"{split}/{select.metric}")
    return None if value is None else float(value)


def _usable(value) -> bool:
    return value is not None and math.isfinite(value)


def better(a: Optional[float], b: Optional[float], mode: str) -> bool:
    """`a` strictly better than `b`; None and NaN are worst (a NaN never becomes the best)."""
    if not _usable(a):
        return False
    if not _usable(b):
        return True
    return a > b if mode == "max" else a < b


class SelectError(RunStopped):
    """eval.select names a metric the evaluation does not give: the run stops at its first evaluation."""


class Patience:
    """Early stopping: after each evaluation, the reason to stop once `eval.patience` evaluations in a row
    have not improved on the best score, else None. Keeps its best across a resume (`state`), unless the
    score's definition changed."""

    def __init__(self, recipe: RecipeConfig):
        self.recipe, self.limit = recipe, recipe.eval.patience
        self.best, self.best_update, self.waited = None, None, 0

    def _key(self) -> Optional[list]:
        select = self.recipe.eval.select
        return None if select is None else [select.metric, select.mode]

    def load_state(self, state: Optional[dict]) -> None:
        if state and state.get("select") == self._key():
            self.best, self.best_update = state.get("best"), state.get("best_update")
            self.waited = state.get("waited", 0)

    def state(self) -> dict:
        return {"select": self._key(), "best": self.best, "best_update": self.best_update, "waited": self.waited}

    def exhausted(self) -> bool:
        return self.limit is not None and self.waited >= self.limit

    def after_eval(self, update: int, metrics: dict, split: Optional[str] = None) -> Optional[str]:
        select = self.recipe.eval.select
        if select is None:
            return None
        value = score(metrics, self.recipe, split)
        if value is None:
            split = split or self.recipe.eval.split
            raise SelectError(f"eval.select.metric {select.metric!r} is not among the {split} metrics of update "
                              f"{update}: {sorted(k.split('/', 1)[1] for k in metrics if k.startswith(split + '/'))}")
        if better(value, self.best, select.mode):
            self.best, self.best_update, self.waited = value, update, 0
            return None
        self.waited += 1
        if not self.exhausted():
            return None
        best = f"{self.best:.4f}, was at update {self.best_update}" if _usable(self.best) else "none yet (NaN)"
        return (f"early stop after update {update}: {split or self.recipe.eval.split} {select.metric} ({select.mode}) "
                f"has not improved for {self.waited} evaluations (eval.patience={self.limit}); the best, {best}")


def score_record(update: int, metrics: dict, recipe: RecipeConfig, split: Optional[str] = None) -> Optional[dict]:
    """What a checkpoint keeps of its evaluation (None without eval.select): its score and the metrics."""
    select = recipe.eval.select
    if select is None:
        return None
    value = score(metrics, recipe, split)
    return {"update": update, "metric": select.metric, "mode": select.mode, "split": split or recipe.eval.split,
            "score": value if _usable(value) else None, "metrics": metrics}


def write_score(folder: Path, record: dict) -> None:
    Path(folder, SCORE_FILE).write_text(json.dumps(record, indent=2))


def read_score(folder: Path) -> Optional[dict]:
    try:
        return json.loads(Path(folder, SCORE_FILE).read_text())
    except (OSError, ValueError):
        return None


def by_score(folders, mode: str, metric: Optional[str] = None) -> tuple[list[Path], list[Path]]:
    """(the folders with a usable score, best first, ties: the earlier update; the others, in the order
    given). With `metric`, only scores of that metric count (a resume may have changed eval.select)."""
    scored, unscored = [], []
    sign = 1 if mode == "max" else -1
    for folder in map(Path, folders):
        record = read_score(folder)
        if record is None or not _usable(record.get("score")) or (metric and record.get("metric") != metric):
            unscored.append(folder)
        else:
            scored.append(((sign * record["score"], -record["update"]), folder))
    scored.sort(key=lambda pair: pair[0], reverse=True)
    return [folder for _, folder in scored], unscored


def best_checkpoint(folders, mode: str, metric: Optional[str] = None) -> Optional[Path]:
    """The folder with the best score (ties: the earlier update), or None when none has one."""
    scored, _ = by_score(folders, mode, metric)
    return scored[0] if scored else None


def export_choice(recipe: RecipeConfig) -> str:
    """'best' or 'last': export.which, by default best when the recipe names a score."""
    return recipe.export.which or ("best" if recipe.eval.select is not None else "last")
