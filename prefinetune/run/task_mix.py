"""The realised task mix: which share of the slots each task got, per window of updates, and its plot.

The slot plan of an update is the same on every worker (a pure function of seed and step), so rank 0
counts the whole plan and no reduction is needed:

    mix = TaskMix(task_names)
    for update ...:
        plan = plan_update(...)
        mix.add(plan)                                   # the whole plan, not worker_slots(plan, ...)
        if update % log_every == 0:
            log.write(update, {**mix.flush()})          # {"mix/<task>": fraction of the window's slots}
    plot_task_mix(run_dir / "metrics.jsonl", run_dir / "task_mix.png")

    python -c "from prefinetune.run.task_mix import plot_task_mix; plot_task_mix('runs/x/metrics.jsonl', 'mix.png')"
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

__all__ = ["MIX_PREFIX", "TaskMix", "mix_record", "read_task_mix", "plot_task_mix"]

MIX_PREFIX = "mix/"


def mix_record(counts: Mapping[str, int]) -> dict[str, float]:
    """{"mix/<task>": fraction of the window's slots} for every task (0.0 for tasks not drawn)."""
    total = sum(counts.values())
    return {f"{MIX_PREFIX}{t}": (n / total if total else 0.0) for t, n in counts.items()}


class TaskMix:
    """Slots per task over a window of updates; `flush` gives the window's mix record and resets."""

    def __init__(self, task_names: Iterable[str]):
        self.counts = {t: 0 for t in task_names}

    def add(self, plan: Iterable) -> None:
        """Count the slots of one update's plan (anything with a `.task`)."""
        for slot in plan:
            if slot.task not in self.counts:
                raise KeyError(f"slot task {slot.task!r} is not one of {list(self.counts)}")
            self.counts[slot.task] += 1

    def flush(self) -> dict[str, float]:
        record = mix_record(self.counts)
        self.counts = dict.fromkeys(self.counts, 0)
        return record


def read_task_mix(metrics_jsonl_path: str | Path) -> tuple[list[int], list[str], np.ndarray]:
    """From a metrics JSONL, the updates that carry a mix record, the tasks (first-seen order) and a
    (tasks x records) array of fractions (0 where a record leaves a task out)."""
    records = []
    for line in Path(metrics_jsonl_path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            mix = {k[len(MIX_PREFIX):]: v for k, v in record.items() if k.startswith(MIX_PREFIX)}
            if mix:
                records.append((int(record.get("update", len(records) + 1)), mix))
    names = list(dict.fromkeys(t for _, mix in records for t in mix))
    fractions = np.array([[mix.get(t, 0.0) for _, mix in records] for t in names]).reshape(len(names), len(records))
    return [u for u, _ in records], names, fractions


def _colors(n: int) -> list:
    from matplotlib import colormaps

    names = ("tab10",) if n <= 10 else ("tab20", "tab20b", "tab20c")
    palette = [c for name in names for c in colormaps[name].colors]
    return [palette[i % len(palette)] for i in range(n)]


def plot_task_mix(metrics_jsonl_path: str | Path, png_path: str | Path, title: str = "Realised task mix",
                  size: tuple[float, float] = (10.0, 5.0), dpi: int = 100) -> Path:
    """A stacked chart of each task's share of the slots per logged window (x: the window's last update).
    Few windows are drawn as bars, many as a stacked area. The PNG is size*dpi pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    updates, names, fractions = read_task_mix(metrics_jsonl_path)
    if not updates:
        raise ValueError(f"{metrics_jsonl_path} holds no '{MIX_PREFIX}<task>' records to plot")
    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    colors = _colors(len(names))
    x = np.array(updates)
    if len(updates) <= 40:
        width = 0.8 * (np.min(np.diff(x)) if len(x) > 1 else 1)
        bottom = np.zeros(len(x))
        for name, row, color in zip(names, fractions, colors):
            ax.bar(x, row, width=width, bottom=bottom, label=name, color=color)
            bottom += row
    else:
        ax.stackplot(x, fractions, labels=names, colors=colors, step="pre" if len(x) > 1 else None)
    ax.set(xlabel="update (end of window)", ylabel="share of slots", title=title, ylim=(0, 1))
    ax.margins(x=0.01)
    handles, labels = ax.get_legend_handles_labels()     # reversed: the legend stacks like the chart
    fig.legend(handles[::-1], labels[::-1], loc="outside right upper", title="task",
               fontsize="small" if len(names) <= 20 else "x-small", ncols=1 if len(names) <= 25 else 2)
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=dpi)
    return png_path
