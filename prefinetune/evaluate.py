"""Per-task evaluation on a held-out split, spread over workers: task i is scored by rank i mod W,
and every rank receives every task's metrics."""
from __future__ import annotations

import numpy as np
import torch

from prefinetune.tasks import family_module

__all__ = ["evaluate_task", "evaluate_tasks"]


@torch.no_grad()
def evaluate_task(model, task_id: int, task, split, pad_id: int, batch_size: int,
                  max_rows: int | None, device: torch.device) -> dict[str, float]:
    """Metrics of one task on (the first `max_rows` rows of) a split; the model is left in train mode."""
    family = family_module(task.family)
    rows = range(min(len(split), max_rows or len(split)))
    predictions, labels = [], []
    model.eval()
    try:
        for start in range(0, len(rows), batch_size):
            batch = family.collate(split.take(list(rows[start:start + batch_size])), pad_id)
            labels.append(batch.pop("labels").numpy())
            logits = model(task_id=task_id, **{k: v.to(device) for k, v in batch.items()})
            predictions.append(family.predict(logits))
    finally:
        model.train()
    result = family.metrics(np.concatenate(predictions), np.concatenate(labels))
    return {**result, "rows": len(rows)}


def evaluate_tasks(model, tasks, splits: dict, pad_id: int, batch_size: int, max_rows: int | None,
                   device: torch.device, rank: int = 0, world_size: int = 1) -> dict[str, dict[str, float]]:
    """Metrics of every task that has the split; each rank scores its share, all ranks get all."""
    mine = {}
    for i, task in enumerate(tasks):
        if i % world_size == rank and task.name in splits:
            mine[task.name] = evaluate_task(model, i, task, splits[task.name], pad_id, batch_size,
                                            max_rows, device)
    if world_size == 1:
        return mine
    gathered: list = [None] * world_size
    torch.distributed.all_gather_object(gathered, mine)
    return {name: m for part in gathered for name, m in sorted(part.items())}
