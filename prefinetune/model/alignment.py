"""Wu, Zhang & Ré's covariance alignment (`model.alignment: per_task`): a d x d matrix R_t per task,
identity at the start, that rotates what the task feeds the shared encoder (Algorithm 1: Z_t = E_t R_t, the
task's input embeddings; `model.alignment_at: embeddings`), or what the encoder gives the task's head
(`alignment_at: outputs`).

    align = TaskAlignment(tasks=3, hidden_size=384)
    aligned = align(embeddings, task_index)         # [N, L, H] @ R_t: unchanged until R_t trains

One stacked [T, H, H] tensor, indexed by task: every rank's backward touches the same parameter whatever
task it runs, and the rows of tasks not run get exactly zero gradient (HeadAwareAdamW keeps them
bit-identical). R_t is never weight-decayed (prefinetune/model/optim.py): decay would pull it towards 0,
not towards the identity it starts from.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["TaskAlignment"]


class TaskAlignment(nn.Module):
    def __init__(self, tasks: int, hidden_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.eye(hidden_size).repeat(tasks, 1, 1))

    def forward(self, x: torch.Tensor, task_index: int) -> torch.Tensor:
        """x [..., H] @ R_t (a row vector times the task's matrix)."""
        return x @ self.weight[task_index].to(x.dtype)
