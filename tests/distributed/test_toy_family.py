"""Adding a task family touches one module: a toy family defined in this file alone (its head, loss,
n, registration) trains beside a built-in one under DeepSpeed ZeRO-2 on 2 gloo workers, and matches
the single-process reference, with no change to prefinetune's core.

The toy family ("toy_linear") reads classification data but serves it with a plain linear layer per
task (no dense + tanh), label-smoothed cross-entropy, n = number of classes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_zero_parity import _assert_ranks_match, _family_reference, _run_workers  # noqa: E402
from tiny import ArraySplit, tiny_bert, tiny_recipe  # noqa: E402

from prefinetune.families import classification
from prefinetune.families.family import Family, get_family, register_family
from prefinetune.model.multitask import build_model
from prefinetune.recipe.config import recipe_from_dict


class LinearBank(nn.Module):
    """One [C, H] projection per task, stacked, so every rank builds the same graph."""

    def __init__(self, hidden: int, num_labels: list[int]):
        super().__init__()
        self.num_labels = num_labels
        self.weight = nn.Parameter(torch.randn(len(num_labels), max(num_labels), hidden) * 0.02)
        self.bias = nn.Parameter(torch.zeros(len(num_labels), max(num_labels)))

    def forward(self, pooled: torch.Tensor, index: int) -> torch.Tensor:
        n = self.num_labels[index]
        return pooled @ self.weight[index, :n].T + self.bias[index, :n]


class ToyLinear(Family):
    name = "toy_linear"
    roles = classification.FAMILY.roles
    to_record = staticmethod(classification.to_record)
    tokenize = staticmethod(classification.tokenize)
    shard_schema = staticmethod(classification.shard_schema)
    collate = staticmethod(classification.collate)

    def check_task(self, task) -> None:
        if not task.label_names:
            raise ValueError("toy_linear needs label_names")

    def num_labels(self, task) -> int:
        return len(task.label_names)

    def build_head(self, tasks, hidden_size, dropout, spectral_norm):
        return LinearBank(hidden_size, [t.num_labels for t in tasks])

    def head_outputs(self, head, task, batch, features):
        return head(features.pooled, task.family_index if task is not None else 0)

    def loss(self, outputs, batch, task):
        return F.cross_entropy(outputs.float(), batch["labels"], label_smoothing=0.1)

    def num_predictions(self, task, batch, outputs):
        return task.num_labels


register_family(ToyLinear())


def toy_splits(recipe) -> dict[str, ArraySplit]:
    return {t.name: ArraySplit(30, t.num_labels, seed=i) for i, t in enumerate(recipe.tasks)}


def _recipe() -> dict:
    recipe = tiny_recipe(deepspeed={"zero_stage": 2}, run={"seed": 5},
                         train={"updates": 3, "slots_per_update": 6, "batch_size": 3})
    for task, family in zip(recipe["tasks"], ["classification", "toy_linear", "toy_linear"]):
        task["family"] = family
    return recipe


def test_the_toy_family_is_asked_like_a_built_in_one():
    recipe = recipe_from_dict(_recipe())
    assert [t.num_labels for t in recipe.tasks] == [2, 3, 4]
    model = build_model(recipe, backbone=tiny_bert(seed=0))
    assert model.families == ["classification", "toy_linear"]
    assert isinstance(model.toy_linear, LinearBank) and model.toy_linear.weight.shape == (2, 4, 32)
    batch = get_family("toy_linear").collate(toy_splits(recipe)["four"].take([0, 1]), 0, recipe.task("four"))
    out = model(model.task_id("four"), batch)
    assert out["outputs"].shape == (2, 4) and float(out["inactive"]) == 0.0


@pytest.mark.slow
def test_a_family_defined_in_a_test_trains_under_zero2_parity(tmp_path, gloo):
    recipe_dict = _recipe()
    recipe = recipe_from_dict(recipe_dict)
    ranks = _run_workers(gloo, recipe_dict, tmp_path, "bert", toy_splits)
    family = {t.name: t.family for t in recipe.tasks}
    pairs = [(family[a], family[b]) for u0, u1 in zip(ranks[0]["tasks"], ranks[1]["tasks"]) for a, b in zip(u0, u1)]
    assert any(a != b for a, b in pairs), f"the ranks never ran different families at once: {pairs}"
    reference = _family_reference(recipe, "bert", data_kind=toy_splits)
    _assert_ranks_match(ranks, reference)
    initial = build_model(recipe, backbone=tiny_bert(seed=0)).state_dict()
    assert not torch.equal(reference["toy_linear.weight"], initial["toy_linear.weight"]), "the toy head never trained"
