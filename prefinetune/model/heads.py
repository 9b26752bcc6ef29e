"""The heads the built-in families build: `HeadBank`, one RoBERTa-style head per task (dense, tanh,
dropout, projection) stored as stacked parameters indexed by task (classification: a head per dataset;
regression: one output per dataset; multiple choice: one shared scorer); `SpanHead`; `TiedLMHead`.

Two designs of a bank (`model.head_dense`): `per_task`, Muppet's, a dense H x H layer per dataset
(T * H^2 parameters: 147M at 1000 tasks on H = 384, 590M on H = 768); `shared`, one dense layer for
all of a family's datasets and a projection per dataset (H^2 + T * C * H), which scales to thousands.

Why stacked: under DeepSpeed ZeRO-1/2, gradients are reduced in buckets filled by backward hooks.
If each rank ran a different `nn.Module` head, ranks would fill different buckets in a step and the
collectives would mismatch (crash, hang or silently wrong gradients). With one stacked tensor per
weight, every rank's backward touches the same parameters in the same order, whichever task it runs;
rows of tasks not run receive zero gradient, exactly as they would under DDP.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["HeadBank", "SpanHead", "TiedLMHead", "spectrally_normalised"]



class HeadBank(nn.Module):
    """Heads for T tasks with hidden size H; task t has num_labels[t] outputs (padded to the max)."""

    def __init__(self, hidden_size: int, num_labels: list[int], dropout: float, init_std: float = 0.02,
                 spectral_norm: bool = False, shared_dense: bool = False):
        super().__init__()
        self.spectral_norm, self.shared_dense = spectral_norm, shared_dense
        tasks, width = len(num_labels), max(num_labels)
        self.num_labels = list(num_labels)
        dense = 1 if shared_dense else tasks
        self.dense_weight = nn.Parameter(torch.empty(dense, hidden_size, hidden_size))
        self.dense_bias = nn.Parameter(torch.zeros(dense, hidden_size))
        self.out_weight = nn.Parameter(torch.empty(tasks, width, hidden_size))
        self.out_bias = nn.Parameter(torch.zeros(tasks, width))
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.dense_weight, std=init_std)
        nn.init.normal_(self.out_weight, std=init_std)

    def weights(self, task_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(dense [H, H], out_proj [C, H]) of one task; with spectral_norm (R4F) each divided by its
        largest singular value, computed exactly (no power-iteration state that ranks could disagree on)."""
        dense, out = self.dense_weight[self._dense(task_id)], self.out_weight[task_id, : self.num_labels[task_id]]
        if self.spectral_norm:
            dense, out = spectrally_normalised(dense), spectrally_normalised(out)
        return dense, out

    def _dense(self, task_id: int) -> int:
        return 0 if self.shared_dense else task_id

    def read(self, features, task_id: int) -> torch.Tensor:
        """Logits from a batch's Features (this head reads the pooled state)."""
        return self(features.pooled, task_id)

    def forward(self, features: torch.Tensor, task_id: int) -> torch.Tensor:
        """Logits [batch, num_labels[task_id]] from the first-token features [batch, H]."""
        dense, out = self.weights(task_id)
        x = self.dropout(features)
        x = torch.tanh(x @ dense.T + self.dense_bias[self._dense(task_id)])
        x = self.dropout(x)
        return x @ out.T + self.out_bias[task_id, : self.num_labels[task_id]]

    def head_state(self, task_id: int) -> dict[str, torch.Tensor]:
        """One task's head as separate tensors (for export), trimmed to its classes; R4F's normalisation
        baked in, so a plain head computes the same function."""
        n = self.num_labels[task_id]
        dense, out = self.weights(task_id)
        return {"dense.weight": dense, "dense.bias": self.dense_bias[self._dense(task_id)],
                "out_proj.weight": out, "out_proj.bias": self.out_bias[task_id, :n]}


def spectrally_normalised(weight: torch.Tensor) -> torch.Tensor:
    """The matrix divided by its spectral norm (largest singular value), differentiably."""
    return weight / torch.linalg.matrix_norm(weight.float(), ord=2).to(weight.dtype)


class SpanHead(nn.Linear):
    """The one span head shared by every extractive task: start and end logits per token [N, L] each,
    padding at -1e4; with spectral_norm (R4F) the [2, H] weight is divided by its spectral norm."""

    def __init__(self, hidden_size: int, spectral_norm: bool = False, init_std: float = 0.02):
        super().__init__(hidden_size, 2)
        self.spectral_norm = spectral_norm
        nn.init.normal_(self.weight, std=init_std)
        nn.init.zeros_(self.bias)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weight = spectrally_normalised(self.weight) if self.spectral_norm else self.weight
        logits = nn.functional.linear(states, weight, self.bias).float()
        pad = ~mask.bool()
        start, end = (x.squeeze(-1).masked_fill(pad, -1e4) for x in logits.split(1, dim=-1))
        return start, end


class TiedLMHead(nn.Module):
    """Summarization's head: the backbone's LM logits (BART's tied embeddings), no parameters of its own."""

    def forward(self, states: torch.Tensor, lm_logits) -> torch.Tensor:
        return lm_logits(states)
