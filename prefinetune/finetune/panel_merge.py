"""Pair models that sit in different panels: merge the panel.json files of runs on the same tasks,
fractions, seeds and base, then pair any model with any other by seed (panel.versus).

    merged = merge_panels([read_panel("a/panel.json"), read_panel("b/panel.json")], ["a", "b"])
    deltas = versus(merged, "prefinetune_minilm_cpu")

Pairing across panels is sound only where a seed means the same training rows, order and new-head
initialisation in both, which holds when the panels share tasks, fractions and seeds and reproduce each
other's trials: every model the panels share (the base at least) must have the same score for every seed,
or the merge is refused, naming the model, task and seed. `benchmarks/pair_panels.py` is the command.
"""
from __future__ import annotations

import json
from pathlib import Path

from prefinetune.finetune.plan import FinetuneError

__all__ = ["read_panel", "merge_panels"]

SHARED_KEYS = ("tasks", "metrics", "base", "fractions", "seeds")


def read_panel(path: str | Path) -> dict:
    """A panel.json as written by compare_panel, with its seeds as ints again (JSON keys are strings)."""
    panel = json.loads(Path(path).read_text())
    for by_model in panel["cells"].values():
        for by_task in by_model.values():
            for cell in by_task.values():
                cell["scores"] = {int(seed): score for seed, score in cell["scores"].items()}
    return panel


def merge_panels(panels: list[dict], sources: list[str]) -> dict:
    """One panel holding every model of `panels` (sources name them in errors). Refused where they differ
    in tasks, metrics, base, fractions or seeds, where one name stands for two models, or where a model
    they share scored differently on some seed."""
    first = panels[0]
    for panel, source in zip(panels[1:], sources[1:]):
        for key in SHARED_KEYS:
            if panel[key] != first[key]:
                raise FinetuneError(f"{source}: its {key} {panel[key]!r} differ from {sources[0]}'s "
                                    f"{first[key]!r}: only panels of the same runs pair by seed")
    merged = {**first, "models": {}, "cells": {f: {} for f in first["cells"]},
              "complete": all(p.get("complete", True) for p in panels)}
    for panel, source in zip(panels, sources):
        _add_models(merged, panel, source)
    return merged


def _add_models(merged: dict, panel: dict, source: str) -> None:
    """Copy a panel's models and cells into merged, checking those already there agree."""
    for model, where in panel["models"].items():
        if merged["models"].setdefault(model, where) != where:
            raise FinetuneError(f"{source}: the model {model} is {where}, another panel's is "
                                f"{merged['models'][model]}")
    for fraction, by_model in panel["cells"].items():
        for model, by_task in by_model.items():
            mine = merged["cells"][fraction].setdefault(model, by_task)
            if mine is not by_task:
                _check_same_scores(mine, by_task, f"{source}: {model} at fraction {fraction}")


def _check_same_scores(mine: dict, theirs: dict, where: str) -> None:
    for task, cell in theirs.items():
        for seed, score in cell["scores"].items():
            other = mine.get(task, {}).get("scores", {}).get(seed)
            if other is not None and other != score:
                raise FinetuneError(f"{where}, {task} seed {seed}: {score} here, {other} in the panel before: "
                                    "the panels do not reproduce each other's trials, so their seeds do not pair")
