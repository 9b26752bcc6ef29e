"""Multiple choice (commonsense QA, COPA, ARC, OpenBookQA, ...): one shared ranking head, n = number of choices.

Muppet casts every multiple-choice task as ranking: each (context, choice) pair is one sequence, the
shared head gives it one score, and the K scores of a row are the logits [B, K] of a K-way
cross-entropy. One head serves every multiple-choice task, so tasks with different K share it.

Records: {"text", "text_pair", "choices": list[str], "label": int}.
- `text` (the context, or the question when a dataset has no context) must be non-empty text.
- `text_pair` (optional, e.g. the question after a context) may be missing or empty in a row (SciQ's
  `support` often is): the row then has no pair. The first segment of every sequence is
  `text + " " + text_pair`; the second is the choice.
- `choices` may be a list of strings (one column per choice, or a list column), a list of
  {"text", "label"} objects (ARC), a {"text": [...], "label": [...]} object (CommonsenseQA), or one
  string "(A) first (B) second ..." (OpenBookQA tsv; markers must run A, B, C... or 1, 2, 3...).
  At least 2 choices, none empty, and exactly `task.num_choices` when that is set.
- `label` resolves, in this order: an int is the 0-based index; a string is a choice's own key ("A",
  or "1" in ARC rows keyed 1..4, which is then index 0), else a name in `task.label_names` (its
  index), else the exact text of one choice (SciQ's `correct_answer`), else a string of digits (a
  0-based index). A digit string that is a valid index *and* the text of another choice is
  ambiguous: a bad row, never a guess. With `label_map`, every raw label (ints too) is first looked
  up as a string and replaced by its name. Anything else is a bad row.

Shard rows hold all K sequences of a record: input_ids list<list<int32>> (one list per choice),
token_type_ids list<list<int8>> (when the tokenizer makes them), label, num_choices, length (tokens of
the longest choice sequence). Truncation is "only_first" (the context gives way, the choice is kept
whole); a pair whose choice alone is too long falls back to "longest_first".

Batches: `collate` flattens rows to [B*K, L] with K the largest choice count in the batch. Rows with
fewer choices (only where task.num_choices is None, e.g. ARC) get all-pad dummy sequences, and
`choice_mask` [B, K] is False for them; `loss` and `evaluate` set their scores to a large negative
value, so a padded batch gives exactly the loss and predictions of the unpadded rows. A dummy sequence
attends to its first (pad) token only, so no attention row is fully masked (that can give NaN).

n for log(n) scaling is K, the number of choices of the batch (with padding, the largest).
The choice shapes are read in prefinetune/families/choices.py.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score

from prefinetune.families import FieldError
from prefinetune.families.choices import read_choices
from prefinetune.families.eval_loop import predict_rows
from prefinetune.families.family import Family, register_family, softmax_entropy
from prefinetune.families.records import DIGITS, has_token_types, text_value
from prefinetune.model.heads import HeadBank

__all__ = ["TARGETS", "MASKED_SCORE", "to_record", "tokenize", "shard_schema", "split_stats", "collate",
           "mask_scores", "loss", "num_predictions", "predict", "metrics", "evaluate"]

TARGETS = ("labels",)
MASKED_SCORE = -1e9  # score of a padded choice: exp() of it underflows to 0 next to any real score


# ---------------------------------------------------------------- records

def _optional_text(value: Any, role: str) -> Optional[str]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return text_value(value, role)


def _unique_index(matches: list[int], what: str) -> Optional[int]:
    if len(matches) > 1:
        raise FieldError("label", f"{what} matches choices {matches}; it must name exactly one")
    return matches[0] if matches else None


def _index_in_range(index: int, k: int, raw: Any) -> int:
    if not 0 <= index < k:
        raise FieldError("label", f"label {raw!r} (index {index}) is not among the {k} choices (0..{k - 1})")
    return index


def _label_index(raw: Any, texts: list[str], keys: list[Optional[str]], task) -> int:
    """The 0-based index of the correct choice (resolution order in the module docstring)."""
    k = len(texts)
    if raw is None:
        raise FieldError("label", "missing")
    if isinstance(raw, bool) or not isinstance(raw, (numbers.Integral, str)):
        raise FieldError("label", f"label {raw!r} is a {type(raw).__name__}, not a choice index or key")
    if task.label_map is None and isinstance(raw, numbers.Integral):
        return _index_in_range(int(raw), k, raw)
    name = str(raw).strip()
    if task.label_map is not None:
        if name not in task.label_map:
            raise FieldError("label", f"raw label {name!r} is not a key of label_map {sorted(task.label_map)}")
        name = task.label_map[name]
    by_key = _unique_index([i for i, key in enumerate(keys) if key == name], f"label {name!r}")
    if by_key is not None:
        return by_key
    if task.label_names and name in task.label_names:
        return _index_in_range(task.label_names.index(name), k, raw)
    by_text = _unique_index([i for i, text in enumerate(texts) if text == name], f"label {name!r}")
    if DIGITS.fullmatch(name):
        index = int(name)
        if by_text is not None and index < k and by_text != index:
            raise FieldError("label", f"label {name!r} is ambiguous: index {index}, or the text of choice {by_text}")
        return by_text if by_text is not None else _index_in_range(index, k, raw)
    if by_text is not None:
        return by_text
    named = [key for key in keys if key is not None] or task.label_names or list(range(k))
    raise FieldError("label", f"label {raw!r} is not among the choices (keys {named}, or an index 0..{k - 1})")


def to_record(values: dict[str, Any], task) -> dict:
    """Validate one row's raw values into {"text", "text_pair", "choices", "label"}; FieldError if bad."""
    text = text_value(values.get("text"), "text")
    pair = _optional_text(values.get("text_pair"), "text_pair")
    texts, keys = read_choices(values.get("choices"), task)
    label = _label_index(values.get("label"), texts, keys, task)
    return {"text": text, "text_pair": pair, "choices": texts, "label": label}


# ---------------------------------------------------------------- tokenization and shards

def _first_segment(record: dict) -> str:
    pair = record.get("text_pair")
    return record["text"] if pair is None else f"{record['text']} {pair}"


def _encode_one(tokenizer, first: str, second: str, max_length: int) -> dict:
    try:
        enc = tokenizer(first, second, truncation="only_first", max_length=max_length)
        if len(enc["input_ids"]) <= max_length:
            return enc
    except Exception:  # fast tokenizers raise a bare Exception when only_first cannot reach max_length
        pass
    return tokenizer(first, second, truncation="longest_first", max_length=max_length)


def _encode_pairs(tokenizer, firsts: list[str], seconds: list[str], max_length: int) -> dict[str, list]:
    """Encode pairs truncating only the first segment; pairs where that cannot fit use longest_first."""
    try:
        enc = dict(tokenizer(firsts, seconds, truncation="only_first", max_length=max_length))
    except Exception:
        encs = [_encode_one(tokenizer, a, b, max_length) for a, b in zip(firsts, seconds)]
        return {key: [e[key] for e in encs] for key in encs[0]} if encs else {"input_ids": []}
    for i, ids in enumerate(enc["input_ids"]):  # slow tokenizers only log and leave a pair too long
        if len(ids) > max_length:
            one = _encode_one(tokenizer, firsts[i], seconds[i], max_length)
            for key in enc:
                enc[key][i] = one[key]
    return enc


def tokenize(records: list[dict], tokenizer, task, max_length: int) -> dict[str, list]:
    """Records -> shard columns: one row per record, holding one sequence per choice."""
    with_types = has_token_types(tokenizer)
    firsts = [_first_segment(r) for r in records for _ in r["choices"]]
    seconds = [c for r in records for c in r["choices"]]
    enc = _encode_pairs(tokenizer, firsts, seconds, max_length) if seconds else {}
    columns: dict[str, list] = {"input_ids": []}
    if with_types:
        columns["token_type_ids"] = []
    columns.update(label=[], num_choices=[], length=[])
    start = 0
    for r in records:
        end = start + len(r["choices"])
        ids = enc["input_ids"][start:end]
        columns["input_ids"].append(ids)
        if with_types:
            columns["token_type_ids"].append(enc["token_type_ids"][start:end])
        columns["label"].append(r["label"])
        columns["num_choices"].append(end - start)
        columns["length"].append(max(len(s) for s in ids))
        start = end
    return columns


def shard_schema(with_token_types: bool) -> pa.Schema:
    fields = [pa.field("input_ids", pa.list_(pa.list_(pa.int32())))]
    if with_token_types:
        fields.append(pa.field("token_type_ids", pa.list_(pa.list_(pa.int8()))))
    return pa.schema(fields + [pa.field("label", pa.int32()), pa.field("num_choices", pa.int32()),
                               pa.field("length", pa.int32())])


def split_stats(table: pa.Table, task) -> dict:
    """label_counts[i] = rows whose answer is choice i; choices = {str(K): rows with K choices}."""
    ks = table.column("num_choices").to_numpy().astype(np.int64)
    labels = table.column("label").to_numpy().astype(np.int64)
    width = task.num_choices or (int(ks.max()) if ks.size else 0)
    counts = np.bincount(labels, minlength=width) if labels.size else np.zeros(width, dtype=np.int64)
    values, rows = np.unique(ks, return_counts=True)
    return {"label_counts": [int(c) for c in counts],
            "choices": {str(int(k)): int(n) for k, n in zip(values, rows)}}


# ---------------------------------------------------------------- batches and loss

def collate(rows: dict[str, list], pad_id: int, task) -> dict:
    """Shard rows -> input_ids / attention_mask (/ token_type_ids) [B*K, L], choice_mask [B, K],
    num_choices K (a Python int), labels [B]. Row b's choice c is sequence b*K + c."""
    ids = rows["input_ids"]
    ks = [len(r) for r in ids]
    if task.num_choices is not None and any(k != task.num_choices for k in ks):
        raise ValueError(f"task {task.name!r}: rows with {sorted(set(ks))} choices, num_choices is {task.num_choices}")
    size, k = len(ids), max(ks)
    width = max(len(seq) for r in ids for seq in r)
    input_ids = torch.full((size * k, width), pad_id, dtype=torch.long)
    attention = torch.zeros((size * k, width), dtype=torch.long)
    choice_mask = torch.zeros((size, k), dtype=torch.bool)
    types = torch.zeros_like(input_ids) if "token_type_ids" in rows else None
    for b, row in enumerate(ids):
        choice_mask[b, : len(row)] = True
        for c in range(k):
            i = b * k + c
            if c >= len(row):
                attention[i, 0] = 1  # a dummy: attends to one pad token, masked out by choice_mask
                continue
            input_ids[i, : len(row[c])] = torch.as_tensor(row[c], dtype=torch.long)
            attention[i, : len(row[c])] = 1
            if types is not None:
                seq = rows["token_type_ids"][b][c]
                types[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    batch = {"input_ids": input_ids, "attention_mask": attention}
    if types is not None:
        batch["token_type_ids"] = types
    batch.update(num_choices=k, choice_mask=choice_mask,
                 labels=torch.as_tensor(rows["label"], dtype=torch.long))
    return batch


def mask_scores(outputs: torch.Tensor, choice_mask: torch.Tensor) -> torch.Tensor:
    """fp32 scores [B, K] with padded choices set to MASKED_SCORE (idempotent)."""
    return outputs.float().masked_fill(~choice_mask.to(outputs.device), MASKED_SCORE)


def loss(outputs: torch.Tensor, batch: dict, task) -> torch.Tensor:
    """Mean cross-entropy over the real choices of each row, in fp32."""
    return F.cross_entropy(mask_scores(outputs, batch["choice_mask"]), batch["labels"].to(outputs.device))


def num_predictions(task, batch: dict, outputs=None) -> int:
    """n for log(n) scaling: K, the number of choices of the batch (the largest, with padding)."""
    return int(batch["choice_mask"].shape[1])


def predict(outputs: torch.Tensor, choice_mask: torch.Tensor) -> np.ndarray:
    """Index of the best-scoring real choice of each row."""
    return mask_scores(outputs, choice_mask).argmax(dim=-1).cpu().numpy()


def metrics(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy of the chosen answers (NaN for no rows)."""
    if len(labels) == 0:
        return {"accuracy": math.nan}
    return {"accuracy": float(accuracy_score(labels, predictions))}


def evaluate(model, task_id: int, task, split, pad_id: int, batch_size: int, max_rows, device,
             tokenizer=None) -> dict:
    """Choice accuracy on (the first `max_rows` rows of) a split."""
    predictions, labels, rows = predict_rows(model, task_id, task, split, pad_id, batch_size, max_rows, device,
                                             collate, lambda outputs, batch: predict(outputs, batch["choice_mask"]))
    return {**metrics(predictions, labels), "rows": rows}


def predictions(model, task_id: int, task, split, pad_id: int, batch_size: int, device, tokenizer=None) -> list[dict]:
    """Per row: the chosen choice (its key in label_names where the task has them, else its 0-based
    index), its softmax probability over the row's real choices as score, and the gold choice."""
    best, labels, _ = predict_rows(model, task_id, task, split, pad_id, batch_size, None, device, collate,
                                   lambda outputs, batch: _best_choice(outputs, batch["choice_mask"]))

    def name(index: int):
        return task.label_names[index] if task.label_names and index < len(task.label_names) else index

    return [{"prediction": name(int(i)), "score": float(p), "gold": name(int(y))} for (i, p), y in zip(best, labels)]


def _best_choice(outputs: torch.Tensor, choice_mask: torch.Tensor) -> np.ndarray:
    """[B, 2]: the best real choice of each row and its softmax probability (rows of a batch may have
    fewer choices than another batch's, so only these two leave the batch)."""
    best = torch.softmax(mask_scores(outputs, choice_mask), dim=-1).max(dim=-1)
    return torch.stack([best.indices.double(), best.values.double()], dim=1).cpu().numpy()


# ---------------------------------------------------------------- the family

class MultipleChoiceFamily(Family):
    """ONE ranking head shared by every multiple-choice task; cross-entropy over choices / log(K)."""

    name = "multiple_choice"
    auto_class = "AutoModelForMultipleChoice"          # the stock class of its per-task folders
    shared_head = True
    head_summary = ("one ranking head shared by every multiple-choice task: a score per (context, choice), "
                    "softmax over the choices")
    loss_summary = 'cross-entropy / log(number of choices)'
    roles = (("text", "choices", "label"), ("text_pair", "id"))
    targets = TARGETS

    # the module's functions above, one signature for every family (prefinetune/families/family.py)
    # data
    to_record = staticmethod(to_record)
    tokenize = staticmethod(tokenize)
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
        if task.metrics is not None:
            raise ValueError("metrics chooses among classification metrics; other families have fixed ones")

    def build_head(self, tasks, hidden_size, dropout, spectral_norm):
        return HeadBank(hidden_size, [1], dropout, spectral_norm=spectral_norm)

    def head_outputs(self, head, task, batch, features):
        scores = head(features.pooled, 0).squeeze(-1)
        if task is None:
            return scores
        scores = scores.view(-1, int(batch["num_choices"]))
        return scores.masked_fill(~batch["choice_mask"], torch.finfo(scores.dtype).min / 2)

    def entropy(self, outputs, batch):
        return softmax_entropy(mask_scores(outputs, batch["choice_mask"]))

    def task_folder_skipped(self, model_type: str):
        from prefinetune.export.task_models import choice_model_support

        return choice_model_support(model_type)

    def task_model(self, model, task: dict, head_dropout: float):
        """AutoModelForMultipleChoice: the shared ranking head as pooler + classifier."""
        from prefinetune.export.task_models import task_model

        return task_model(model.backbone, model.multiple_choice.head_state(0), ["score"], head_dropout, kind="choice")



FAMILY = register_family(MultipleChoiceFamily())
