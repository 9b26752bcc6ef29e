"""One task's predictions on one split of its data: the split read as the recipe says (an unlabeled split's
targets not read), tokenized in memory as prepare would, and run through the export's head for the task.

    model, info = load_exported("runs/X/export")
    done = predict_task(model, info, recipe.task("rte"), "test", data_root, tokenizer, batch_size=32)
    write_jsonl(done, "runs/X/predictions/test/rte.jsonl")

A JSONL line: {"id", "prediction", "score"} and, on a labelled split, "gold" (the family says what each
holds: prefinetune.families.family.FamilyEvaluation.predictions).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from prefinetune.data.prepare import tokenize_records
from prefinetune.data.readers import SplitRead, read_split
from prefinetune.data.shards import TaskSplit
from prefinetune.families.family import get_family
from prefinetune.recipe.config import TaskConfig

__all__ = ["TaskPredictions", "export_head", "read_rows", "predict_task", "write_jsonl"]


@dataclass
class TaskPredictions:
    """What one task's split gave: its rows' predictions (with ids) and where they came from."""
    task: TaskConfig
    split: str
    source: str
    labeled: bool
    id_column: bool                    # the ids come from the split's `id` column (else row numbers)
    rows: list[dict[str, Any]] = field(default_factory=list)


def export_head(info: dict, task: TaskConfig) -> int:
    """The export's head index for the recipe's task, checked to be the same task (family, labels)."""
    by_name = {t["name"]: t for t in info["tasks"]}
    if task.name not in by_name:
        raise ValueError(f"the export has no head for task {task.name!r}; its tasks: {sorted(by_name)}")
    head = by_name[task.name]
    if head["family"] != task.family or head["num_labels"] != task.num_labels:
        raise ValueError(f"task {task.name!r}: the recipe's is {task.family} with {task.num_labels} outputs, the "
                         f"export's head {head['family']} with {head['num_labels']}")
    if head.get("label_names") and task.label_names and list(head["label_names"]) != list(task.label_names):
        raise ValueError(f"task {task.name!r}: the recipe's label_names {task.label_names} are not the export's "
                         f"{head['label_names']} (the head's outputs are in the export's order)")
    return head["head_index"]


def read_rows(task: TaskConfig, split: str, data_root, tokenizer, max_length: int) -> tuple[TaskSplit, SplitRead]:
    """`split` of `task` read (any bad row is an error naming file and row) and tokenized in memory as
    prepare would: (its rows as a TaskSplit, what the reader gave)."""
    read = read_split(task, split, data_root)
    table = tokenize_records(read.records, tokenizer, task, max_length)
    entry = {"family": task.family, "label_names": task.label_names, "num_labels": task.num_labels,
             "splits": {split: {"rows": table.num_rows}}}
    return TaskSplit(task.name, split, table, entry), read


def predict_task(model, info: dict, task: TaskConfig, split: str, data_root, tokenizer, batch_size: int,
                 device: torch.device | str = "cpu") -> TaskPredictions:
    """The predictions of `model` (an export's MultiTaskModel) for every row of `split` of `task`; any bad
    row is an error naming file and row (nothing is dropped)."""
    task_id = export_head(info, task)
    rows_split, read = read_rows(task, split, data_root, tokenizer, info["model"]["max_length"])
    if None in read.ids:
        raise ValueError(f"{read.source}: record {read.ids.index(None) + 1} has no id (columns.id "
                         f"{task.for_split(split).columns.id!r}); every predicted row needs one")
    repeated = sorted(str(i) for i, n in Counter(read.ids).items() if n > 1)[:5]
    if repeated:
        raise ValueError(f"{read.source}: ids {repeated} name more than one row; ids must be unique to predict")
    rows = get_family(task.family).predictions(model, task_id, task, rows_split, tokenizer.pad_token_id,
                                               batch_size, torch.device(device), tokenizer)
    if len(rows) != len(read.ids):
        raise RuntimeError(f"task {task.name!r} split {split!r}: {len(rows)} predictions for {len(read.ids)} rows")
    done = TaskPredictions(task, split, read.source, read.labeled, task.for_split(split).columns.id is not None)
    for row_id, row in zip(read.ids, rows):
        line = {"id": row_id, **row}
        if not read.labeled:
            line.pop("gold", None)
        done.rows.append(line)
    return done


def write_jsonl(done: TaskPredictions, path: str | Path) -> Path:
    """One JSON line per row, in the split's order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for line in done.rows:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return path
