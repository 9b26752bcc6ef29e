"""The head bank of a family with a head per dataset (classification, regression), as the recipe's model section
says: Muppet's fc heads (`HeadBank`, prefinetune/model/heads.py; `model.head_dense` per_task or shared) or Wolfe &
Lundgaard's attention heads (`AttentionHeadBank`, prefinetune/model/attention_heads.py; `model.head: attention`).

    head = task_bank_head([3, 2], hidden_size=384, dropout=0.1, spectral_norm=False, attention=([64, 128], 1))
    logits = head.read(features, task_index)
"""
from __future__ import annotations

from torch import nn

from prefinetune.model.attention_heads import AttentionHeadBank
from prefinetune.model.heads import HeadBank

__all__ = ["task_bank_head"]


def task_bank_head(num_labels: list[int], hidden_size: int, dropout: float, spectral_norm: bool,
                   shared_dense: bool = False, attention: tuple[list[int], int] | None = None) -> nn.Module:
    """Muppet's fc heads, or with `attention` ((width per task, attention heads)) the attention heads."""
    if attention is None:
        return HeadBank(hidden_size, num_labels, dropout, spectral_norm=spectral_norm, shared_dense=shared_dense)
    widths, heads = attention
    return AttentionHeadBank(hidden_size, num_labels, widths, heads, dropout, spectral_norm=spectral_norm)
