"""Wu, Zhang & Ré's SVD task re-weighting (`sampling.task_weights: svd`): every `svd_every` updates each task
gets a weight from where its representation lies among all tasks', and multiplies its slots' losses until
the next recomputation.

    weights = svd_task_weights(thetas, rank=1)     # [T, H] task vectors -> [T] weights averaging 1
    tw = SvdTaskWeights(names, every=100, rank=1, rows=64, batch_size=16)
    tw.refresh(model, data, task_ids, seed, update_index, rank, world, device)   # at updates 0, k, 2k, ...
    loss * tw.weights[task]

The paper's Algorithm 2 takes theta_i = X^T y_i, which needs every task to share the inputs X; tasks of
different datasets do not, so here theta_t is the mean of the pooled states (what the task's head reads,
`MultiTaskModel.pooled`) over `rows` training rows of task t, a seeded draw fixed for the run. Then, as in
the paper, U_r = the top-r left singular vectors of the H x T matrix [theta_1 ... theta_T] and
alpha_t = ||theta_t^T U_r||; the weights are alpha scaled to average 1 (the paper does not say how it scales
them; mean 1 keeps the loss's scale). The paper re-weights the loss, and so does this: a slot's loss is
multiplied by its task's weight, as `loss_weight` multiplies it.

Distributed: task t's representation is computed by rank t mod W (no gradients, no dropout), one
all-gather shares them, and every rank computes the same weights from the same numbers. The weights in
force and the update they were computed at travel in the checkpoint, so a resumed run continues with them.
"""
from __future__ import annotations

import numpy as np
import torch

from prefinetune.distributed import collectives
from prefinetune.families.eval_loop import eval_mode
from prefinetune.sampling.schedule import Slot

__all__ = ["svd_task_weights", "representation_rows", "SvdTaskWeights"]


def svd_task_weights(thetas: np.ndarray, rank: int) -> np.ndarray:
    """[T, H] task vectors (theta_t as rows) -> [T] weights averaging 1: alpha_t = ||theta_t^T U_r||, U_r the
    top-`rank` left singular vectors of the H x T matrix whose columns are the theta_t."""
    columns = np.asarray(thetas, dtype=np.float64).T
    u, _, _ = np.linalg.svd(columns, full_matrices=False)
    alpha = np.linalg.norm(columns.T @ u[:, :rank], axis=1)
    total = alpha.sum()
    return alpha * (len(alpha) / total) if total > 0 else np.ones(len(alpha))


def representation_rows(seed: int, task_index: int, n: int, rows: int) -> tuple[int, ...]:
    """The training rows whose mean represents task `task_index` (of `n`): a seeded draw, fixed for the run."""
    rng = np.random.default_rng([seed, 2020, task_index])
    return tuple(sorted(rng.choice(n, size=min(rows, n), replace=False).tolist()))


class SvdTaskWeights:
    """The weights in force, recomputed every `every` updates (update indices 0, every, 2 every, ...)."""

    def __init__(self, names: list[str], every: int, rank: int, rows: int, batch_size: int):
        self.names, self.every, self.rank, self.rows, self.batch_size = list(names), every, rank, rows, batch_size
        self.weights: dict[str, float] | None = None
        self.computed_at: int | None = None        # the 1-based update they were computed before

    def due(self, update_index: int) -> bool:
        return self.weights is None or update_index % self.every == 0

    def refresh(self, model, data, task_ids: dict[str, int], seed: int, update_index: int, rank: int, world: int,
                device: torch.device) -> bool:
        """Recompute the weights when due (every rank calls it, with the same model); True when it did."""
        if not self.due(update_index):
            return False
        mine = {name: self.representation(model, data, task_ids[name], name, seed, device)
                for i, name in enumerate(self.names) if i % world == rank}
        merged: dict[str, list[float]] = {}
        for part in (collectives.all_gather_object(mine) if collectives.active() else [mine]):
            merged.update(part)
        weights = svd_task_weights(np.array([merged[n] for n in self.names]), self.rank)
        self.weights = dict(zip(self.names, weights.tolist()))
        self.computed_at = update_index + 1
        return True

    def representation(self, model, data, task_id: int, name: str, seed: int, device) -> list[float]:
        """theta_t: the mean pooled state over the sequences of the task's representation rows (a multiple-choice
        row: one per real choice, the padding choices of a batch left out), as float64 numbers."""
        rows = representation_rows(seed, self.names.index(name), len(data.splits[name]), self.rows)
        total, count = None, 0
        with eval_mode(model), torch.no_grad():
            for start in range(0, len(rows), self.batch_size):
                batch = data.batch(Slot(0, name, rows[start:start + self.batch_size]), device)
                pooled = model.pooled(task_id, batch).double()
                if "choice_mask" in batch:
                    pooled = pooled[batch["choice_mask"].reshape(-1)]
                total = pooled.sum(dim=0) if total is None else total + pooled.sum(dim=0)
                count += len(pooled)
        return (total / count).cpu().tolist()

    def flush(self) -> dict[str, float]:
        """What a log window records: the weights in force and the update they were computed at."""
        if self.weights is None:
            return {}
        return {"task_weights/computed_at": self.computed_at,
                **{f"task_weight/{name}": w for name, w in self.weights.items()}}

    def state_dict(self) -> dict:
        return {"weights": self.weights, "computed_at": self.computed_at}

    def load_state_dict(self, state: dict | None) -> None:
        if state:
            self.weights, self.computed_at = state["weights"], state["computed_at"]
