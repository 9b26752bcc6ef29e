"""Task families: each module holds one family's collate, loss, n for log(n) scaling and metrics."""
from __future__ import annotations

from types import ModuleType

from prefinetune.tasks import classification

__all__ = ["FAMILIES", "family_module"]

FAMILIES: dict[str, ModuleType] = {"classification": classification}


def family_module(family: str) -> ModuleType:
    try:
        return FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown task family {family!r}; known: {sorted(FAMILIES)}") from None
