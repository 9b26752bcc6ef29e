"""Trials an earlier comparison already ran, copied in instead of run again.

A trial of compare (one model, fraction, seed and grid point fine-tuned on one task) is reused when a
source part (the same task's folder in another panel, e.g. an earlier part of the ablation) planned it
from the same task recipe, its own folders aside, and finished it: same model folder, fraction, seed and
grid point. A trial is deterministic given those (seeded rows, order and head initialisation; the 5-seed
trials of the ablation's first part reproduced the 10-seed panel's to the last digit), so the copy holds
what running it would write. Its folder is copied whole (trial.json, its log and metrics: about 30 kB),
trial.json naming where it came from, and the trial then reports as kept.

Not seen: an export retrained in place under the same path, or a change of the code in between; give
the panel no sources then (`compare_panel(..., reuse_from=())`).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

__all__ = ["trial_folder", "reuse_trials"]

RECORD = "comparison.json"


def trial_folder(config: dict) -> Path:
    """The folder a trial (one of compare's configs: {"trial", "recipe"}) writes: its recipe's run folder."""
    run = config["recipe"]["run"]
    return Path(run["output_dir"]) / run["name"]


def _recipe_key(recipe: dict, part_dir: Path) -> str:
    """The part's recipe with the paths that name its own folders replaced."""
    text = json.dumps(recipe, sort_keys=True)
    return text.replace(str(part_dir), "<part>").replace(str(part_dir.parent), "<panel>")


def _trial_key(trial: dict) -> str:
    return json.dumps({k: v for k, v in trial.items() if k != "index"}, sort_keys=True)


def _finished(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "trial.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _source_trials(source: Path, recipe_key: str) -> dict[str, Path]:
    """{trial key: folder} of a source part's finished trials, if it was planned from the same recipe."""
    try:
        record = json.loads((source / RECORD).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    if _recipe_key(record.get("recipe"), source) != recipe_key:
        return {}
    found = {}
    for folder in sorted(source.glob("trials/*")):
        result = _finished(folder)
        if result is not None and "trial" in result:
            found.setdefault(_trial_key(result["trial"]), folder)
    return found


def reuse_trials(configs: list[dict], part_dir: Path, recipe: dict, sources: list[Path]) -> int:
    """Copy into each config's folder that holds no finished trial the same trial finished in a source
    part (planned from `recipe` too); returns how many were copied."""
    key = _recipe_key(recipe, part_dir)
    found: dict[str, Path] = {}
    for source in sources:
        if source.resolve() != part_dir.resolve():
            for trial, folder in _source_trials(source, key).items():
                found.setdefault(trial, folder)
    copied = 0
    for config in configs:
        own, twin = trial_folder(config), found.get(_trial_key(config["trial"]))
        if twin is None or _finished(own) is not None:
            continue
        shutil.rmtree(own, ignore_errors=True)              # a trial stopped part-way starts over
        shutil.copytree(twin, own)
        result = {**_finished(twin), "trial": config["trial"], "reused_from": str(twin)}
        partial = own / "trial.json.partial"                # renamed whole, as run_trial writes it
        partial.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        partial.replace(own / "trial.json")
        copied += 1
    return copied
