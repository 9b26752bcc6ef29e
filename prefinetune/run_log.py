"""What a run shows while it goes: per-task loss and examples seen, summed over all workers per
window of updates; a progress bar and a metrics JSONL (one object per line) on rank 0."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

__all__ = ["WindowStats", "RunLog", "summary_line"]


class WindowStats:
    """Per-task sums over a window of updates, reduced across workers on `flush`."""

    def __init__(self, task_names: list[str]):
        self.names = list(task_names)
        self.index = {n: i for i, n in enumerate(self.names)}
        # loss sum, slots, examples, real tokens, computed tokens
        self.sums = torch.zeros(len(self.names), 5, dtype=torch.float64)
        self.seen = torch.zeros(len(self.names), dtype=torch.float64)     # examples seen, whole run

    def add(self, results) -> None:
        for r in results:
            self.sums[self.index[r.task]] += torch.tensor(
                [r.loss, 1.0, r.examples, r.real_tokens, r.computed_tokens], dtype=torch.float64)

    def flush(self, world_size: int) -> dict[str, float]:
        """Window means of every task run in the window, and run totals; resets the window."""
        sums = self.sums.clone()
        if world_size > 1:
            torch.distributed.all_reduce(sums)
        self.seen += sums[:, 2]
        self.sums.zero_()
        out = {}
        for i, name in enumerate(self.names):
            if sums[i, 1] > 0:
                out[f"loss/{name}"] = float(sums[i, 0] / sums[i, 1])
            if sums[i, 4] > 0:     # real tokens / tokens computed: how little goes to padding
                out[f"padding_efficiency/{name}"] = float(sums[i, 3] / sums[i, 4])
            out[f"seen/{name}"] = int(self.seen[i])
        return out


def summary_line(record: dict) -> str:
    """One short console line for a metrics record (the JSONL keeps everything)."""
    losses = [v for k, v in record.items() if k.startswith("loss/")]
    parts = []
    if "lr" in record:
        parts.append(f"lr {record['lr']:.2e}")
    if losses:
        seen = sum(v for k, v in record.items() if k.startswith("seen/"))
        parts.append(f"mean task loss {sum(losses) / len(losses):.4f} over {len(losses)} tasks, {seen} examples seen")
    scores = {k.split("/")[1]: v for k, v in record.items() if k.count("/") == 2 and not k.endswith("/rows")}
    if scores:
        parts.append("dev " + " ".join(f"{t}={v:.3f}" for t, v in scores.items()))
    return " | ".join(parts + [f"{record['elapsed_s']:.0f}s"])


class RunLog:
    """Rank 0's progress bar and metrics JSONL; other ranks write nothing."""

    def __init__(self, run_dir: Path, rank: int, total: int, start: int = 0):
        self.active = rank == 0
        self.start_time = time.time()
        self.bar = None
        if self.active:
            from tqdm.auto import tqdm

            run_dir.mkdir(parents=True, exist_ok=True)
            self.path = run_dir / "metrics.jsonl"
            self.bar = tqdm(total=total, initial=start, desc="updates", unit="upd", mininterval=5)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def write(self, update: int, record: dict) -> None:
        if not self.active:
            return
        record = {"update": update, "elapsed_s": round(time.time() - self.start_time, 2), **record}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.bar.write(f"update {update}: {summary_line(record)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
