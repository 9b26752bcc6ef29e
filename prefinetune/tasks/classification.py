"""Classification, single sentence or pair: one head per dataset, cross-entropy, n = number of classes.

Everything a task family needs lives here: how shard rows become a batch, the loss, the n used for
log(n) scaling, and the metrics. The head itself sits in `prefinetune.model.heads` (a bank shared
by all classification tasks, so every rank builds the same graph).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score

__all__ = ["collate", "loss", "num_predictions", "predict", "metrics"]


def collate(rows: dict[str, list], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad `input_ids` (and `token_type_ids`) of shard rows to the longest row; labels as a tensor."""
    ids = rows["input_ids"]
    width = max(len(r) for r in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(ids), width), dtype=torch.long)
    for i, r in enumerate(ids):
        input_ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        attention[i, : len(r)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention,
             "labels": torch.as_tensor(rows["label"], dtype=torch.long)}
    if "token_type_ids" in rows:
        types = torch.zeros_like(input_ids)
        for i, r in enumerate(rows["token_type_ids"]):
            types[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        batch["token_type_ids"] = types
    return batch


def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the batch, computed in fp32."""
    return F.cross_entropy(logits.float(), labels)


def num_predictions(num_labels: int) -> int:
    """n for log(n) scaling: the number of classes."""
    return num_labels


def predict(logits: torch.Tensor) -> np.ndarray:
    return logits.argmax(dim=-1).cpu().numpy()


def metrics(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy (dataset-specific F1 / Matthews correlation come with the families issue)."""
    return {"accuracy": float(accuracy_score(labels, predictions))}
