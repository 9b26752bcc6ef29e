"""Record and shard pieces shared by the families: checking a text value, reading digits, probing a
tokenizer for token types, and the shard schema of one tokenized (pair of) text(s) with a label."""
from __future__ import annotations

import re
from typing import Any

import pyarrow as pa

from prefinetune.families import FieldError

__all__ = ["DIGITS", "text_value", "has_token_types", "call_encoder", "sentence_schema"]

DIGITS = re.compile(r"[0-9]+")     # a label or choice key given as a string of digits


def text_value(value: Any, role: str) -> str:
    """A non-empty string; several columns for one role (a list) are each checked and joined by a space."""
    if isinstance(value, list):
        return " ".join(text_value(part, f"{role}[{i}]") for i, part in enumerate(value))
    if value is None:
        raise FieldError(role, "missing")
    if not isinstance(value, str):
        raise FieldError(role, f"expected a string, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise FieldError(role, "empty text")
    return value


def has_token_types(tokenizer) -> bool:
    """Whether the tokenizer makes token_type_ids (BERT does, RoBERTa / BART do not)."""
    return "token_type_ids" in tokenizer("a", "b")


def call_encoder(tokenizer, max_length: int):
    """encode(texts, pairs or None) -> tokenizer(texts, pairs, truncation=True, max_length=max_length): the
    call that a family's `tokenize_encoded` makes, and that prefinetune.data.threaded_encode matches."""
    def encode(texts: list[str], pairs=None):
        if not texts:              # the call itself fails on an empty batch
            return {"input_ids": [], **({"token_type_ids": []} if has_token_types(tokenizer) else {})}
        return tokenizer(texts, pairs, truncation=True, max_length=max_length)
    return encode


def sentence_schema(with_token_types: bool, label_type: pa.DataType) -> pa.Schema:
    """input_ids, token_type_ids (if the tokenizer makes them), label, length."""
    fields = [pa.field("input_ids", pa.list_(pa.int32()))]
    if with_token_types:
        fields.append(pa.field("token_type_ids", pa.list_(pa.int8())))
    return pa.schema(fields + [pa.field("label", label_type), pa.field("length", pa.int32())])
