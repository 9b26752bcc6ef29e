"""Tiny random backbones and in-memory task splits for fast tests (no download, no shards)."""
from __future__ import annotations

import numpy as np
import torch

TINY_BERT = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=48, max_position_embeddings=64, type_vocab_size=2,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)

# The multiple-choice head's bias adds one number to every choice's score, and the span head's two biases
# one to every position's start (end) score, which the softmax over the choices (positions) cancels: their
# gradient is zero but for rounding, and Adam's normalisation (eps 1e-6) turns that rounding into steps
# (measured: up to 1.7e-4 after 4 updates at lr 2e-2) whose values follow the order of the sums (the CPU's
# kernels, the worker count). Parity checks leave them out of the comparison and check instead that they
# stayed at that noise level.
ROUNDING_ONLY = frozenset({"multiple_choice.out_bias", "span.bias"})
ROUNDING_LEVEL = 1e-3


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

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.input_ids])

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


TINY_BART = dict(vocab_size=64, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=64,
                 pad_token_id=0, bos_token_id=2, eos_token_id=3, decoder_start_token_id=3,
                 dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)


def tiny_bart(seed: int = 0):
    from transformers import AutoModel, BartConfig

    torch.manual_seed(seed)
    return AutoModel.from_config(BartConfig(**TINY_BART))


class FamilySplit:
    """In-memory shard rows of any family (the columns its tokenize writes), random but seeded."""

    def __init__(self, family: str, rows: int, seed: int, num_labels: int = 2, vocab: int = 64):
        rng = np.random.default_rng(seed)
        seq = lambda n: [2] + rng.integers(5, vocab, size=n - 2).tolist() + [3]  # noqa: E731
        self.rows = []
        for _ in range(rows):
            n = int(rng.integers(6, 12))
            if family == "classification":
                row = {"input_ids": seq(n), "label": int(rng.integers(num_labels))}
            elif family == "regression":
                row = {"input_ids": seq(n), "label": float(rng.normal())}
            elif family == "multiple_choice":
                k = 3
                row = {"input_ids": [seq(int(rng.integers(6, 12))) for _ in range(k)],
                       "label": int(rng.integers(k)), "num_choices": k}
            elif family == "span":
                s = int(rng.integers(1, n - 2))
                row = {"input_ids": seq(n), "start_position": s, "end_position": int(rng.integers(s, n - 1))}
            elif family == "summarization":
                row = {"input_ids": seq(n), "target_ids": seq(int(rng.integers(4, 8)))}
            elif family == "tagging":
                tags = [-100] + rng.integers(num_labels, size=n - 2).tolist() + [-100]
                row = {"input_ids": seq(n), "tags": tags, "words": n - 2, "tagged_words": n - 2}
            else:
                raise ValueError(family)
            row["length"] = n
            self.rows.append(row)

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, indices) -> dict[str, list]:
        return {k: [self.rows[i][k] for i in indices] for k in self.rows[0]}


def mixed_recipe(families, **sections) -> dict:
    """A recipe dict with one task per family given (two classification tasks when it is included)."""
    columns = {"classification": {"text": "t", "label": "l"}, "regression": {"text": "t", "label": "l"},
               "multiple_choice": {"text": "t", "choices": "c", "label": "l"},
               "span": {"context": "c", "question": "q", "answers": "a"},
               "summarization": {"text": "t", "target": "s"}, "tagging": {"tokens": "w", "tags": "p"}}
    tasks = []
    for family in families:
        for k in ((2, 3) if family == "classification" else (4,) if family == "tagging" else (None,)):
            task = {"name": f"{family}{k or ''}", "family": family, "columns": columns[family],
                    "splits": {"train": "x.jsonl"}}
            if k:
                task["label_names"] = [f"l{i}" for i in range(k)]
            tasks.append(task)
    recipe = tiny_recipe(**sections)
    recipe["tasks"] = tasks
    return recipe


def family_splits(recipe) -> dict:
    return {t.name: FamilySplit(t.family, 30, seed=i, num_labels=t.num_labels if t.label_names else 2)
            for i, t in enumerate(recipe.tasks)}


def table_split(table, family: str = "classification", name: str = "task"):
    """The real TaskSplit over a table that a family's tokenize produced (no shard files needed)."""
    from prefinetune.data.shards import TaskSplit

    return TaskSplit(name, "dev", table, {"family": family, "label_names": None, "splits": {"dev": {}}})
