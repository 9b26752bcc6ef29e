"""Per-task evaluation on a held-out split, spread over workers: task i is scored by rank i mod W with
its family's `evaluate` (accuracy/F1/MCC, Pearson/Spearman, choice accuracy, SQuAD EM/F1, ROUGE), and
every rank receives every task's metrics."""
from __future__ import annotations

import torch

from prefinetune.distributed import collectives
from prefinetune.families.family import get_family

__all__ = ["evaluate_task", "evaluate_tasks"]


def evaluate_task(model, task_id: int, task, split, pad_id: int, batch_size: int, max_rows: int | None,
                  device: torch.device, tokenizer=None) -> dict[str, float]:
    """Metrics of one task on (the first `max_rows` rows or examples of) a split."""
    return get_family(task.family).evaluate(model, task_id, task, split, pad_id, batch_size, max_rows, device,
                                            tokenizer)


def evaluate_tasks(model, tasks, splits: dict, pad_id: int, batch_size: int, max_rows: int | None,
                   device: torch.device, rank: int = 0, world_size: int = 1, tokenizer=None) -> dict:
    """Metrics of every task that has the split; each rank scores its share, all ranks get all."""
    mine = {}
    for i, task in enumerate(tasks):
        if i % world_size == rank and task.name in splits:
            mine[task.name] = evaluate_task(model, i, task, splits[task.name], pad_id, batch_size,
                                            max_rows, device, tokenizer)
    return {name: m for part in collectives.all_gather_object(mine) for name, m in sorted(part.items())}
