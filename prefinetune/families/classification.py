"""Classification, single sentence or pair: one head per dataset, cross-entropy, n = number of classes.

Everything a task family needs lives here: how shard rows become a batch, the loss, the n used for
log(n) scaling, and the metrics. The head itself sits in `prefinetune.model.heads` (a bank shared
by all classification tasks, so every rank builds the same graph).

Data side: a record is {"text", "text_pair" (None for single-sentence tasks), "label" (class id)};
texts must be non-empty strings. Labels: with `label_map`, the raw value (as a string; JSON booleans
read as "true"/"false") must be one of its keys. Without it, a raw string equal to a label name is that
name; otherwise an int, or a string of digits, is a label id in 0..num_labels-1. Anything else is a bad
row. Shard rows: input_ids, token_type_ids (when the tokenizer makes them), label, length.
"""
from __future__ import annotations

from typing import Any, Union

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from prefinetune.families import FieldError
from prefinetune.families.eval_loop import predict_rows
from prefinetune.families.family import Family, register_family, softmax_entropy
from prefinetune.families.padding import sequence_batch
from prefinetune.families.records import DIGITS, call_encoder, sentence_schema, text_value
from prefinetune.model.task_banks import task_bank_head

__all__ = ["label_id", "to_record", "tokenize", "tokenize_encoded", "shard_schema", "split_stats", "collate", "loss",
           "num_predictions", "predict", "metrics", "evaluate", "predictions", "TARGETS", "ClassificationFamily",
           "FAMILY"]

TARGETS = ("labels",)


# ---------------------------------------------------------------- data side

def _label_key(raw: Any) -> Union[str, int]:
    if raw is None:
        raise FieldError("label", "missing")
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, (int, str)):
        return raw
    raise FieldError("label", f"label {raw!r} is a {type(raw).__name__}, not a name or an int id")


def label_id(raw: Any, task) -> int:
    """The class id of a raw label value under the rules in the module docstring."""
    names = task.label_names
    key = _label_key(raw)
    if task.label_map is not None:
        if str(key) not in task.label_map:
            raise FieldError("label", f"raw label {str(key)!r} is not a key of label_map {sorted(task.label_map)}")
        return names.index(task.label_map[str(key)])
    if isinstance(key, str):
        if key in names:
            return names.index(key)
        if not DIGITS.fullmatch(key):
            raise FieldError("label", f"raw label {key!r} is neither a label name {names} nor an int id")
        key = int(key)
    if not 0 <= key < len(names):
        raise FieldError("label", f"label id {key} is outside 0..{len(names) - 1} (label_names {names})")
    return key


def to_record(values: dict[str, Any], task) -> dict:
    """{"text", "text_pair", "label"} from one row's raw values; FieldError names the bad role."""
    record = {"text": text_value(values.get("text"), "text"), "text_pair": None}
    if task.columns.text_pair is not None:
        record["text_pair"] = text_value(values.get("text_pair"), "text_pair")
    record["label"] = label_id(values.get("label"), task)
    return record


def tokenize_encoded(records: list[dict], encode, task) -> dict[str, list]:
    """One shard row per record: the text (pair) encoded by `encode(texts, pairs)` (truncated longest-first)."""
    pairs = [r["text_pair"] for r in records] if task.columns.text_pair is not None else None
    enc = encode([r["text"] for r in records], pairs)
    out = {"input_ids": enc["input_ids"]}
    if "token_type_ids" in enc:
        out["token_type_ids"] = enc["token_type_ids"]
    out["label"] = [r["label"] for r in records]
    out["length"] = [len(ids) for ids in enc["input_ids"]]
    return out


def tokenize(records: list[dict], tokenizer, task, max_length: int) -> dict[str, list]:
    """One shard row per record: the text (pair) truncated longest-first to max_length."""
    return tokenize_encoded(records, call_encoder(tokenizer, max_length), task)


def shard_schema(with_token_types: bool) -> pa.Schema:
    return sentence_schema(with_token_types, pa.int32())


def split_stats(table: pa.Table, task) -> dict:
    """label_counts[i] = rows of class i."""
    labels = table.column("label").to_numpy()
    return {"label_counts": [int(c) for c in np.bincount(labels, minlength=task.num_labels)]}


# ---------------------------------------------------------------- train side


def collate(rows: dict[str, list], pad_id: int, task=None) -> dict[str, torch.Tensor]:
    """Shard rows padded to the longest row; labels as class ids [B]."""
    return {**sequence_batch(rows, pad_id), "labels": torch.as_tensor(rows["label"], dtype=torch.long)}

def loss(logits: torch.Tensor, batch: dict, task=None) -> torch.Tensor:
    """Mean cross-entropy over the batch, computed in fp32."""
    return F.cross_entropy(logits.float(), batch["labels"])


def num_predictions(task, batch=None, outputs=None) -> int:
    """n for log(n) scaling: the number of classes."""
    return task.num_labels


def predict(logits: torch.Tensor) -> np.ndarray:
    return logits.argmax(dim=-1).cpu().numpy()


def metrics(predictions: np.ndarray, labels: np.ndarray, task=None) -> dict[str, float]:
    """The task's metrics (default accuracy): `f1` is binary F1 of class 1 (MRPC, QQP convention) or
    macro F1 for more classes; `mcc` is Matthews correlation (CoLA convention)."""
    names = (task.metrics if task is not None and task.metrics else None) or ["accuracy"]
    binary = task is None or task.num_labels == 2
    scorers = {"accuracy": accuracy_score,
               "f1": lambda y, p: f1_score(y, p, average="binary" if binary else "macro", zero_division=0),
               "mcc": matthews_corrcoef}
    return {name: float(scorers[name](labels, predictions)) for name in names}


def evaluate(model, task_id: int, task, split, pad_id: int, batch_size: int, max_rows, device,
             tokenizer=None) -> dict:
    """The task's metrics on (the first `max_rows` rows of) a split."""
    predictions, labels, rows = predict_rows(model, task_id, task, split, pad_id, batch_size, max_rows, device,
                                             collate, lambda outputs, batch: predict(outputs))
    return {**metrics(predictions, labels, task), "rows": rows}


def predictions(model, task_id: int, task, split, pad_id: int, batch_size: int, device, tokenizer=None) -> list[dict]:
    """Per row: the predicted label name, its softmax probability as score, and the gold label name."""
    probs, labels, _ = predict_rows(model, task_id, task, split, pad_id, batch_size, None, device, collate,
                                    lambda outputs, batch: torch.softmax(outputs.float(), dim=-1).cpu().numpy())
    names = task.label_names
    return [{"prediction": names[int(p.argmax())], "score": float(p.max()), "gold": names[int(y)]}
            for p, y in zip(probs, labels)]


# ---------------------------------------------------------------- the family

class ClassificationFamily(Family):
    """A head per dataset (a stacked bank: prefinetune.model.heads), cross-entropy / log(classes)."""

    name = "classification"
    auto_class = "AutoModelForSequenceClassification"          # the stock class of its per-task folders
    head_summary = 'its own head (dense, tanh, dropout, projection) on the first token'
    loss_summary = 'cross-entropy / log(number of classes)'
    roles = (("text", "label"), ("text_pair", "id"))
    targets = TARGETS

    # the module's functions above, one signature for every family (prefinetune/families/family.py)
    # data
    to_record = staticmethod(to_record)
    tokenize = staticmethod(tokenize)
    tokenize_encoded = staticmethod(tokenize_encoded)
    shard_schema = staticmethod(shard_schema)
    split_stats = staticmethod(split_stats)
    # training
    collate = staticmethod(collate)
    loss = staticmethod(loss)
    num_predictions = staticmethod(num_predictions)
    # evaluation
    evaluate = staticmethod(evaluate)
    predictions = staticmethod(predictions)

    def check_task(self, task) -> None:
        if not task.label_names:
            raise ValueError("classification needs label_names (at least 2)")
        if task.num_choices is not None:
            raise ValueError("num_choices is for multiple_choice tasks")

    def num_labels(self, task) -> int:
        return len(task.label_names)

    def build_head(self, tasks, hidden_size, dropout, spectral_norm, shared_dense=False, attention=None):
        labels = [t.num_labels for t in tasks]
        return task_bank_head(labels, hidden_size, dropout, spectral_norm, shared_dense, attention)

    task_bank = True      # a head per dataset, stacked: model.head_dense applies

    def head_outputs(self, head, task, batch, features):
        if task is None:            # another family's batch: cheaply, on the first token (the same graph)
            return head.read(features.first_token(), 0)
        return head.read(features, task.family_index)

    def entropy(self, outputs, batch):
        return softmax_entropy(outputs)


    def task_folder_skipped(self, model_type: str):
        from prefinetune.export.task_models import task_model_support

        return task_model_support(model_type)

    def task_model(self, model, task: dict, head_dropout: float):
        from prefinetune.export.task_models import task_model

        head = model.classification.head_state(task["family_index"])
        return task_model(model.backbone, head, task["label_names"], head_dropout)


FAMILY = register_family(ClassificationFamily())
