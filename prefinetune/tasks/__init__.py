"""Task families. Each module holds everything one family needs, as plain module-level functions:

Data side (called by prefinetune/data/readers.py and prefinetune/data/prepare.py):
    to_record(values: dict[str, Any], task) -> dict
        `values` maps each column role of the family (config.FAMILY_ROLES) to the raw value read from
        one row. Validate and normalise it into the family's record; raise
        `prefinetune.tasks.FieldError(role, reason)` for a bad row (the reader adds file and row).
    tokenize(records: list[dict], tokenizer, task, max_length: int) -> dict[str, list]
        A batch of records -> shard columns (lists of equal length). May emit several rows per record
        (span windows). Every family emits `length` (tokens of the longest sequence of the row).
    shard_schema(with_token_types: bool) -> pyarrow.Schema
    split_stats(table: pyarrow.Table, task) -> dict          extra manifest entries for a split

Train side (prefinetune/step.py):
    collate(rows: dict[str, list], pad_id: int, task) -> dict[str, torch.Tensor]
        Shard rows -> one batch. Model inputs are `input_ids`, `attention_mask`, `token_type_ids`
        (when the shards have them), and family extras (multiple choice: rows flattened to
        [B*K, L] plus `num_choices`; summarization: `labels` [B, T] padded with -100).
    TARGETS: tuple[str, ...]        batch keys that are targets, not model inputs
    loss(outputs, batch, task) -> torch.Tensor            the family loss, unscaled, in fp32
    num_predictions(task, batch, outputs) -> int          n for log(n) scaling

Evaluation (prefinetune/evaluate.py):
    evaluate(model, task_id: int, task, split, pad_id: int, batch_size: int, max_rows, device) -> dict
        Metrics of one task on a split (a prefinetune.data.shards.TaskSplit) in the family's
        convention. `model(task_id, batch)["outputs"]` gives the family's outputs (below);
        `model.generate(task_id, batch, max_new_tokens)` greedy-decodes (summarization).

Model outputs by family (prefinetune/model/multitask.py):
    classification [B, C] logits; regression [B] values; multiple_choice [B, K] logits;
    span (start_logits [B, L], end_logits [B, L]) with padding at a large negative value;
    summarization [B, T, V] logits.
"""
from __future__ import annotations

from importlib import import_module
from types import ModuleType

__all__ = ["FieldError", "FAMILY_MODULES", "family_module"]

FAMILY_MODULES = {
    "classification": "prefinetune.tasks.classification",
    "regression": "prefinetune.tasks.regression",
    "multiple_choice": "prefinetune.tasks.multiple_choice",
    "span": "prefinetune.tasks.span",
    "summarization": "prefinetune.tasks.summarization",
}


class FieldError(ValueError):
    """A bad value in one row: `role` names the column role, `reason` says what is wrong."""

    def __init__(self, role: str, reason: str):
        super().__init__(f"{role}: {reason}")
        self.role, self.reason = role, reason


def family_module(family: str) -> ModuleType:
    """The module of a task family."""
    try:
        return import_module(FAMILY_MODULES[family])
    except KeyError:
        raise ValueError(f"unknown task family {family!r}; known: {sorted(FAMILY_MODULES)}") from None
