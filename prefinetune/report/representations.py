"""Each task's representations under an export: the pooled state (first token; BART: last real token) of
every sequence of the first `max_rows` rows of a split, as the task's head reads the backbone. A
multiple-choice row gives one sequence per real choice (the padding choices of a batch are left out).

    reps = task_representations(model, info, recipe.tasks, "dev", data_root, tokenizer, max_rows=256)
"""
from __future__ import annotations

import numpy as np
import torch

from prefinetune.families.eval_loop import eval_mode, to_device
from prefinetune.families.family import get_family
from prefinetune.predict.task_predictions import export_head, read_rows

__all__ = ["representations", "task_representations"]


@torch.no_grad()
def representations(model, task_id: int, task, split, pad_id: int, batch_size: int, max_rows: int | None,
                    device="cpu") -> np.ndarray:
    """(sequences x H) pooled states of the first `max_rows` rows of `split` (a TaskSplit)."""
    family, count, parts = get_family(task.family), min(len(split), max_rows or len(split)), []
    with eval_mode(model):
        for start in range(0, count, batch_size):
            batch = family.collate(split.take(list(range(start, min(start + batch_size, count)))), pad_id, task)
            pooled = model.pooled(task_id, to_device(batch, device)).float().cpu()
            if "choice_mask" in batch:            # multiple choice: the real choices only
                pooled = pooled[batch["choice_mask"].reshape(-1)]
            parts.append(pooled.numpy())
    return np.concatenate(parts) if parts else np.zeros((0, model.backbone.config.hidden_size))


def task_representations(model, info: dict, tasks: list, split: str, data_root, tokenizer, max_rows: int | None,
                         batch_size: int = 32, device="cpu") -> dict[str, np.ndarray]:
    """{task: representations} for every task (recipe TaskConfigs with a head in the export) that has `split`."""
    out = {}
    for task in tasks:
        if split not in task.labeled_splits:
            continue
        rows, _ = read_rows(task, split, data_root, tokenizer, info["model"]["max_length"])
        out[task.name] = representations(model, export_head(info, task), task, rows, tokenizer.pad_token_id,
                                         batch_size, max_rows, device)
    return out
