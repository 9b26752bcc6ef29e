"""Encode texts (or text pairs) with a fast tokenizer's Rust backend, in threads, for data prep.

`ThreadedEncoder(tokenizer, max_length, threads)(texts, pairs)` gives the input_ids (and token_type_ids,
where the tokenizer makes them) that `tokenizer(texts, pairs, truncation=True, max_length=max_length)`
gives, row for row (tests/data/test_threaded_encode.py checks that on BERT, RoBERTa and BART tokenizers):

- it calls the backend that call ends in (`tokenizer.backend_tokenizer`, truncation longest_first on the
  tokenizer's side, no padding, special tokens added), minus the per-row Python conversion to a
  BatchEncoding, which costs about a third of the call;
- the Rust encoding releases the GIL, so `threads` threads, each with a copy of the backend, use that
  many cores in one process: no forked workers, no records pickled to them, and no Rust thread pool
  (TOKENIZERS_PARALLELISM stays off, so later forks are safe).

Families whose every sequence is such a call (classification, regression) tokenize through it
(`Family.tokenize_encoded`); `prefinetune.data.prepare` picks it where `available(tokenizer)`.

    with ThreadedEncoder(tokenizer, 128, threads=2) as encode:
        ids = encode(["a film", "dull"], None)["input_ids"]    # == tokenizer([...], truncation=True, max_length=128)
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from prefinetune.tasks.records import has_token_types

__all__ = ["ThreadedEncoder", "available", "CHUNK_ROWS"]

CHUNK_ROWS = 2000      # rows per backend call: large enough to amortise the call, small enough to share out


def available(tokenizer) -> bool:
    """Whether `tokenizer` is a fast (Rust-backed) tokenizer whose backend can be copied."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return bool(getattr(tokenizer, "is_fast", False)) and backend is not None and hasattr(backend, "to_str")


def _backend_copy(tokenizer, max_length: int):
    """A copy of the tokenizer's backend set up as the HF call sets it (the tokenizer itself is untouched)."""
    source = tokenizer.backend_tokenizer
    backend = type(source).from_str(source.to_str())
    backend.enable_truncation(max_length, stride=0, strategy="longest_first", direction=tokenizer.truncation_side)
    backend.no_padding()
    backend.encode_special_tokens = bool(getattr(tokenizer, "split_special_tokens", False))
    return backend


class ThreadedEncoder:
    """Callable (texts, pairs or None) -> {"input_ids": [...], "token_type_ids": [...] (if made)}; a context
    manager that keeps its threads (and their backend copies) for every call until it closes."""

    def __init__(self, tokenizer, max_length: int, threads: int = 1):
        if not available(tokenizer):
            raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer; tokenize with it directly")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, not {threads}")
        self.tokenizer, self.max_length, self.threads = tokenizer, max_length, threads
        self.with_types = has_token_types(tokenizer)
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="encode") if threads > 1 else None

    def __enter__(self) -> "ThreadedEncoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _encode(self, inputs: list) -> tuple[list, Optional[list]]:
        backend = getattr(self._local, "backend", None)
        if backend is None:
            backend = self._local.backend = _backend_copy(self.tokenizer, self.max_length)
        encodings = backend.encode_batch_fast(inputs, add_special_tokens=True)
        ids = [e.ids for e in encodings]
        return ids, [e.type_ids for e in encodings] if self.with_types else None

    def __call__(self, texts: list[str], pairs: Optional[list[str]] = None) -> dict[str, list]:
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        chunks = [inputs[i:i + CHUNK_ROWS] for i in range(0, len(inputs), CHUNK_ROWS)]
        parts = list(map(self._encode, chunks) if self._pool is None or len(chunks) < 2
                     else self._pool.map(self._encode, chunks))
        out = {"input_ids": [row for ids, _ in parts for row in ids]}
        if self.with_types:
            out["token_type_ids"] = [row for _, types in parts for row in types]
        return out

