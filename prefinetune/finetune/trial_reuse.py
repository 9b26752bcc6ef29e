"""Trials an earlier comparison already ran, copied in instead of run again.

A trial of compare (one model, fraction, seed and grid point fine-tuned on one task) is reused when a
source part (the same task's folder in another panel, or another one-task comparison) finished the same
trial from the same inputs:
- the same task recipe, the paths inside its own folders aside (the part's record, comparison.json);
- the same trial: model label and path, fraction, seed, grid point (its index in the grid aside);
- the same prepared data for that model (the shards' manifest: the data root as an absolute path, each
  file's sha256, the tokenizer's name as an absolute path and its fingerprint, the maximum length).
A trial is deterministic given those (seeded rows, order and head initialisation; the 5-seed trials of
the transfer study's ablation reproduced its 10-seed panel's to the last digit), so the copy holds what
running it would write. Its folder is copied whole (trial.json, its log and metrics: about 30 kB) into a
staging folder renamed into place, trial.json naming where it came from; the trial then reports as kept.

Not seen, so not to be reused across: a model's weights changed under the same path (an export retrained
in place, a `pkg:` model's package upgraded), a change of the code, a different --cpus-per-trial (the
threads of a trial can change CPU rounding); and a copied trial logs nothing to the recipe's trackers.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from prefinetune.finetune.plan import FinetuneError

__all__ = ["RECORD", "trial_folder", "finished_trial", "reuse_sources", "reuse_trials"]

RECORD = "comparison.json"


def trial_folder(config: dict) -> Path:
    """The folder a trial (one of compare's configs: {"trial", "recipe"}) writes: its recipe's run folder."""
    run = config["recipe"]["run"]
    return Path(run["output_dir"]) / run["name"]


def reuse_sources(folders: list, task: str) -> list[tuple[Path, Path]]:
    """(part folder, its comparison's folder) for `task` in each --reuse-from folder: DIR/<task> in a panel,
    DIR itself for a one-task comparison. A folder that holds no comparison is refused by name."""
    sources = []
    for folder in map(lambda f: Path(f).expanduser().resolve(), folders):
        if not (folder / RECORD).is_file():
            raise FinetuneError(f"--reuse-from {folder}: not the output folder of a comparison or a panel "
                                f"(no {RECORD} in it)")
        part = folder / task
        sources.append((part, folder) if (part / RECORD).is_file() else (folder, folder))
    return sources


def _normalized(value, folders: tuple[tuple[Path, str], ...]):
    """`value` (a recipe) with every path inside the given folders written relative to a name for them."""
    if isinstance(value, dict):
        return {k: _normalized(v, folders) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalized(v, folders) for v in value]
    if isinstance(value, str):
        for folder, name in folders:
            if value == str(folder) or value.startswith(str(folder) + os.sep):
                return name + value[len(str(folder)):]
    return value


def _recipe_key(recipe, part: Path, comparison: Path) -> str:
    return json.dumps(_normalized(recipe, ((part, "<part>"), (comparison, "<comparison>"))), sort_keys=True)


def _data_key(part: Path, label: str) -> str | None:
    """What the model's shards were prepared from (manifest.json), or None where there are none."""
    try:
        m = json.loads((part / "shards" / label / "manifest.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return json.dumps({"data_root": m.get("data_root"), "tokenizer": m.get("tokenizer"),
                       "max_length": m.get("max_length"),
                       "tasks": {name: task.get("fingerprint") for name, task in m.get("tasks", {}).items()}},
                      sort_keys=True)


def _trial_key(trial: dict) -> str:
    return json.dumps({k: v for k, v in trial.items() if k != "index"}, sort_keys=True)


def finished_trial(folder: Path) -> dict | None:
    """The trial.json a finished trial left in its folder, or None (not finished, or cut short)."""
    try:
        return json.loads((folder / "trial.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _source_trials(part: Path, comparison: Path, recipe_key: str) -> dict[str, Path]:
    """{trial key: folder} of a source part's finished trials, if it was planned from the same recipe."""
    try:
        record = json.loads((part / RECORD).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    if "recipe" not in record or _recipe_key(record["recipe"], part, comparison) != recipe_key:
        return {}
    found = {}
    for folder in sorted(part.glob("trials/*")):
        result = finished_trial(folder)
        if result is not None and "trial" in result:
            found[_trial_key(result["trial"])] = folder
    return found


def _copy(twin: Path, own: Path, trial: dict) -> None:
    """The twin's folder as `own`, its trial.json naming this trial and where it came from; staged, then
    renamed into place, so a stop part-way leaves no half-copied trial counted as finished."""
    staging = own.with_name(own.name + ".reusing")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(twin, staging, ignore=shutil.ignore_patterns("trial.json", "trial.json.partial"))
    result = {**finished_trial(twin), "trial": trial, "reused_from": str(twin)}
    (staging / "trial.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(own, ignore_errors=True)              # a trial stopped part-way starts over as the copy
    staging.rename(own)


def reuse_trials(configs: list[dict], part: Path, comparison: Path, recipe: dict,
                 sources: list[tuple[Path, Path]]) -> int:
    """Copy into each config's folder that holds no finished trial the same trial finished in a source
    part from the same inputs (module docstring); returns how many were copied."""
    key = _recipe_key(recipe, part, comparison)
    found: dict[str, list[Path]] = {}
    for source_part, source_comparison in sources:
        if source_part.resolve() != part.resolve():
            for trial, folder in _source_trials(source_part, source_comparison, key).items():
                found.setdefault(trial, []).append(folder)
    copied = 0
    for config in configs:
        own, label = trial_folder(config), config["trial"]["model"]
        data = _data_key(part, label)
        twin = next((f for f in found.get(_trial_key(config["trial"]), []) if _data_key(f.parents[1], label) == data),
                    None)
        if twin is None or data is None or finished_trial(own) is not None:
            continue
        _copy(twin, own, config["trial"])
        copied += 1
    return copied
