"""Memory-mapped readers for the Arrow shards and manifest written by `prefinetune.data.prepare`.

    from prefinetune.data.shards import read_manifest, open_split
    split = open_split("runs/prefinetune/shards", "cola", "train")
    batch = split.take([0, 5, 7])      # {"input_ids": [[...], ...], "label": [...], "length": [...], ...}
    split.labels                       # numpy int32 array, one label id per row (families with a label)
    split.family, split.columns        # "classification", the family's shard columns

Shards are opened with `pa.memory_map`, so opening a split reads no row data until it is used, and
every worker on a machine shares the page cache.
"""
from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pyarrow as pa

__all__ = ["MANIFEST_NAME", "ShardError", "UnknownSplitError", "TaskSplit", "read_manifest", "open_split",
           "sha256_file"]

MANIFEST_NAME = "manifest.json"


def sha256_file(path: Union[str, Path]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ShardError(RuntimeError):
    """Shards that do not match their manifest (missing file, wrong row count, wrong sha256)."""


class UnknownSplitError(KeyError):
    """A task or split the manifest does not hold; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


def read_manifest(shards_dir: Union[str, Path]) -> dict:
    """The manifest.json of a prepared shards folder."""
    path = Path(shards_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"no {MANIFEST_NAME} in {shards_dir}: prepare the shards first "
            "(python data_prep/prepare.py --recipe RECIPE)")
    return json.loads(path.read_text(encoding="utf-8"))


class TaskSplit:
    """One task split: a pyarrow Table over the memory-mapped shards, plus its manifest entry."""

    def __init__(self, task: str, split: str, table: pa.Table, task_entry: dict):
        self.task, self.split, self.table = task, split, table
        self.family: str = task_entry.get("family", "classification")
        names = task_entry.get("label_names")
        self.label_names: Optional[list[str]] = list(names) if names is not None else None
        self._num_labels: Optional[int] = task_entry.get("num_labels")
        self.entry: dict = task_entry["splits"][split]

    def __len__(self) -> int:
        return self.table.num_rows

    def __repr__(self) -> str:
        return f"TaskSplit({self.task}/{self.split}, rows={len(self)}, columns={self.columns})"

    @property
    def columns(self) -> list[str]:
        return self.table.column_names

    @property
    def num_labels(self) -> int:
        """Classes (classification; 1 for the other families), as recorded in the manifest."""
        if self._num_labels is not None:
            return self._num_labels
        return len(self.label_names) if self.label_names else 1

    @cached_property
    def labels(self) -> np.ndarray:
        """The `label` column (classification class ids, multiple-choice answers, regression values)."""
        if "label" not in self.columns:
            raise KeyError(f"{self.task}/{self.split} ({self.family}) has no label column; columns: {self.columns}")
        return self.table.column("label").to_numpy()

    @cached_property
    def lengths(self) -> np.ndarray:
        return self.table.column("length").to_numpy()

    def select(self, indices: Sequence[int], split: str) -> "TaskSplit":
        """The rows at `indices` as a split of their own named `split` (fine-tuning's fractions and held-out
        rows); `entry` keeps the parent's manifest entry with the row count and the parent named."""
        idx = np.asarray(indices, dtype=np.int64)
        part = TaskSplit.__new__(TaskSplit)
        part.task, part.split, part.table = self.task, split, self.table.take(pa.array(idx))
        part.family, part.label_names, part._num_labels = self.family, self.label_names, self._num_labels
        part.entry = {**self.entry, "rows": len(idx), "selected_from": self.split}
        return part

    def take(self, indices: Sequence[int]) -> dict[str, list]:
        """Rows at `indices` (0-based, in that order) as {column: python list}."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"{self.task}/{self.split}: indices must be in 0..{len(self) - 1}")
        return self.table.take(pa.array(idx)).to_pydict()


def _open_shard(path: Path) -> pa.Table:
    if not path.is_file():
        raise ShardError(f"shard {path} listed in the manifest does not exist")
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def open_split(shards_dir: Union[str, Path], task: str, split: str, verify_sha256: bool = False) -> TaskSplit:
    """Open `split` of `task`; the row count (and, if asked, each shard's sha256) is checked."""
    shards_dir = Path(shards_dir)
    manifest = read_manifest(shards_dir)
    tasks = manifest["tasks"]
    if task not in tasks:
        raise UnknownSplitError(f"unknown task {task!r} in {shards_dir}; known tasks: {sorted(tasks)}")
    splits = tasks[task]["splits"]
    if split not in splits:
        raise UnknownSplitError(f"task {task!r} has no split {split!r} in {shards_dir}; known: {sorted(splits)}")
    entry = splits[split]
    tables = []
    for shard in entry["shards"]:
        path = shards_dir / shard["file"]
        if verify_sha256:
            if path.is_file() and sha256_file(path) != shard["sha256"]:
                raise ShardError(f"shard {path}: sha256 differs from the manifest (re-run prepare)")
        table = _open_shard(path)
        if table.num_rows != shard["rows"]:
            raise ShardError(f"shard {path} has {table.num_rows} rows, manifest says {shard['rows']}")
        tables.append(table)
    table = pa.concat_tables(tables)
    if table.num_rows != entry["rows"]:
        raise ShardError(f"{task}/{split}: shards hold {table.num_rows} rows, manifest says {entry['rows']}")
    return TaskSplit(task, split, table, tasks[task])
