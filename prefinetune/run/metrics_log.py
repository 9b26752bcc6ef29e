"""What a run shows while it goes: per-task loss and examples seen, summed over all workers per
window of updates; on rank 0 a line per window, a metrics JSONL (one object per line) and the progress
file that the driver draws its bar from."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from prefinetune.distributed import collectives
from prefinetune.run.console import say
from prefinetune.run.progress import write_progress

__all__ = ["WindowStats", "RunLog", "summary_line"]


class WindowStats:
    """Per-task sums over a window of updates, reduced across workers on `flush`."""

    def __init__(self, task_names: list[str]):
        self.names = list(task_names)
        self.index = {n: i for i, n in enumerate(self.names)}
        # loss sum, slots, examples, real tokens, computed tokens
        self.sums = torch.zeros(len(self.names), 5, dtype=torch.float64)
        self.seen = torch.zeros(len(self.names), dtype=torch.float64)     # examples seen, whole run
        self.timing = torch.zeros(3, dtype=torch.float64)     # updates, their seconds, seconds waiting for data

    def add(self, results, update_s: float = 0.0) -> None:
        """One update's slot results on this worker, and its wall time."""
        for r in results:
            self.sums[self.index[r.task]] += torch.tensor(
                [r.loss, 1.0, r.examples, r.real_tokens, r.computed_tokens], dtype=torch.float64)
        self.timing += torch.tensor([1.0, update_s, sum(r.data_s for r in results)], dtype=torch.float64)

    def seen_so_far(self) -> list[float]:
        """Examples seen per task over the whole run up to now, the open window's included, summed over the
        workers (a collective: every rank calls it at the same update). What a checkpoint keeps, so a run
        resumed from the middle of a log window counts the window's first part too."""
        return (self.seen + collectives.all_reduce(self.sums[:, 2].clone())).tolist()

    def flush(self) -> dict[str, float]:
        """Window means of every task run in the window, summed over the workers, and run totals; resets
        the window."""
        sums, timing = collectives.all_reduce(self.sums), collectives.all_reduce(self.timing)
        self.seen += sums[:, 2]
        self.sums.zero_()
        self.timing.zero_()
        out = {}
        if timing[1] > 0:      # per update, over the workers: its seconds, and the share spent waiting for data
            out["time/update_s"] = float(timing[1] / timing[0])
            out["time/data_wait_share"] = float(timing[2] / timing[1])
        for i, name in enumerate(self.names):
            if sums[i, 1] > 0:
                out[f"loss/{name}"] = float(sums[i, 0] / sums[i, 1])
            if sums[i, 4] > 0:     # real tokens / tokens computed: how little goes to padding
                out[f"padding_efficiency/{name}"] = float(sums[i, 3] / sums[i, 4])
            out[f"seen/{name}"] = int(self.seen[i])
        return out


def _window_line(record: dict) -> str:
    """lr, each task's mean loss in the window, time per update (and its share waiting for data), examples seen."""
    losses = {k.split("/", 1)[1]: v for k, v in record.items() if k.startswith("loss/")}
    seen = sum(v for k, v in record.items() if k.startswith("seen/"))
    parts = [f"lr {record['lr']:.2e}"]
    if losses:
        parts.append("loss " + ", ".join(f"{t} {v:.3f}" for t, v in sorted(losses.items())))
    if "time/update_s" in record:
        parts.append(f"{record['time/update_s']:.2f} s/update, {100 * record['time/data_wait_share']:.1f}% "
                     "waiting for data")
    return " | ".join(parts + [f"{seen:,} examples seen"])


def _eval_line(record: dict) -> str:
    """Each task's first metric per split scored (the JSONL and eval_final.json keep all of them)."""
    first: dict[str, dict[str, str]] = {}
    for key, value in record.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[2] != "rows":
            first.setdefault(parts[0], {}).setdefault(parts[1], f"{parts[2]} {value:.3f}")
    return " | ".join(f"{split} " + ", ".join(f"{t} {m}" for t, m in sorted(tasks.items()))
                      for split, tasks in first.items()) or "eval"


def summary_line(record: dict) -> str:
    """One console line for a metrics record: a training window (lr, per-task losses) or an eval."""
    if "skipped_updates" in record:
        body = f"skipped ({record['skipped_updates']} so far)"
    else:
        body = _window_line(record) if "lr" in record else _eval_line(record)
    return f"{body} | {record['elapsed_s']:.0f}s"


def drop_records_after(path: Path, update: int) -> tuple[int, int]:
    """Keep the records of a run's JSONL file (metrics.jsonl, gradient_conflict.jsonl) of updates up to
    `update` (none at update 0: a fresh start), rewritten whole or not at all; a line cut short (a rank
    killed while appending it) goes too. Returns (lines there were, records kept)."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = []
    for line in lines:
        try:
            if update > 0 and json.loads(line).get("update", 0) <= update:
                kept.append(line)
        except json.JSONDecodeError:
            continue
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    partial.replace(path)
    return len(lines), len(kept)


class RunLog:
    """Rank 0's metrics JSONL, window lines and progress file (prefinetune.run.progress: the driver draws
    the bar from it); other ranks write nothing."""

    def __init__(self, run_dir: Path, rank: int, total: int):
        self.active = rank == 0
        self.run_dir, self.total = run_dir, total
        self.trackers = None          # rank 0: log.trackers (prefinetune/run/trackers.py), each record sent there too
        self.start_time = time.time()
        if self.active:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.path = run_dir / "metrics.jsonl"

    def resumed(self, update: int) -> None:
        """At the start of a run (update 0) or of a restart from the checkpoint of `update`: drop the records
        of later updates that an earlier attempt wrote, so metrics.jsonl holds each update once."""
        if not self.active or not self.path.is_file():
            return
        before, kept = drop_records_after(self.path, update)
        if update > 0:
            self.say(f"[prefinetune] resumed after update {update}: {before - kept} metrics records of "
                     "later updates dropped (they are run again)")
        elif before:
            self.say(f"[prefinetune] started from update 0: {before} metrics records of an earlier attempt dropped")

    def step(self, update: int) -> None:
        if self.active:
            write_progress(self.run_dir, update, self.total)

    def write(self, update: int, record: dict) -> None:
        if not self.active:
            return
        record = {"update": update, "elapsed_s": round(time.time() - self.start_time, 2), **record}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.trackers is not None:
            self.trackers.log(update, record)
        self.say(f"update {update}/{self.total}: {summary_line(record)}")

    def close(self, failed: bool = False) -> None:
        """The trackers' runs ended (at the end of the worker loop, or `failed` when it fails)."""
        if self.trackers is not None:
            self.trackers.close(failed)
            self.trackers = None

    def say(self, line: str) -> None:
        """A line on rank 0's console."""
        if self.active:
            say(line)
