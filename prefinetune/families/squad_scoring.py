"""SQuAD v1.1 scoring for the span family: a window's best answer span from its start and end logits,
the best window of an example, and exact match / F1 with the official answer normalisation.

    answer = best_answer([postprocess(start, end, offsets, context) for each window])
    squad_metrics([answer, ...], [[gold, ...], ...])      # {"exact_match": ..., "f1": ...} as fractions (0-1)
"""
from __future__ import annotations

import collections
import re
import string
from typing import Iterable, Sequence, Union

import numpy as np

__all__ = ["postprocess", "best_answer", "normalize_answer", "exact_match", "f1_score", "squad_metrics"]

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
    """Mean exact match and F1 over examples, as fractions (0-1), the scale of every metric in this project
    (the SQuAD v1.1 script prints the same numbers times 100)."""
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    em = [exact_match(p, g) for p, g in zip(predictions, golds, strict=True)]
    f1 = [f1_score(p, g) for p, g in zip(predictions, golds, strict=True)]
    return {"exact_match": float(np.mean(em)), "f1": float(np.mean(f1))}


