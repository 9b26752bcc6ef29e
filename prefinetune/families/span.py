"""Extractive reading comprehension (SQuAD v1.1 style): find the answer as a span of the context.

A record is {id, context, question, answers: [{text, answer_start}, ...]}, every answer found in the
context at its character offset. All span tasks share ONE span head (prefinetune.model.multitask), which
scores every position of the sequence as the answer's start and as its end.

Windows. A context longer than the model takes is cut into overlapping windows, the standard Hugging
Face QA preprocessing: `[CLS] question [SEP] context-part [SEP]`, `truncation="only_second"`,
`max_length=model.max_length`, `stride` tokens of context shared by neighbouring windows. The stride is
`task.doc_stride`, capped at half the context room of the window (max_length - question tokens -
special tokens), so a window always moves on by at least half its context (with a stride as large as
the room the Rust tokenizer panics, and a stride near it would make hundreds of windows); the
recipe default, max_length 128 with doc_stride 128, thus overlaps windows by about half. A question
that leaves no room for context is an error naming the example. One shard row per window. Its
targets are the token positions of the FIRST answer, or (0, 0) (the first token, [CLS]) when that
answer is not wholly inside the window, as Hugging Face does. An example is keyed by its id (string),
or by a hash of its content when it has none, never by its position in a tokenize call.

Shard columns, one row per window:
    input_ids list<int32>, token_type_ids list<int8> (if the tokenizer makes them),
    start_position int32, end_position int32      token targets of the first answer; 0, 0 if outside
    example_id string                              the record's id, or a hash of its content if none
    offsets list<int32>                            flat pairs [s0, e0, s1, e1, ...]: token i covers
                                                   context[s_i:e_i]; -1, -1 for question and specials
    context string                                 the whole context (repeated in each window)
    answers_json string                            JSON list of the gold answers {text, answer_start}
    length int32                                   tokens in the window

n for log(n) scaling: the loss is a softmax over the positions of the padded batch, so n = L, the
padded sequence length of the batch (`outputs[0].shape[-1]`); padding positions hold a large negative
logit and take no probability, so a batch's n may exceed the positions that can win by its padding.

Evaluation: each window's best span (start + end logit, the span inside the context, end >= start, at
most `max_answer_tokens` tokens), the best-scoring window wins for an example; exact match and F1 with
the official SQuAD v1.1 normalisation, maximum over the gold answers, as fractions (0-1).

Windows are cut in prefinetune/families/span_windows.py, answers scored in prefinetune/families/squad_scoring.py.
"""
from __future__ import annotations

import collections
import json
import math
import operator
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F

from prefinetune.families import FieldError
from prefinetune.families.eval_loop import eval_mode
from prefinetune.families.family import Family, register_family, softmax_entropy
from prefinetune.families.padding import sequence_batch
from prefinetune.families.records import has_token_types, text_value
from prefinetune.families.span_windows import (
    answer_positions,
    effective_stride,
    example_key,
    question_lengths,
    tokenize_windows,
    window_room,
)
from prefinetune.families.squad_scoring import (
    best_answer,
    exact_match,
    f1_score,
    normalize_answer,
    postprocess,
    squad_metrics,
)
from prefinetune.losses.r3f import sym_kl
from prefinetune.model.heads import SpanHead

__all__ = [
    "TARGETS", "to_record", "tokenize", "shard_schema", "split_stats", "collate", "loss", "num_predictions",
    "effective_stride", "example_key", "answer_positions", "postprocess", "best_answer",
    "normalize_answer", "exact_match", "f1_score", "squad_metrics", "evaluate",
]

TARGETS = ("start_positions", "end_positions")


# ---------------------------------------------------------------- records

def _offset(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise FieldError("answers", f"answer_start must be an integer, got {value!r:.40}") from None


def _answer_list(value: Any) -> list[tuple[Any, Any]]:
    """(text, answer_start) pairs from a list of {text, answer_start}, the Hugging Face dict of lists
    {"text": [...], "answer_start": [...]}, one {text, answer_start}, or any of these as a JSON string."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise FieldError("answers", f"must be a list of {{text, answer_start}} (or its JSON), "
                                        f"got the string {value!r:.60}") from None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, dict):
        if "text" not in value or "answer_start" not in value:
            raise FieldError("answers", f"needs keys 'text' and 'answer_start', got {sorted(value)}")
        texts, starts = value["text"], value["answer_start"]
        if isinstance(texts, np.ndarray):
            texts = texts.tolist()
        if isinstance(starts, np.ndarray):
            starts = starts.tolist()
        if isinstance(texts, str):
            return [(texts, starts)]
        if not isinstance(texts, (list, tuple)) or not isinstance(starts, (list, tuple)) \
                or len(texts) != len(starts):
            raise FieldError("answers", "'text' and 'answer_start' must be lists of the same length")
        return list(zip(texts, starts))
    if isinstance(value, (list, tuple)) and value and all(isinstance(a, str) for a in value):
        return [(a, None) for a in value]      # answer strings without offsets (DROP, MRQA): located below
    if isinstance(value, (list, tuple)):
        pairs = []
        for a in value:
            if not isinstance(a, dict) or "text" not in a or "answer_start" not in a:
                raise FieldError("answers", f"each answer needs 'text' and 'answer_start', got {a!r:.80}")
            pairs.append((a["text"], a["answer_start"]))
        return pairs
    raise FieldError("answers", f"must be a list of {{text, answer_start}}, got {type(value).__name__}")


def _occurrences(context: str, text: str, limit: int = 5) -> list[int]:
    found, at = [], context.find(text)
    while at >= 0 and len(found) < limit:
        found.append(at)
        at = context.find(text, at + 1)
    return found


def _check_answer(context: str, text: Any, start: Any) -> dict:
    """The answer, its surrounding whitespace trimmed (the offset moved to match), checked in place."""
    if not isinstance(text, str) or not text.strip():
        raise FieldError("answers", f"answer text must be a non-empty string, got {text!r:.60}")
    if start is None:           # no offset given: the answer's first exact occurrence in the context
        start = context.find(text)
        if start < 0:
            raise FieldError("answers", f"answer {text!r:.80} (given without an offset) occurs nowhere in "
                                        "the context")
    start = _offset(start)
    if context[start:start + len(text)] != text or start < 0:
        where = _occurrences(context, text)
        elsewhere = (f"it occurs at offset(s) {where}" if where else "it occurs nowhere in the context")
        there = (f"the context there reads {context[start:start + len(text)]!r:.60}"
                 if 0 <= start < len(context) else f"the context has {len(context)} characters")
        raise FieldError("answers", f"answer {text!r:.80} not found at offset {start} in context "
                                    f"({there}; {elsewhere})")
    lead = len(text) - len(text.lstrip())
    return {"text": text.strip(), "answer_start": start + lead}


def to_record(values: dict[str, Any], task) -> dict:
    """One row -> {id, context, question, answers}. Every answer must sit at its offset in the context
    (answers given as plain strings, without offsets, are placed at their first exact occurrence);
    at least one answer is required (SQuAD v1.1 has no unanswerable questions). The question is stripped
    (leading spaces would waste the window); answers are whitespace-trimmed with the offset moved."""
    context = text_value(values.get("context"), "context")
    question = text_value(values.get("question"), "question").strip()
    answers = [_check_answer(context, t, s) for t, s in _answer_list(values.get("answers"))]
    if not answers:
        raise FieldError("answers", "no answers: every question needs at least one answer in the context")
    raw_id = values.get("id")
    if raw_id is not None and not str(raw_id).strip():
        raise FieldError("id", "empty id")
    return {"id": None if raw_id is None else str(raw_id), "context": context, "question": question,
            "answers": answers}


def tokenize(records: list[dict], tokenizer, task, max_length: int) -> dict[str, list]:
    """Records -> shard columns, one row per window (see the module docstring). Records are tokenized in
    groups that share a stride (the capped doc_stride depends on the question's length)."""
    if not records:
        return {name: [] for name in shard_schema(has_token_types(tokenizer)).names}
    q_lens = question_lengths(records, tokenizer)
    strides = [effective_stride(task.doc_stride, window_room(n, tokenizer, max_length, r))
               for n, r in zip(q_lens, records)]
    windows: list[list[dict]] = [[] for _ in records]
    for stride in sorted(set(strides)):
        group = [i for i, s in enumerate(strides) if s == stride]
        for i, w in zip(group, tokenize_windows([records[i] for i in group], tokenizer, max_length, stride)):
            windows[i] = w
    columns: dict[str, list] = collections.defaultdict(list)
    for record, record_windows in zip(records, windows):
        key, answers = example_key(record), json.dumps(record["answers"], ensure_ascii=False)
        for w in record_windows:
            for name, value in w.items():
                columns[name].append(value)
            columns["example_id"].append(key)
            columns["context"].append(record["context"])
            columns["answers_json"].append(answers)
            columns["length"].append(len(w["input_ids"]))
    names = shard_schema("token_type_ids" in columns).names
    return {name: columns[name] for name in names}


def shard_schema(with_token_types: bool) -> pa.Schema:
    fields = [pa.field("input_ids", pa.list_(pa.int32()))]
    if with_token_types:
        fields.append(pa.field("token_type_ids", pa.list_(pa.int8())))
    return pa.schema(fields + [
        pa.field("start_position", pa.int32()), pa.field("end_position", pa.int32()),
        pa.field("example_id", pa.string()), pa.field("offsets", pa.list_(pa.int32())),
        pa.field("context", pa.string()), pa.field("answers_json", pa.string()),
        pa.field("length", pa.int32()),
    ])


def split_stats(table: pa.Table, task) -> dict:
    """windows, examples, answer_outside_window (windows whose target is (0, 0)) and
    answer_in_no_window (examples no window holds the answer of: it straddles every window edge)."""
    if table.num_rows == 0:
        return {"windows": 0, "examples": 0, "answer_outside_window": 0, "answer_in_no_window": 0}
    per_example = table.group_by("example_id").aggregate([("end_position", "max")])
    return {
        "windows": table.num_rows,
        "examples": per_example.num_rows,
        "answer_outside_window": int(pc.sum(pc.equal(table.column("end_position"), 0)).as_py() or 0),
        "answer_in_no_window": int(pc.sum(pc.equal(per_example.column("end_position_max"), 0)).as_py() or 0),
    }


# ---------------------------------------------------------------- training



def collate(rows: dict[str, list], pad_id: int, task=None) -> dict[str, torch.Tensor]:
    """Windows -> input_ids, attention_mask, token_type_ids (if present) [B, L], start/end_positions [B]."""
    return {**sequence_batch(rows, pad_id),
            "start_positions": torch.as_tensor(rows["start_position"], dtype=torch.long),
            "end_positions": torch.as_tensor(rows["end_position"], dtype=torch.long)}

def loss(outputs, batch: dict, task=None) -> torch.Tensor:
    """(CE(start) + CE(end)) / 2 over the positions, in fp32: the start and end losses averaged, as in
    transformers' *ForQuestionAnswering. Padding positions are masked by the model (large negative)."""
    start_logits, end_logits = outputs
    start = F.cross_entropy(start_logits.float(), batch["start_positions"])
    end = F.cross_entropy(end_logits.float(), batch["end_positions"])
    return (start + end) / 2


def num_predictions(task, batch, outputs) -> int:
    """n for log(n) scaling: the positions the span softmax ranges over, the batch's padded length L."""
    return int(outputs[0].shape[-1])


# ---------------------------------------------------------------- evaluation

def _first_examples(example_ids: list[str], max_rows: Optional[int]) -> tuple[list[str], list[int]]:
    """The first `max_rows` distinct example ids in table order, and the indices of all their windows."""
    order = list(dict.fromkeys(example_ids))
    keep = order if max_rows is None else order[:max_rows]
    chosen = set(keep)
    return keep, [i for i, x in enumerate(example_ids) if x in chosen]


def _window_answers(model, task_id: int, task, split, pad_id: int, batch_size: int, max_rows: Optional[int],
                    device) -> tuple[dict[str, list[tuple[str, float]]], dict[str, list[str]]]:
    """({example id: (answer, score) of each of its windows}, {example id: gold answer texts}) over the
    first `max_rows` examples, in table order. The model's mode is restored afterwards."""
    table = split.table
    examples, indices = _first_examples(table.column("example_id").to_pylist(), max_rows)
    candidates: dict[str, list[tuple[str, float]]] = {key: [] for key in examples}
    golds: dict[str, list[str]] = {}
    with eval_mode(model), torch.no_grad():
        for at in range(0, len(indices), batch_size):
            rows = table.take(pa.array(indices[at:at + batch_size], type=pa.int64())).to_pydict()
            batch = collate(rows, pad_id, task)
            inputs = {k: v.to(device) for k, v in batch.items() if k not in TARGETS}
            start, end = (x.float().cpu().numpy() for x in model(task_id, inputs)["outputs"])
            for i, key in enumerate(rows["example_id"]):
                candidates[key].append(postprocess(start[i], end[i], rows["offsets"][i], rows["context"][i]))
                golds.setdefault(key, [a["text"] for a in json.loads(rows["answers_json"][i])])
    return candidates, golds


def evaluate(model, task_id: int, task, split, pad_id: int, batch_size: int, max_rows: Optional[int],
             device, tokenizer=None) -> dict:
    """Exact match and F1 (0-1) over the first `max_rows` EXAMPLES of the split (all their windows);
    "rows" is the number of examples scored. The model's mode is restored afterwards."""
    candidates, golds = _window_answers(model, task_id, task, split, pad_id, batch_size, max_rows, device)
    answers = [best_answer(found) for found in candidates.values()]
    return {**squad_metrics(answers, [golds[key] for key in candidates]), "rows": len(candidates)}


def predictions(model, task_id: int, task, split, pad_id: int, batch_size: int, device, tokenizer=None) -> list[dict]:
    """Per example (in order of its first window): the answer text `evaluate` scores, its score (start +
    end logit of the best window), and the gold answer texts."""
    candidates, golds = _window_answers(model, task_id, task, split, pad_id, batch_size, None, device)
    out = []
    for key, found in candidates.items():
        score = max((s for _, s in found), default=float("-inf"))
        out.append({"prediction": best_answer(found), "score": score if math.isfinite(score) else None,
                    "gold": golds[key]})
    return out


# ---------------------------------------------------------------- the family

class SpanFamily(Family):
    """ONE span head shared by every extractive task (start, end logits per token), n = positions."""

    name = "span"
    auto_class = "AutoModelForQuestionAnswering"          # the stock class of its per-task folders
    shared_head = True
    head_summary = 'one span head shared by every span task: start and end logits per token'
    loss_summary = '(CE start + CE end) / 2 / log(positions)'
    roles = (("context", "question", "answers"), ("id",))
    target_roles = ("answers",)

    def unlabeled_values(self, values, task) -> dict:
        """A stand-in answer, the context's first character (an unlabeled question is only predicted)."""
        context = values.get("context")
        if not isinstance(context, str) or not context.strip():
            return {"answers": None}
        first = len(context) - len(context.lstrip())
        return {"answers": [{"text": context[first], "answer_start": first}]}
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

    def build_head(self, tasks, hidden_size, dropout, spectral_norm):
        return SpanHead(hidden_size, spectral_norm=spectral_norm)

    def head_outputs(self, head, task, batch, features):
        return head(features.states, features.mask)

    def sym_kl(self, clean, noisy, batch):
        """Start and end distributions, summed."""
        return sym_kl(clean[0], noisy[0]) + sym_kl(clean[1], noisy[1])

    def entropy(self, outputs, batch):
        """The mean of the start and end entropies."""
        return (softmax_entropy(outputs[0]) + softmax_entropy(outputs[1])) / 2

    def task_folder_skipped(self, model_type: str):
        from prefinetune.export.task_models import span_model_support

        return span_model_support(model_type)

    def task_model(self, model, task: dict, head_dropout: float):
        """AutoModelForQuestionAnswering: the shared span head as qa_outputs (R4F's normalisation baked in)."""
        from prefinetune.export.task_models import span_task_model
        from prefinetune.model.heads import spectrally_normalised

        head = model.span
        weight = spectrally_normalised(head.weight) if head.spectral_norm else head.weight
        return span_task_model(model.backbone, weight.detach(), head.bias.detach())



FAMILY = register_family(SpanFamily())
