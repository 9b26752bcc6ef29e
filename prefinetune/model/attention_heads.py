"""Wolfe & Lundgaard's low-dimensional attention heads (`model.head: attention`) for the datasets of a task
bank (classification, regression), and DyPa's widths (`model.head_dim: dypa`).

    bank = AttentionHeadBank(hidden_size=384, num_labels=[3, 2, 1], widths=[64, 64, 128], attention_heads=1,
                             dropout=0.1)
    logits = bank.read(features, task_index)        # [N, num_labels[task_index]]
    widths = dypa_widths({"mnli": 392702, "rte": 2490, "cola": 8551}, [0.25, 0.5, 0.75], [128, 256, 512, 1024])

Task t's head: the token states [N, L, H] projected to its width d_t, one self-attention layer over the
real tokens (`attention_heads` heads of d_t / heads), the mean over the real tokens, dropout and a linear
classifier. At d_t = 64 and H = 768 that is 66k parameters a task against 590k for Muppet's dense H x H head.

Stacked like every bank of this project (prefinetune/model/heads.py: the same graph on every rank under
ZeRO): the tasks of one width share a group whose tensors have a row per task, and every forward runs every
group in a fixed order, the task's own on the batch, the others on the first token only with weight 0.
Rows of tasks not run get exactly zero gradient, so HeadAwareAdamW leaves them bit-identical.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from prefinetune.model.heads import spectrally_normalised

__all__ = ["AttentionHeadBank", "dypa_widths", "task_widths", "group_key"]


def group_key(width: int) -> str:
    """The name of the group of heads of one width (its tensors: groups.<key>.*)."""
    return f"d{width}"


def dypa_widths(rows: dict[str, int], bounds: list[float], sizes: list[int]) -> dict[str, int]:
    """DyPa: each task's head width by the quantile band its training rows fall in among `rows`' tasks:
    sizes[0] at or below the rows at quantile bounds[0], sizes[i] above bounds[i-1]'s and at or below
    bounds[i]'s, sizes[-1] above the last (numpy's linear quantiles of the tasks' row counts)."""
    counts = np.array(list(rows.values()), dtype=np.float64)
    cuts = np.quantile(counts, bounds)
    return {name: sizes[int(np.searchsorted(cuts, n, side="left"))] for name, n in rows.items()}


def task_widths(model, names: list[str], rows: dict[str, int] | None) -> dict[str, int]:
    """The head width of each of `names` (the attention-head tasks) under the recipe's model section: one
    number, a width per task, or DyPa's from `rows` (their training rows; needed only for dypa)."""
    from prefinetune.recipe.config import DEFAULT_HEAD_DIM, DypaSection

    if isinstance(model.head_dim, dict):
        return {n: model.head_dim[n] for n in names}
    if model.head_dim != "dypa":
        return {n: model.head_dim or DEFAULT_HEAD_DIM for n in names}
    missing = [n for n in names if rows is None or n not in rows]
    if missing:
        raise ValueError(f"model.head_dim dypa sizes heads by training rows, and none are known for {missing} "
                         "(prepare the shards first)")
    dypa = model.dypa or DypaSection()
    return dypa_widths({n: rows[n] for n in names}, dypa.bounds, dypa.sizes) if names else {}


class _WidthGroup(nn.Module):
    """The heads of the tasks of one width d: a row per task in each tensor."""

    def __init__(self, tasks: int, hidden_size: int, width: int, labels: int, attention_heads: int, init_std: float):
        super().__init__()
        self.width, self.attention_heads = width, attention_heads
        shapes = {"in": (width, hidden_size), "qkv": (3 * width, width), "o": (width, width), "out": (labels, width)}
        for name, (rows, cols) in shapes.items():
            weight = torch.empty(tasks, rows, cols).normal_(std=init_std)
            self.register_parameter(f"{name}_weight", nn.Parameter(weight))
            self.register_parameter(f"{name}_bias", nn.Parameter(torch.zeros(tasks, rows)))

    def weights(self, row: int, labels: int, spectral_norm: bool) -> dict[str, torch.Tensor]:
        """One task's tensors (the classifier trimmed to its labels); R4F divides each matrix by its spectral norm."""
        w = {name: getattr(self, f"{name}_weight")[row] for name in ("in", "qkv", "o", "out")}
        w["out"] = w["out"][:labels]
        if spectral_norm:
            w = {name: spectrally_normalised(m) for name, m in w.items()}
        b = {name: getattr(self, f"{name}_bias")[row] for name in ("in", "qkv", "o", "out")}
        b["out"] = b["out"][:labels]
        return {**{f"{k}.weight": v for k, v in w.items()}, **{f"{k}.bias": v for k, v in b.items()}}

    def forward(self, states: torch.Tensor, mask: torch.Tensor, row: int, labels: int, dropout: nn.Dropout,
                spectral_norm: bool) -> torch.Tensor:
        w = self.weights(row, labels, spectral_norm)
        n, length, _ = states.shape
        x = F.linear(dropout(states), w["in.weight"], w["in.bias"])                       # [N, L, d]
        q, k, v = (t.reshape(n, length, self.attention_heads, -1).transpose(1, 2)
                   for t in F.linear(x, w["qkv.weight"], w["qkv.bias"]).chunk(3, dim=-1))
        real = mask.bool()
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=real[:, None, None, :])
        attended = F.linear(attended.transpose(1, 2).reshape(n, length, self.width), w["o.weight"], w["o.bias"])
        keep = real.unsqueeze(-1).to(attended.dtype)
        pooled = (attended * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)             # mean over real tokens
        return F.linear(dropout(pooled), w["out.weight"], w["out.bias"])


class AttentionHeadBank(nn.Module):
    """Attention heads for T tasks with hidden size H; task t has num_labels[t] outputs and width widths[t]."""

    def __init__(self, hidden_size: int, num_labels: list[int], widths: list[int], attention_heads: int,
                 dropout: float, init_std: float = 0.02, spectral_norm: bool = False):
        super().__init__()
        if len(widths) != len(num_labels):
            raise ValueError(f"{len(num_labels)} tasks but {len(widths)} head widths")
        self.num_labels, self.widths = list(num_labels), list(widths)
        self.attention_heads, self.spectral_norm = attention_heads, spectral_norm
        self.dropout = nn.Dropout(dropout)
        self.place = self.placement(widths)
        groups = {}
        for width in sorted(set(widths)):
            members = [t for t, w in enumerate(widths) if w == width]
            labels = max(num_labels[t] for t in members)
            groups[group_key(width)] = _WidthGroup(len(members), hidden_size, width, labels, attention_heads, init_std)
        self.groups = nn.ModuleDict(groups)

    @staticmethod
    def placement(widths: list[int]) -> list[tuple[str, int]]:
        """Task t's (group, row): its width's group, rows in task order."""
        seen: dict[int, int] = {}
        out = []
        for width in widths:
            out.append((group_key(width), seen.get(width, 0)))
            seen[width] = seen.get(width, 0) + 1
        return out

    def read(self, features, task_index: int) -> torch.Tensor:
        """Logits [N, num_labels[task_index]] from the token states of a batch's Features."""
        return self(features.states, features.mask, task_index)

    def forward(self, states: torch.Tensor, mask: torch.Tensor, task_index: int) -> torch.Tensor:
        key, row = self.place[task_index]
        idle = states.new_zeros((), dtype=torch.float32)
        logits = None
        for name, group in self.groups.items():        # a fixed order: the same graph on every rank
            if name == key:
                logits = group(states, mask, row, self.num_labels[task_index], self.dropout, self.spectral_norm)
            else:                                      # cheaply: the first token, row 0, weight 0
                idle = idle + group(states[:, :1], mask[:, :1], 0, 1, self.dropout, self.spectral_norm).float().sum()
        return logits + (idle * 0.0).to(logits.dtype)

    def copy_task(self, saved: dict[str, torch.Tensor], key: str, row: int) -> None:
        """Fine-tuning: this bank serves one task; start it from row `row` of group `key` of a saved bank
        (`saved`: tensors as this bank's state_dict names them, e.g. groups.d64.in_weight)."""
        own_key, _ = self.place[0]
        if own_key != key:
            raise ValueError(f"the saved attention head is of width {key[1:]}, this task's is {own_key[1:]}")
        with torch.no_grad():
            for name, tensor in self.groups[key].named_parameters():
                source = saved.get(f"groups.{key}.{name}")
                if source is None:
                    raise ValueError(f"the saved attention head has no tensor groups.{key}.{name} "
                                     f"(it has {sorted(saved)})")
                source = source[row]
                if source.dim() != tensor[0].dim() or any(s < t for s, t in zip(source.shape, tensor[0].shape)):
                    raise ValueError(f"the saved attention head's {name} is {tuple(source.shape)}, too small for "
                                     f"{tuple(tensor[0].shape)}")
                tensor[0].copy_(source[tuple(slice(0, d) for d in tensor[0].shape)])
