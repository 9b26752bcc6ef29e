"""What a fine-tuning run leaves beside its export: `finetune.json`, the one file a comparison or a user
reads: the task, the splits that selected and scored, the starting head, the final metrics of both
splits, and the standard Hugging Face folder of the fine-tuned model where transformers has a class.

    summary = write_summary(recipe, final_metrics, export_dir)
"""
from __future__ import annotations

import json
from pathlib import Path

from prefinetune.data.shards import read_manifest
from prefinetune.export.folder import read_tasks_info
from prefinetune.finetune.head_reuse import start_heads_note
from prefinetune.finetune.splits import finetune_roles

__all__ = ["SUMMARY_FILE", "write_summary", "split_metrics"]

SUMMARY_FILE = "finetune.json"


def split_metrics(metrics: dict, split: str, task: str) -> dict[str, float]:
    """{metric: value} of one task on one split, from `{split}/{task}/{metric}` keys."""
    prefix = f"{split}/{task}/"
    return {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}


def write_summary(recipe, metrics: dict, export_dir: Path) -> dict:
    task = recipe.tasks[0]
    roles = finetune_roles(recipe, read_manifest(recipe.shards_path))
    entry = next(t for t in read_tasks_info(export_dir)["tasks"] if t["name"] == task.name)
    folder = str(Path(export_dir) / entry["folder"]) if entry["folder"] else None
    summary = {"task": task.name, "family": task.family, "model": recipe.model.name_or_path,
               "updates": recipe.train.updates, "train_fraction": recipe.finetune.train_fraction,
               "select_split": roles.select, "test_split": roles.test, "head": start_heads_note(recipe),
               "select": split_metrics(metrics, roles.select, task.name),
               "test": split_metrics(metrics, roles.test, task.name),
               "model_folder": folder, "model_class": entry.get("auto_class"),
               "model_folder_skipped": entry["folder_skipped"],
               "export": str(export_dir)}
    (recipe.run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    where = (f"{folder} ({entry.get('auto_class')})" if folder else
             f"{export_dir} (prefinetune.export.load_exported; {entry['folder_skipped']})")
    print(f"[prefinetune] fine-tuned {task.name}: {summary['head']}; the model: {where}", flush=True)
    return summary
