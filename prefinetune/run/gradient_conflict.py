"""Gradient conflict between tasks (diagnostics.every): how far apart the gradients of different tasks'
slots point in the shared backbone, read from the backward passes training runs anyway.

On a sampled update a tensor hook on every trainable backbone parameter reads, as each slot's backward
computes it (before DeepSpeed accumulates or reduces anything), that slot's gradient at a fixed random
sample of `diagnostics.coordinates` backbone coordinates (the same on every rank: a pure function of
the run's seed). The update's slot vectors are gathered from every rank; rank 0 adds the cosine of every
pair of slots to its task pair and appends the sums to RUN_DIR/gradient_conflict.jsonl (a resumed run
drops the lines of the updates it runs again). No extra backward, no copy of a whole gradient; off
(every 0) nothing is hooked.

The cosine of two gradients at a uniform random sample of coordinates estimates their cosine over all
of them (exact when the sample is every coordinate: `coordinates` >= the backbone's size).

    probe = GradientProbe(model, coordinates=16384, seed=0)
    with probe.sampling():                       # hooks on for this update only
        for slot in slots: probe.start(); backward(...); probe.stop(slot.task)
    pairs = conflict_sums(gather(probe.slots))   # {"a|b": [sum of cosines, pairs]}
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

__all__ = ["FILE", "GradientProbe", "ConflictSampler", "sample_coordinates", "pair_key", "conflict_sums",
           "conflict_matrix", "read_conflicts", "drop_later_lines"]

FILE = "gradient_conflict.jsonl"


def sample_coordinates(total: int, k: int, seed: int) -> torch.Tensor:
    """`min(k, total)` distinct indices in [0, total), sorted, a pure function of `seed`, drawn without a
    permutation of all `total` (a 355M-parameter backbone's would take 2.8 GB)."""
    if k >= total:
        return torch.arange(total)
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.unique(torch.randint(0, total, (k,), generator=generator))
    while len(chosen) < k:               # collisions, rare when k << total: draw the missing ones again
        extra = torch.randint(0, total, (k - len(chosen),), generator=generator)
        chosen = torch.unique(torch.cat([chosen, extra]))
    return chosen


def pair_key(a: str, b: str) -> str:
    return "|".join(sorted((a, b)))


class GradientProbe:
    """Per-slot gradients of a fixed random sample of the trainable backbone coordinates (see the module)."""

    def __init__(self, model: torch.nn.Module, coordinates: int, seed: int):
        params = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")]
        sizes = [p.numel() for p in params]
        total = sum(sizes)
        if total == 0:
            raise ValueError("gradient conflict needs trainable backbone parameters; the backbone is frozen")
        self.chosen = sample_coordinates(total, coordinates, seed)   # flat indices, in parameter order
        chosen = self.chosen
        self.size = len(chosen)
        self._picks = []               # (param, its slice of the slot vector, indices into the flat param)
        offsets = torch.tensor([0] + sizes).cumsum(0)          # where each parameter starts, flat
        bounds = torch.searchsorted(chosen, offsets)            # its share of the sorted sample
        for i, param in enumerate(params):
            low, high = int(bounds[i]), int(bounds[i + 1])
            if high > low:
                self._picks.append((param, slice(low, high), chosen[low:high] - offsets[i]))
        self.slots: list[tuple[str, np.ndarray]] = []
        self._handles: list = []
        self._current: torch.Tensor | None = None
        self._on: dict = {}           # (pick, device) -> its indices there, moved once for the run

    @contextmanager
    def sampling(self):
        """Hooks on for the block (one update); `slots` holds its slots' vectors after it."""
        self.slots = []
        self._handles = [param.register_hook(self._reader(i)) for i, (param, _, _) in enumerate(self._picks)]
        try:
            yield self
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles, self._current = [], None

    def _reader(self, pick: int):
        def read(grad: torch.Tensor) -> None:
            if self._current is None:
                return
            _, where, indices = self._picks[pick]
            key = (pick, grad.device)
            if key not in self._on:
                self._on[key] = indices.to(grad.device)
            if self._current.device != grad.device:       # the slot vector lives where the gradients are
                self._current = self._current.to(grad.device)
            self._current[where] += grad.detach().reshape(-1)[self._on[key]].float()
        return read

    def start(self) -> None:
        """A slot's backward comes next."""
        self._current = torch.zeros(self.size)

    def stop(self, task: str) -> None:
        """The slot's backward is done: keep its vector (on the CPU: one copy a slot) under its task."""
        if self._current is not None:
            self.slots.append((task, self._current.cpu().numpy()))
        self._current = None


def conflict_sums(slots: Iterable[tuple[str, np.ndarray]]) -> dict[str, list]:
    """{"a|b": [sum of cosines, number of pairs]} over every pair of slots (a task with itself included:
    how consistent its own slots are); a zero or non-finite vector is left out."""
    kept = [(task, v / norm) for task, v in slots
            if np.isfinite(v).all() and (norm := float(np.linalg.norm(v))) > 0]
    sums: dict[str, list] = {}
    for i in range(len(kept)):
        for j in range(i + 1, len(kept)):
            entry = sums.setdefault(pair_key(kept[i][0], kept[j][0]), [0.0, 0])
            entry[0] += float(kept[i][1] @ kept[j][1])
            entry[1] += 1
    return sums


def conflict_matrix(records: Iterable[dict], tasks: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(tasks x tasks mean cosine, NaN where no pair was seen; pairs seen) over the records' sums."""
    sums = np.zeros((len(tasks), len(tasks)))
    counts = np.zeros_like(sums)
    where = {t: i for i, t in enumerate(tasks)}
    for record in records:
        for key, (total, n) in record["pairs"].items():
            a, b = key.split("|")
            for i, j in {(where[a], where[b]), (where[b], where[a])}:
                sums[i, j] += total
                counts[i, j] += n
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan), counts


def read_conflicts(run_dir: str | Path) -> list[dict]:
    """The file's records; a line cut short (rank 0 killed while appending it) is left out."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def drop_later_lines(run_dir: Path, update: int) -> None:
    """At a start (update 0: every line) or a restart from the checkpoint of `update`: drop the lines of
    later updates, which are run again (whether or not this attempt samples), and any line cut short."""
    from prefinetune.run.metrics_log import drop_records_after

    path = Path(run_dir) / FILE
    if path.is_file():
        drop_records_after(path, update)


class ConflictSampler:
    """The worker's side: on every `diagnostics.every`-th update the probe's hooks are on; its slot vectors
    are then gathered from every rank, and rank 0 appends the update's pair sums to gradient_conflict.jsonl."""

    def __init__(self, model: torch.nn.Module, recipe, rank: int):
        self.every, self.rank, self.run_dir = recipe.diagnostics.every, rank, Path(recipe.run_dir)
        self.probe = GradientProbe(model, recipe.diagnostics.coordinates, recipe.run.seed)

    @contextmanager
    def update(self, update: int):
        """The probe for this update's slots (None on an update not sampled)."""
        if update % self.every:
            yield None
            return
        with self.probe.sampling() as probe:
            yield probe
        from prefinetune.distributed import collectives

        slots = [slot for part in collectives.all_gather_object(probe.slots) for slot in part]
        if self.rank == 0:
            from prefinetune.run.best_effort import best_effort

            best_effort("the gradient-conflict record", self._append,
                        {"update": update, "slots": len(slots), "pairs": conflict_sums(slots)})

    def _append(self, record: dict) -> None:
        with (self.run_dir / FILE).open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
