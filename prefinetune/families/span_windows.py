"""The span family's windows: a context too long for the model is cut into overlapping windows of
`[CLS] question [SEP] context-part [SEP]`, each with the token positions of the first answer (rules in
prefinetune/families/span.py's docstring).

    windows = tokenize_windows(records, tokenizer, max_length, stride)   # per record, its windows
"""
from __future__ import annotations

import hashlib
import json
from typing import Optional, Sequence

from prefinetune.families import FieldError

__all__ = ["NO_OFFSET", "example_key", "effective_stride", "answer_positions", "window_room", "tokenize_windows",
           "question_lengths"]

NO_OFFSET = (-1, -1)


def example_key(record: dict) -> str:
    """The record's id, or, without one, a hash of its question, context and answers (stable across
    batches, processes and runs, unlike its position in a tokenize call)."""
    if record.get("id") is not None:
        return str(record["id"])
    content = json.dumps([record["question"], record["context"], record["answers"]], ensure_ascii=False)
    return "sha256:" + hashlib.sha256(content.encode("utf-8")).hexdigest()[:24]


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


def window_room(question_tokens: int, tokenizer, max_length: int, record: dict) -> int:
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    room = max_length - question_tokens - specials
    if room < 1:
        raise FieldError("question", f"example {example_key(record)}: the question takes {question_tokens} "
                                     f"tokens; with {specials} special tokens that leaves no room for the "
                                     f"context in model.max_length={max_length}")
    return room


def tokenize_windows(records: list[dict], tokenizer, max_length: int, stride: int) -> list[list[dict]]:
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


def question_lengths(records: list[dict], tokenizer) -> list[int]:
    encoded = tokenizer([r["question"] for r in records], add_special_tokens=False)["input_ids"]
    return [len(ids) for ids in encoded]
