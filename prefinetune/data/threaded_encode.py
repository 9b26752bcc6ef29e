"""Encode texts (or text pairs) with a fast tokenizer's Rust backend, in threads, for data prep.

`ThreadedEncoder(tokenizer, max_length, threads)(texts, pairs)` gives the input_ids (and token_type_ids,
where the tokenizer makes them) that `tokenizer(texts, pairs, truncation=True, max_length=max_length)`
gives, row for row (tests/data/test_threaded_encode.py checks that on WordPiece, as BERT's, and byte-level BPE,
as RoBERTa's and BART's, with truncation on either side, added tokens and split special tokens):

- it calls the backend that call ends in (`tokenizer.backend_tokenizer`, truncation longest_first on the
  tokenizer's side, no padding, special tokens added), minus the per-row Python conversion to a
  BatchEncoding, which costs about a third of the call;
- the Rust encoding releases the GIL, so `threads` threads, each with a copy of the backend, use that
  many cores in one process: no forked workers and no records pickled to them. prepare_tasks sets
  TOKENIZERS_PARALLELISM=false (unless set) when data.num_proc > 1, so these threads are the only
  parallelism and no Rust thread pool is left behind for a later fork.

Only a tokenizer whose call is transformers' own is taken (`available`): a class that overrides it
(LUKE, LayoutLM, remote code...) may do more than the backend does, and keeps the call itself.

Families whose every sequence is such a call (classification, regression) tokenize through it
(`Family.tokenize_encoded`); `prefinetune.data.prepare` picks it where `available(tokenizer)`.

    with ThreadedEncoder(tokenizer, 128, threads=2) as encode:
        ids = encode(["a film", "dull"], None)["input_ids"]    # == tokenizer([...], truncation=True, max_length=128)
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

__all__ = ["ThreadedEncoder", "available", "CHUNK_ROWS"]

CHUNK_ROWS = 2000      # rows per backend call: large enough to amortise the call, small enough to share out


_CALL_METHODS = ("__call__", "_call_one", "_encode_plus", "_batch_encode_plus", "encode_plus", "batch_encode_plus")


def available(tokenizer) -> bool:
    """Whether `tokenizer` is a fast (Rust-backed) tokenizer whose call is transformers' own (no class on
    the way overrides it), with a backend that can be copied and batch-encoded."""
    from transformers import PreTrainedTokenizerFast

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not isinstance(tokenizer, PreTrainedTokenizerFast) or not hasattr(backend, "encode_batch_fast"):
        return False
    return all(getattr(type(tokenizer), name, None) is getattr(PreTrainedTokenizerFast, name, None)
               for name in _CALL_METHODS)


def _backend_copy(spec: str, tokenizer, max_length: int):
    """A backend built from `spec` (the tokenizer's, serialised) set up as the HF call sets it."""
    backend = type(tokenizer.backend_tokenizer).from_str(spec)
    backend.enable_truncation(max_length, stride=0, strategy="longest_first", direction=tokenizer.truncation_side)
    backend.no_padding()
    backend.encode_special_tokens = bool(getattr(tokenizer, "split_special_tokens", False))
    return backend


class ThreadedEncoder:
    """Callable (texts, pairs or None) -> {"input_ids": [...], "token_type_ids": [...] (if made)}; a context
    manager that keeps its threads (and their backend copies) for every call until it closes."""

    def __init__(self, tokenizer, max_length: int, threads: int = 1):
        if not available(tokenizer):
            raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer with transformers' own call; "
                             "tokenize with the tokenizer itself")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, not {threads}")
        self.tokenizer, self.max_length, self.threads = tokenizer, max_length, threads
        self.with_types = "token_type_ids" in tokenizer.model_input_names     # as the HF call decides
        getattr(tokenizer, "_switch_to_input_mode", lambda: None)()           # as the HF call does first
        self._spec = tokenizer.backend_tokenizer.to_str()                      # read once, copied per thread
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
            backend = self._local.backend = _backend_copy(self._spec, self.tokenizer, self.max_length)
        encodings = backend.encode_batch_fast(inputs, add_special_tokens=True)
        ids = [e.ids for e in encodings]
        return ids, [e.type_ids for e in encodings] if self.with_types else None

    def __call__(self, texts: list[str], pairs: Optional[list[str]] = None) -> dict[str, list]:
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        size = max(1, min(CHUNK_ROWS, -(-len(inputs) // self.threads)))     # every thread gets a share
        chunks = [inputs[i:i + size] for i in range(0, len(inputs), size)]
        parts = list(map(self._encode, chunks) if self._pool is None or len(chunks) < 2
                     else self._pool.map(self._encode, chunks))
        out = {"input_ids": [row for ids, _ in parts for row in ids]}
        if self.with_types:
            out["token_type_ids"] = [row for _, types in parts for row in types]
        return out
