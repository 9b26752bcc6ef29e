"""Regression, single sentence or pair (STS-B style): one head per dataset, mean squared error, no log(n).

Records: {"text", "text_pair" (None without a pair column), "label": float}. `text`, and `text_pair`
when the task has a text_pair column, must be non-empty text; `label` must be a finite number (an int,
a float, or a string such as "4.750"). Shard columns: input_ids list<int32>, token_type_ids list<int8>
(when the tokenizer makes them), label float32, length int32.

The model gives one value per row ([B] floats). The loss is the mean squared error in fp32.

n for log(n) scaling: a regression output ranges over no finite set of outcomes, and the MSE has no
chance-level value of log(n) to normalise away, so `num_predictions` returns None, which means "no
scaling": the step uses the loss as it is. Metrics are Pearson and Spearman correlation (the STS-B
convention), NaN where undefined (fewer than 2 rows, or constant predictions or labels).
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from scipy import stats

from prefinetune.families import FieldError
from prefinetune.families.eval_loop import predict_rows
from prefinetune.families.family import Family, register_family
from prefinetune.families.padding import sequence_batch
from prefinetune.families.records import call_encoder, sentence_schema, text_value
from prefinetune.model.task_banks import task_bank_head

__all__ = ["TARGETS", "to_record", "tokenize", "tokenize_encoded", "shard_schema", "split_stats", "collate", "loss",
           "num_predictions", "predict", "metrics", "evaluate"]

TARGETS = ("labels",)


# ---------------------------------------------------------------- records

def _label_value(raw: Any) -> float:
    if raw is None:
        raise FieldError("label", "missing")
    if isinstance(raw, bool) or not isinstance(raw, (numbers.Real, str)):
        raise FieldError("label", f"label {raw!r} is a {type(raw).__name__}, not a number")
    try:
        value = float(raw.strip() if isinstance(raw, str) else raw)
    except ValueError:
        raise FieldError("label", f"label {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise FieldError("label", f"label {raw!r} is not a finite number")
    return value


def to_record(values: dict[str, Any], task) -> dict:
    """Validate one row's raw values into {"text", "text_pair", "label": float}; FieldError if bad."""
    text = text_value(values.get("text"), "text")
    pair = text_value(values.get("text_pair"), "text_pair") if task.columns.text_pair is not None else None
    return {"text": text, "text_pair": pair, "label": _label_value(values.get("label"))}


# ---------------------------------------------------------------- tokenization and shards

def _pairs(records: list[dict]) -> Optional[list[str]]:
    pairs = [r.get("text_pair") for r in records]
    if all(p is None for p in pairs):
        return None
    if any(p is None for p in pairs):
        raise ValueError("records mix rows with and without text_pair")
    return pairs


def tokenize_encoded(records: list[dict], encode, task) -> dict[str, list]:
    """Records -> shard columns (one row per record; pairs are encoded as pairs) by `encode(texts, pairs)`."""
    enc = encode([r["text"] for r in records], _pairs(records))
    columns: dict[str, list] = {"input_ids": list(enc["input_ids"])}
    if "token_type_ids" in enc:
        columns["token_type_ids"] = list(enc["token_type_ids"])
    columns["label"] = [float(r["label"]) for r in records]
    columns["length"] = [len(ids) for ids in columns["input_ids"]]
    return columns


def tokenize(records: list[dict], tokenizer, task, max_length: int) -> dict[str, list]:
    """Records -> shard columns (one row per record; pairs are encoded as pairs)."""
    return tokenize_encoded(records, call_encoder(tokenizer, max_length), task)


def shard_schema(with_token_types: bool) -> pa.Schema:
    return sentence_schema(with_token_types, pa.float32())


def split_stats(table: pa.Table, task) -> dict:
    """label_stats: mean / std (population) / min / max of the labels (None for an empty split)."""
    labels = table.column("label").to_numpy().astype(np.float64)
    if labels.size == 0:
        return {"label_stats": {"mean": None, "std": None, "min": None, "max": None}}
    return {"label_stats": {"mean": float(labels.mean()), "std": float(labels.std()),
                            "min": float(labels.min()), "max": float(labels.max())}}


# ---------------------------------------------------------------- batches and loss

def collate(rows: dict[str, list], pad_id: int, task) -> dict[str, torch.Tensor]:
    """Shard rows padded to the longest row; labels float32 [B]."""
    return {**sequence_batch(rows, pad_id), "labels": torch.as_tensor(rows["label"], dtype=torch.float32)}

def loss(outputs: torch.Tensor, batch: dict, task) -> torch.Tensor:
    """Mean squared error between the outputs [B] (or [B, 1]) and the labels, in fp32."""
    return F.mse_loss(outputs.float().reshape(-1), batch["labels"].float().to(outputs.device))


def num_predictions(task, batch=None, outputs=None) -> None:
    """None: regression has no n, so its loss is not log(n)-scaled (see the module docstring)."""
    return None


def predict(outputs: torch.Tensor) -> np.ndarray:
    return outputs.float().reshape(-1).cpu().numpy()


def _correlation(fn, predictions: np.ndarray, labels: np.ndarray) -> float:
    if len(labels) < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: scipy warns and returns NaN
        return float(fn(predictions, labels)[0])


def metrics(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlation of predictions with labels."""
    return {"pearson": _correlation(stats.pearsonr, predictions, labels),
            "spearman": _correlation(stats.spearmanr, predictions, labels)}


def evaluate(model, task_id: int, task, split, pad_id: int, batch_size: int, max_rows, device,
             tokenizer=None) -> dict:
    """Pearson / Spearman on (the first `max_rows` rows of) a split."""
    predictions, labels, rows = predict_rows(model, task_id, task, split, pad_id, batch_size, max_rows, device,
                                             collate, lambda outputs, batch: predict(outputs))
    return {**metrics(predictions, labels), "rows": rows}


def predictions(model, task_id: int, task, split, pad_id: int, batch_size: int, device, tokenizer=None) -> list[dict]:
    """Per row: the predicted value (no score: one output, no distribution) and the gold value."""
    values, labels, _ = predict_rows(model, task_id, task, split, pad_id, batch_size, None, device, collate,
                                     lambda outputs, batch: predict(outputs))
    return [{"prediction": float(v), "score": None, "gold": float(y)} for v, y in zip(values, labels)]


# ---------------------------------------------------------------- the family

class RegressionFamily(Family):
    """A one-output head per dataset (a stacked bank), mean squared error, not log(n)-scaled."""

    name = "regression"
    auto_class = "AutoModelForSequenceClassification"          # the stock class of its per-task folders
    head_summary = 'its own one-output head on the first token'
    loss_summary = 'mean squared error, not scaled'
    roles = (("text", "label"), ("text_pair", "id"))
    targets = TARGETS
    has_distribution = False

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

    def build_head(self, tasks, hidden_size, dropout, spectral_norm, shared_dense=False, attention=None):
        return task_bank_head([1] * len(tasks), hidden_size, dropout, spectral_norm, shared_dense, attention)

    task_bank = True      # a head per dataset, stacked: model.head_dense applies

    def head_outputs(self, head, task, batch, features):
        if task is None:            # another family's batch: cheaply, on the first token (the same graph)
            return head.read(features.first_token(), 0).squeeze(-1)
        return head.read(features, task.family_index).squeeze(-1)

    def sym_kl(self, clean, noisy, batch):
        """No distribution: the squared difference of the two outputs."""
        return (clean.float() - noisy.float()).pow(2).mean()

    def task_folder_skipped(self, model_type: str):
        from prefinetune.export.task_models import task_model_support

        return task_model_support(model_type)

    def task_model(self, model, task: dict, head_dropout: float):
        """AutoModelForSequenceClassification with one output and problem_type regression."""
        from prefinetune.export.task_models import task_model

        head = model.regression.head_state(task["family_index"])
        return task_model(model.backbone, head, ["score"], head_dropout, kind="regression")



FAMILY = register_family(RegressionFamily())
