"""Task families. Each family is one object, a `prefinetune.families.family.Family`, that owns everything
family-specific; the core asks it and never branches on a family's name:

    from prefinetune.families.family import get_family
    family = get_family(task.family)
    family.to_record(values, task); family.tokenize(records, tokenizer, task, max_length)   # data
    family.build_head(tasks, hidden, dropout, spectral_norm); family.head_outputs(...)       # model
    family.collate(rows, pad_id, task); family.loss(outputs, batch, task)                   # train
    family.num_predictions(task, batch, outputs)       # n for log(n) scaling (None: not scaled)
    family.sym_kl(clean, noisy, batch); family.entropy(outputs, batch)  # R3F, MT-Uncertainty
    family.evaluate(model, task_id, task, split, pad_id, batch_size, max_rows, device, tokenizer)

Built in, one module each (its functions, then its Family class at the end, whose body lists every
part it gives: the module's functions as static methods, the rest written there): classification,
regression, multiple_choice, span (+ span_windows, squad_scoring), summarization, tagging. `Family` is
made of five parts a reader can hold: FamilyData, FamilyHead, FamilyLoss, FamilyEvaluation and
FamilyExport (prefinetune/families/family.py). A new family is one module: subclass Family, fill in its
methods, `register_family(MyFamily())`, and add catalog entries for its datasets.
tests/distributed/test_toy_family.py defines one in a test file alone and trains it under ZeRO-2 parity.

`family_module(name)` gives a built-in family's module (its free functions, for tests and tools).
"""
from __future__ import annotations

from importlib import import_module
from types import ModuleType

__all__ = ["FieldError", "family_module"]


class FieldError(ValueError):
    """A bad value in one row: `role` names the column role, `reason` says what is wrong."""

    def __init__(self, role: str, reason: str):
        super().__init__(f"{role}: {reason}")
        self.role, self.reason = role, reason


def family_module(family: str) -> ModuleType:
    """The module of a built-in task family."""
    from prefinetune.families.family import BUILT_IN

    if family not in BUILT_IN:
        raise ValueError(f"unknown built-in task family {family!r}; known: {list(BUILT_IN)}")
    return import_module(f"prefinetune.families.{family}")
