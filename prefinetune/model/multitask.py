"""The multi-task model: a Hugging Face encoder backbone plus the task heads.

    model = build_model(recipe)                  # backbone from recipe.model, heads from recipe.tasks
    logits = model(task_id=0, input_ids=..., attention_mask=...)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from prefinetune.model.heads import ClassificationHeadBank
from prefinetune.model.source import resolve_model_source

__all__ = ["TaskHead", "MultiTaskModel", "freeze_pooler", "load_backbone", "build_model"]


@dataclass(frozen=True)
class TaskHead:
    """What the model needs to know about one task."""
    name: str
    family: str
    num_labels: int


class MultiTaskModel(nn.Module):
    def __init__(self, backbone: nn.Module, tasks: list[TaskHead], head_dropout: float):
        super().__init__()
        unknown = sorted({t.family for t in tasks} - {"classification"})
        if unknown:
            raise ValueError(f"task families not supported yet: {unknown}")
        self.backbone = backbone
        freeze_pooler(backbone)
        self.tasks = list(tasks)
        self.classification = ClassificationHeadBank(
            backbone.config.hidden_size, [t.num_labels for t in tasks], head_dropout)

    def task_id(self, name: str) -> int:
        for i, t in enumerate(self.tasks):
            if t.name == name:
                return i
        raise KeyError(f"unknown task {name!r}; the model has {[t.name for t in self.tasks]}")

    def forward(self, task_id: int, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.backbone(**inputs).last_hidden_state
        return self.classification(hidden[:, 0], task_id)


def freeze_pooler(backbone: nn.Module) -> None:
    """The heads read the first token's hidden state, so a BERT-style pooler is never used. It is kept
    (the export stays a complete AutoModel) but frozen: a trainable parameter that no rank's graph
    touches has no place in ZeRO's gradient buckets."""
    pooler = getattr(backbone, "pooler", None)
    if isinstance(pooler, nn.Module):
        pooler.requires_grad_(False)


def load_backbone(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False):
    """AutoModel from the hub, a local folder or a `pkg:` model."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(resolve_model_source(name_or_path), revision=revision,
                                     trust_remote_code=trust_remote_code)


def build_model(recipe, backbone: nn.Module | None = None) -> MultiTaskModel:
    """The model for a recipe; `backbone` replaces the recipe's (tests pass tiny random ones)."""
    if backbone is None:
        m = recipe.model
        backbone = load_backbone(m.name_or_path, m.revision, m.trust_remote_code)
    heads = [TaskHead(t.name, t.family, t.num_labels) for t in recipe.tasks]
    return MultiTaskModel(backbone, heads, recipe.model.head_dropout)
