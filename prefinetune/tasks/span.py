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
the official SQuAD v1.1 normalisation, maximum over the gold answers, as percentages.
"""
from __future__ import annotations

import collections
import hashlib
import json
import operator
import re
import string
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F

from prefinetune.losses.r3f import sym_kl
from prefinetune.model.heads import SpanHead
from prefinetune.tasks import FieldError
from prefinetune.tasks.eval_loop import eval_mode
from prefinetune.tasks.family import Family, register_family, softmax_entropy
from prefinetune.tasks.padding import sequence_batch
from prefinetune.tasks.records import has_token_types, text_value

__all__ = [
    "TARGETS", "to_record", "tokenize", "shard_schema", "split_stats", "collate", "loss", "num_predictions",
    "effective_stride", "example_key", "answer_positions", "postprocess", "best_answer",
    "normalize_answer", "exact_match", "f1_score", "squad_metrics", "evaluate",
]

TARGETS = ("start_positions", "end_positions")
NO_OFFSET = (-1, -1)


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


def example_key(record: dict) -> str:
    """The record's id, or, without one, a hash of its question, context and answers (stable across
    batches, processes and runs, unlike its position in a tokenize call)."""
    if record.get("id") is not None:
        return str(record["id"])
    content = json.dumps([record["question"], record["context"], record["answers"]], ensure_ascii=False)
    return "sha256:" + hashlib.sha256(content.encode("utf-8")).hexdigest()[:24]


# ---------------------------------------------------------------- windows

def effective_stride(doc_stride: int, room: int) -> int:
    """The overlap used for a window with `room` context tokens: doc_stride, at most room // 2."""
    return max(0, min(doc_stride, room // 2))


def answer_positions(offsets: Sequence[int], answer: Optional[dict]) -> tuple[int, int]:
    """Token (start, end) of `answer` in a window whose offsets are flat pairs [s0, e0, s1, e1, ...]
    (context tokens: char start and end; others -1, -1); (0, 0) when there is no answer or it is not
    wholly inside the window's context."""
    if not answer:
        return 0, 0
    start_char = answer["answer_start"]
    end_char = start_char + len(answer["text"])
    starts, ends = offsets[0::2], offsets[1::2]
    ctx = [i for i, s in enumerate(starts) if s >= 0]
    if not ctx or starts[ctx[0]] > start_char or ends[ctx[-1]] < end_char:
        return 0, 0
    start = max(i for i in ctx if starts[i] <= start_char)
    end = min(i for i in ctx if ends[i] >= end_char)
    return start, max(start, end)


def _flat_offsets(offsets: Sequence[tuple[int, int]], sequence_ids: Sequence[Optional[int]]) -> list[int]:
    """Flat [s0, e0, s1, e1, ...] char offsets of the context tokens (sequence 1), -1, -1 elsewhere.
    Flat, not a list of pairs: a list per token costs ten times more to build (GC)."""
    out: list[int] = []
    for (s, e), seq in zip(offsets, sequence_ids):
        out += (s, e) if seq == 1 else NO_OFFSET
    return out


def _room(question_tokens: int, tokenizer, max_length: int, record: dict) -> int:
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    room = max_length - question_tokens - specials
    if room < 1:
        raise FieldError("question", f"example {example_key(record)}: the question takes {question_tokens} "
                                     f"tokens; with {specials} special tokens that leaves no room for the "
                                     f"context in model.max_length={max_length}")
    return room


def _windows(records: list[dict], tokenizer, max_length: int, stride: int) -> list[list[dict]]:
    """Tokenize records that share one stride; the windows of each record, in order."""
    enc = tokenizer([r["question"] for r in records], [r["context"] for r in records],
                    truncation="only_second", max_length=max_length, stride=stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True)
    out: list[list[dict]] = [[] for _ in records]
    for w, owner in enumerate(enc["overflow_to_sample_mapping"]):
        record = records[owner]
        offsets = _flat_offsets(enc["offset_mapping"][w], enc.sequence_ids(w))
        start, end = answer_positions(offsets, record["answers"][0] if record["answers"] else None)
        window = {"input_ids": enc["input_ids"][w], "start_position": start, "end_position": end,
                  "offsets": offsets}
        if "token_type_ids" in enc:
            window["token_type_ids"] = enc["token_type_ids"][w]
        out[owner].append(window)
    return out


def _question_lengths(records: list[dict], tokenizer) -> list[int]:
    encoded = tokenizer([r["question"] for r in records], add_special_tokens=False)["input_ids"]
    return [len(ids) for ids in encoded]


def tokenize(records: list[dict], tokenizer, task, max_length: int) -> dict[str, list]:
    """Records -> shard columns, one row per window (see the module docstring). Records are tokenized in
    groups that share a stride (the capped doc_stride depends on the question's length)."""
    if not records:
        return {name: [] for name in shard_schema(has_token_types(tokenizer)).names}
    q_lens = _question_lengths(records, tokenizer)
    strides = [effective_stride(task.doc_stride, _room(n, tokenizer, max_length, r))
               for n, r in zip(q_lens, records)]
    windows: list[list[dict]] = [[] for _ in records]
    for stride in sorted(set(strides)):
        group = [i for i, s in enumerate(strides) if s == stride]
        for i, w in zip(group, _windows([records[i] for i in group], tokenizer, max_length, stride)):
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


# ---------------------------------------------------------------- predictions

def postprocess(start_logits, end_logits, offsets, context: str, n_best: int = 20,
                max_answer_tokens: int = 30) -> tuple[str, float]:
    """The best span of one window and its score (start + end logit): among the `n_best` highest start
    and end logits of context tokens, end >= start, at most `max_answer_tokens` tokens. ("", -inf) if
    none. `offsets`: flat pairs as in the shards, or [L, 2]. Logits may be longer than the offsets
    (batch padding); positions past them are ignored."""
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    n = len(offsets)
    start_logits = np.asarray(start_logits, dtype=np.float64)[:n]
    end_logits = np.asarray(end_logits, dtype=np.float64)[:n]
    in_context = np.flatnonzero(offsets[:, 0] >= 0)
    if in_context.size == 0:
        return "", float("-inf")
    starts = in_context[np.argsort(-start_logits[in_context], kind="stable")[:n_best]]
    ends = in_context[np.argsort(-end_logits[in_context], kind="stable")[:n_best]]
    s, e = starts[:, None], ends[None, :]
    scores = start_logits[s] + end_logits[e]
    valid = (e >= s) & (e - s + 1 <= max_answer_tokens)
    if not valid.any():
        return "", float("-inf")
    best = np.argmax(np.where(valid, scores, -np.inf))
    i, j = np.unravel_index(best, scores.shape)
    first, last = int(starts[i]), int(ends[j])
    return context[offsets[first, 0]:offsets[last, 1]], float(scores[i, j])


def best_answer(candidates: Iterable[tuple[str, float]]) -> str:
    """The text of the best-scoring (text, score) candidate: the windows of one example combined."""
    best_text, best_score = "", float("-inf")
    for text, score in candidates:
        if score > best_score:
            best_text, best_score = text, score
    return best_text


# ---------------------------------------------------------------- SQuAD v1.1 metrics

_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """The official SQuAD v1.1 normalisation: lower case, drop punctuation, articles and extra space."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _golds(gold: Union[str, Sequence[str]]) -> list[str]:
    return [gold] if isinstance(gold, str) else list(gold)


def _f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: Union[str, Sequence[str]]) -> float:
    """1.0 if the normalised prediction equals a normalised gold answer, else 0.0 (max over golds)."""
    return max((float(normalize_answer(prediction) == normalize_answer(g)) for g in _golds(gold)), default=0.0)


def f1_score(prediction: str, gold: Union[str, Sequence[str]]) -> float:
    """Token-overlap F1 of the normalised strings (bag of tokens), max over gold answers, in [0, 1]."""
    return max((_f1(prediction, g) for g in _golds(gold)), default=0.0)


def squad_metrics(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean exact match and F1 over examples, as percentages (0-100), the SQuAD v1.1 convention."""
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    em = [exact_match(p, g) for p, g in zip(predictions, golds, strict=True)]
    f1 = [f1_score(p, g) for p, g in zip(predictions, golds, strict=True)]
    return {"exact_match": 100.0 * float(np.mean(em)), "f1": 100.0 * float(np.mean(f1))}


# ---------------------------------------------------------------- evaluation

def _first_examples(example_ids: list[str], max_rows: Optional[int]) -> tuple[list[str], list[int]]:
    """The first `max_rows` distinct example ids in table order, and the indices of all their windows."""
    order = list(dict.fromkeys(example_ids))
    keep = order if max_rows is None else order[:max_rows]
    chosen = set(keep)
    return keep, [i for i, x in enumerate(example_ids) if x in chosen]


def evaluate(model, task_id: int, task, split, pad_id: int, batch_size: int, max_rows: Optional[int],
             device) -> dict:
    """Exact match and F1 (0-100) over the first `max_rows` EXAMPLES of the split (all their windows);
    "rows" is the number of examples scored. The model's mode is restored afterwards."""
    table = split.table
    examples, indices = _first_examples(table.column("example_id").to_pylist(), max_rows)
    candidates: dict[str, list[tuple[str, float]]] = collections.defaultdict(list)
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
    predictions = [best_answer(candidates[key]) for key in examples]
    return {**squad_metrics(predictions, [golds[key] for key in examples]), "rows": len(examples)}


# ---------------------------------------------------------------- the family

class SpanFamily(Family):
    """ONE span head shared by every extractive task (start, end logits per token), n = positions."""

    name = "span"
    roles = (("context", "question", "answers"), ("id",))
    targets = TARGETS
    to_record = staticmethod(to_record)
    tokenize = staticmethod(tokenize)
    shard_schema = staticmethod(shard_schema)
    split_stats = staticmethod(split_stats)
    collate = staticmethod(collate)
    loss = staticmethod(loss)
    num_predictions = staticmethod(num_predictions)

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

    def evaluate(self, model, task_id, task, split, pad_id, batch_size, max_rows, device, tokenizer=None):
        return evaluate(model, task_id, task, split, pad_id, batch_size, max_rows, device)


FAMILY = register_family(SpanFamily())
