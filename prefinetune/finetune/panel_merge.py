"""Pair models that sit in different panels: merge the panel.json files of runs on the same tasks,
fractions, seeds and base, then pair any model with any other by seed (panel.versus).

    merged = merge_panels([read_panel("a/panel.json"), read_panel("b/panel.json")], ["a", "b"])
    deltas = versus(merged, "prefinetune_minilm_cpu")

Pairing across panels is sound only where a seed means the same training rows, order and new-head
initialisation in both, which holds when the panels share tasks, fractions and seeds and reproduce each
other's trials: every model the panels share (the base at least) must have the same score for every seed,
or the merge is refused, naming the model, task and seed. Panels run on two machines can differ in float
rounding alone (stsb's Pearson by up to 7.7e-7, measured in the README's ablation): a tolerance lets those
pair, keeping the first panel's score, and the merge records the largest difference it let through.
`benchmarks/pair_panels.py` is the command.
"""
from __future__ import annotations

import json
from pathlib import Path

from prefinetune.finetune.plan import FinetuneError

__all__ = ["read_panel", "merge_panels"]

SHARED_KEYS = ("tasks", "metrics", "base", "fractions", "seeds")


def read_panel(path: str | Path) -> dict:
    """A panel.json as written by compare_panel (its seeds still JSON's strings: merge_panels makes them ints),
    refused by name where it lacks a key a panel has."""
    panel = json.loads(Path(path).read_text())
    missing = [key for key in (*SHARED_KEYS, "models", "cells") if key not in panel]
    if missing:
        raise FinetuneError(f"{path}: not a panel.json as compare writes it (no {', '.join(missing)})")
    return panel


def merge_panels(panels: list[dict], sources: list[str], tolerance: float = 0.0) -> dict:
    """One panel holding every model of `panels` (sources name them in errors; the inputs are copied, not
    shared). Refused where they differ in tasks, metrics, base, fractions or seeds, where one name stands
    for two models, or where a model they share lacks a task or seed in one of them or scored more than
    `tolerance` apart; "largest_difference" is the largest gap between shared scores it accepted."""
    if not tolerance >= 0:
        raise FinetuneError(f"the tolerance must be a number of 0 or more, not {tolerance!r}")
    first = panels[0]
    for panel, source in zip(panels[1:], sources[1:], strict=True):
        for key in SHARED_KEYS:
            if panel[key] != first[key]:
                raise FinetuneError(f"{source}: its {key} ({panel[key]!r}) differ from {sources[0]}'s "
                                    f"({first[key]!r}): only panels of the same runs pair by seed")
    merged = {**{key: first[key] for key in SHARED_KEYS}, "models": {}, "cells": {},
              "complete": all(p.get("complete", True) for p in panels), "largest_difference": 0.0}
    for panel, source in zip(panels, sources, strict=True):
        _add_models(merged, panel, source, tolerance)
    return merged


def _add_models(merged: dict, panel: dict, source: str, tolerance: float) -> None:
    """Copy a panel's models and cells (seeds as ints) into merged, checking those already there agree."""
    for model, where in panel["models"].items():
        if merged["models"].setdefault(model, where) != where:
            raise FinetuneError(f"{source}: the model {model} is {where}, in a panel before it "
                                f"{merged['models'][model]}")
    for fraction, by_model in panel["cells"].items():
        for model, by_task in by_model.items():
            copy = {task: {**cell, "scores": {int(seed): score for seed, score in cell["scores"].items()}}
                    for task, cell in by_task.items()}
            mine = merged["cells"].setdefault(fraction, {}).setdefault(model, copy)
            if mine is not copy:
                gap = _largest_gap(mine, copy, f"{source}: {model} at fraction {fraction}", tolerance)
                merged["largest_difference"] = max(merged["largest_difference"], gap)


def _largest_gap(mine: dict, theirs: dict, where: str, tolerance: float) -> float:
    """The largest gap between a shared model's scores in two panels; refused where its tasks or seeds
    differ, or a score differs by more than the tolerance."""
    if set(mine) != set(theirs):
        raise FinetuneError(f"{where}: tasks {sorted(theirs)} here, {sorted(mine)} in a panel before it")
    largest = 0.0
    for task, cell in theirs.items():
        before = mine[task]["scores"]
        if set(before) != set(cell["scores"]):
            raise FinetuneError(f"{where}, {task}: seeds {sorted(cell['scores'])} here, {sorted(before)} in a "
                                "panel before it: only finished panels pair")
        for seed, score in cell["scores"].items():
            gap = abs(before[seed] - score)
            if gap > tolerance:
                raise FinetuneError(f"{where}, {task} seed {seed}: {score} here, {before[seed]} in a panel "
                                    f"before it (more than the tolerance {tolerance:g} apart): the panels do "
                                    "not reproduce each other's trials, so their seeds do not pair")
            largest = max(largest, gap)
    return largest
