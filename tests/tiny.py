"""Tiny random backbones and in-memory task splits for fast tests (no download, no shards)."""
from __future__ import annotations

import numpy as np
import torch

TINY_BERT = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=48, max_position_embeddings=64, type_vocab_size=2,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny_bert(seed: int = 0):
    from transformers import AutoModel, BertConfig

    torch.manual_seed(seed)
    return AutoModel.from_config(BertConfig(**TINY_BERT))


class ArraySplit:
    """A task split held in memory: random token ids of varied length and random labels."""

    def __init__(self, rows: int, num_labels: int, seed: int, vocab: int = 64):
        rng = np.random.default_rng(seed)
        lengths = rng.integers(4, 12, size=rows)
        self.input_ids = [[2] + rng.integers(5, vocab, size=n - 1).tolist() for n in lengths]
        self.labels = rng.integers(0, num_labels, size=rows)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices) -> dict[str, list]:
        return {"input_ids": [self.input_ids[i] for i in indices],
                "label": [int(self.labels[i]) for i in indices]}


def tiny_recipe(**sections) -> dict:
    """A recipe dict for three classification tasks with 2, 3 and 4 labels."""
    recipe = {
        "model": {"name_or_path": "unused-tiny", "head_dropout": 0.0, "max_length": 16},
        "tasks": [
            {"name": name, "label_names": [f"l{i}" for i in range(k)], "format": "jsonl",
             "splits": {"train": f"{name}/train.jsonl"}, "columns": {"text": "text", "label": "label"}}
            for name, k in (("two", 2), ("three", 3), ("four", 4))],
        "train": {"updates": 3, "slots_per_update": 4, "batch_size": 3},
        "optim": {"lr": 1e-3, "warmup_updates": 1, "weight_decay": 0.01},
        "scaling": {"num_workers": 2, "use_gpu": False},
    }
    for key, value in sections.items():
        recipe.setdefault(key, {}).update(value)
    return recipe


def tiny_splits(recipe) -> dict[str, ArraySplit]:
    return {t.name: ArraySplit(40 + 10 * i, t.num_labels, seed=i) for i, t in enumerate(recipe.tasks)}
