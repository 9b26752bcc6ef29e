"""Reading a multiple-choice row's choices in the shapes datasets give them: a list of strings, a list
of {"text", "label"} objects (ARC), a {"text": [...], "label": [...]} object (CommonsenseQA), or one
string with markers "(A) .. (B) .." (OpenBookQA) or "a ) .. , b ) .." (MathQA); rules in
prefinetune/families/multiple_choice.py's docstring.

    texts, keys = read_choices(value, task)     # keys: each choice's own key ("A", "1") or None
"""
from __future__ import annotations

import re
from typing import Any, Optional

from prefinetune.families import FieldError

__all__ = ["read_choices"]

_MARKER = re.compile(r"\(([A-Za-z]|[0-9]+)\)\s*")
_MATHQA_MARKER = re.compile(r"(?:^|\s*,\s*)([a-z])\s?\)\s*")   # MathQA: "a ) 38 , b ) 27.675 , ..."


def _next_key(key: str) -> str:
    return str(int(key) + 1) if key.isdigit() else chr(ord(key) + 1)


def _marker_cuts(value: str, marker: re.Pattern) -> list[tuple[int, int, str]]:
    """Where `marker` matches in sequence (A, B, C... or 1, 2, 3...), the first at the start."""
    cuts: list[tuple[int, int, str]] = []
    for m in marker.finditer(value):
        expected = _next_key(cuts[-1][2]) if cuts else None
        if (not cuts and m.start() == len(value) - len(value.lstrip())) or m.group(1) == expected:
            cuts.append((m.start(), m.end(), m.group(1)))
    return cuts


def _split_marked(value: str) -> tuple[list[str], list[str]]:
    """'(A) x (B) y' -> (["x", "y"], ["A", "B"]), or MathQA's 'a ) x , b ) y' -> (["x", "y"], ["a", "b"]);
    markers count only in sequence A, B, C... or 1, 2, 3..., so a ')' inside an option does not split it."""
    cuts = _marker_cuts(value, _MARKER)
    if len(cuts) < 2:
        cuts = _marker_cuts(value, _MATHQA_MARKER)
    if len(cuts) < 2:
        raise FieldError("choices", f"a single string without '(A) ... (B) ...' or 'a ) ... , b ) ...' "
                                    f"markers: {value!r}")
    ends = [c[0] for c in cuts[1:]] + [len(value)]
    return [value[c[1]:end].strip() for c, end in zip(cuts, ends)], [c[2] for c in cuts]


def _raw_choices(value: Any) -> tuple[list[Any], list[Optional[str]]]:
    """The choice texts (unchecked) and their own keys (None where a choice has none)."""
    if isinstance(value, str):
        return _split_marked(value)
    if isinstance(value, dict):
        if "text" not in value:
            raise FieldError("choices", f"an object without a 'text' list: keys {sorted(value)}")
        texts, keys = value["text"], value.get("label")
        if not isinstance(texts, (list, tuple)) or (keys is not None and (
                not isinstance(keys, (list, tuple)) or len(keys) != len(texts))):
            raise FieldError("choices", "'text' must be a list, and 'label' (if given) a list as long")
        return list(texts), [None if k is None else str(k) for k in (keys or [None] * len(texts))]
    if not isinstance(value, (list, tuple)):
        raise FieldError("choices", f"expected a list of choices, got {type(value).__name__} {value!r}")
    texts, keys = [], []
    for item in value:
        if isinstance(item, dict):
            texts.append(item.get("text"))
            keys.append(None if item.get("label") is None else str(item["label"]))
        else:
            texts.append(item)
            keys.append(None)
    return texts, keys


def read_choices(value: Any, task) -> tuple[list[str], list[Optional[str]]]:
    if value is None:
        raise FieldError("choices", "missing")
    texts, keys = _raw_choices(value)
    if task.num_choices is not None and len(texts) != task.num_choices:
        raise FieldError("choices", f"expected {task.num_choices} choices (num_choices), got {len(texts)}")
    if len(texts) < 2:
        raise FieldError("choices", f"got {len(texts)} choice(s); multiple choice needs at least 2")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise FieldError("choices", f"choice {i} is a {type(text).__name__} ({text!r}), not text")
        if not text.strip():
            raise FieldError("choices", f"choice {i} is empty")
    return texts, keys
