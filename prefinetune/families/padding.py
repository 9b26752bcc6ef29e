"""Padding shared by the task families' collate functions: ragged token lists -> padded tensors."""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["pad", "sequence_batch"]


def pad(sequences: Sequence[Sequence[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, longest] tensor of `sequences` padded with `value`, and the 0/1 mask of real tokens."""
    width = max((len(s) for s in sequences), default=0)
    out = torch.full((len(sequences), width), value, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return out, mask


def sequence_batch(rows: dict[str, list], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask [B, L] (and token_type_ids when the shards have them) of shard rows."""
    input_ids, attention = pad(rows["input_ids"], pad_id)
    batch = {"input_ids": input_ids, "attention_mask": attention}
    if "token_type_ids" in rows:
        batch["token_type_ids"] = pad(rows["token_type_ids"], 0)[0]
    return batch
