"""The report's figures (matplotlib, Agg): a tasks x tasks heatmap with its values written in, and each
task's training loss over the updates from metrics.jsonl.

    heatmap(names, matrix, "task covariance similarity (rank 8)", "report/task_similarity.png")
    loss_curves("runs/x/metrics.jsonl", "report/loss_curves.png")
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["heatmap", "read_losses", "loss_curves"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap(names: list[str], matrix: np.ndarray, title: str, path: str | Path, low: float = 0.0,
            high: float = 1.0) -> Path:
    """The matrix as colours from `low` to `high` (NaN: blank), its values written in up to 20 tasks."""
    plt = _pyplot()
    size = max(4.0, 0.6 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, vmin=low, vmax=high, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
    ax.set_yticks(range(len(names)), names)
    if len(names) <= 20:
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if matrix[i, j] > low + 0.6 * (high - low) else "white")
    fig.colorbar(image, ax=ax)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def read_losses(metrics_jsonl: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{task: [(update, training loss), ...]} from the `loss/<task>` keys of metrics.jsonl."""
    losses: dict[str, list[tuple[int, float]]] = {}
    for line in Path(metrics_jsonl).read_text(encoding="utf-8").splitlines():
        record = json.loads(line) if line.strip() else {}
        for key, value in record.items():
            if key.startswith("loss/") and isinstance(value, (int, float)):
                losses.setdefault(key[len("loss/"):], []).append((record["update"], float(value)))
    return losses


def loss_curves(metrics_jsonl: str | Path, path: str | Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for task, points in read_losses(metrics_jsonl).items():
        ax.plot(*zip(*points), marker="o", markersize=3, label=task)
    ax.set_xlabel("update")
    ax.set_ylabel("training loss (metrics.jsonl loss/<task>)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
