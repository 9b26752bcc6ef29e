"""The trials of a comparison, as plain data: every model x training fraction x seed x grid point
(Muppet's protocol: a fixed hyperparameter grid, chosen on dev per model, fraction and seed), and the
recipe each trial trains.

    trials = trial_grid({"base": "pkg:...", "muppet": "runs/x/export"}, [0.1, 1.0], 3, {"optim.lr": [1e-5, 2e-5]})
    recipe = trial_recipe(base_recipe_dict, trials[0], out_dir)
"""
from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path

from prefinetune.recipe.config import RecipeConfig, recipe_from_dict
from prefinetune.recipe.overrides import set_values

__all__ = ["model_labels", "grid_points", "trial_grid", "trial_id", "trial_recipe"]


def model_labels(models: list[str]) -> dict[str, str]:
    """{label: model} with short labels: a folder's name (an export: its run's name), a hub id's last
    part, a pkg: model's package; repeated labels numbered."""
    labels: dict[str, str] = {}
    for model in models:
        path = Path(model.rstrip("/"))
        if model.startswith("pkg:"):
            name = model[len("pkg:"):].split("/")[0]
        else:
            name = path.parent.name if path.name == "export" else path.name
        label = re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "model"
        base, n = label, 2
        while label in labels:
            label, n = f"{base}-{n}", n + 1
        labels[label] = model
    return labels


def grid_points(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values, in the grid's key order ([{}] for an empty grid)."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def trial_id(trial: dict) -> str:
    """A stable folder name for a trial: model, fraction, seed and grid point."""
    point = "_".join(f"{k.split('.')[-1]}={v}" for k, v in trial["point"].items())
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{trial['model']}__f{trial['fraction']}__s{trial['seed']}__{point}")


def trial_grid(models: dict[str, str], fractions: list[float], seeds: int, grid: dict[str, list]) -> list[dict]:
    """Every trial: {"model": label, "path": model, "fraction", "seed", "point": {recipe key: value},
    "index": its place in the grid (ties in model selection go to the point listed first)}."""
    trials = [{"model": label, "path": path, "fraction": fraction, "seed": seed, "point": point}
              for label, path in models.items() for fraction in fractions for seed in range(seeds)
              for point in grid_points(grid)]
    return [{**t, "index": i} for i, t in enumerate(trials)]


def trial_recipe(base: dict, trial: dict, out_dir: Path, shards_dir: Path | None = None) -> RecipeConfig:
    """The recipe one trial trains: the comparison's recipe with the trial's model, fraction, seed and
    grid point, its run folder under out_dir/trials/."""
    data = copy.deepcopy(base)
    data["run"].update(name=trial_id(trial), output_dir=str(Path(out_dir) / "trials"), seed=trial["seed"])
    data["model"]["name_or_path"] = trial["path"]
    data["finetune"]["train_fraction"] = trial["fraction"]
    if shards_dir is not None:
        data["data"]["shards_dir"] = str(shards_dir)
    set_values(data, trial["point"], "finetune.grid")
    return recipe_from_dict(data, f"<trial {trial_id(trial)}>")
