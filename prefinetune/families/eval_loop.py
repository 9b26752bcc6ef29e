"""Evaluation pieces shared by the families: the model in eval mode for a block (`eval_mode`), and the
loop of the row-wise families (classification, regression, multiple choice): batches of the first
`max_rows` rows of a split, labels and predictions gathered."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch

__all__ = ["to_device", "eval_mode", "predict_rows"]


def to_device(batch: dict, device) -> dict:
    """Tensors of a batch moved to `device`; plain values (e.g. num_choices) kept."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@contextmanager
def eval_mode(model):
    """Dropout off inside the block; the model's train/eval mode is restored after, whatever happens."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def predict_rows(model, task_id: int, task, split, pad_id: int, batch_size: int, max_rows, device,
                 collate: Callable, predict: Callable) -> tuple[np.ndarray, np.ndarray, int]:
    """(predictions, labels, rows) over the first `max_rows` rows; `predict(outputs, batch)` -> array."""
    rows = range(min(len(split), max_rows or len(split)))
    predictions, labels = [], []
    with eval_mode(model):
        for start in range(0, len(rows), batch_size):
            batch = collate(split.take(list(rows[start:start + batch_size])), pad_id, task)
            labels.append(batch["labels"].numpy())
            predictions.append(predict(model(task_id, to_device(batch, device))["outputs"], batch))
    if not labels:
        return np.zeros(0), np.zeros(0), 0
    return np.concatenate(predictions), np.concatenate(labels), len(rows)
