"""Task covariance similarity (Wu, Zhang & Ré, ICLR 2020, "Understanding and Improving Information
Transfer in Multi-Task Learning", §3; CA-MTL's eq. 3.7): how much two tasks' representations occupy the
same directions, weighted by how much variance each direction holds.

For task i with representations X_i (n_i x H: one row per example), U_i D_i U_iᵀ is the best rank-r
approximation of X_iᵀ X_i (its top-r eigenvectors and eigenvalues; uncentred, as in the paper). Then

    CovSim_ij = ‖(U_i D_i^½)ᵀ U_j D_j^½‖_F / (‖U_i D_i^½‖_F ‖U_j D_j^½‖_F)

in [0, 1]: 0 when the principal directions are orthogonal; for one task with itself, ‖D‖_F / tr(D), 1
when its variance lies in one direction (1/√r when spread evenly over r). It ignores each task's scale
(X_i times any c gives the same value) and the number of its rows.

    sim = covsim_matrix({"rte": X_rte, "mnli": X_mnli}, rank=8)      # tasks x tasks, symmetric
"""
from __future__ import annotations

import numpy as np

__all__ = ["principal", "covsim", "covsim_matrix"]


def principal(x: np.ndarray, rank: int) -> np.ndarray:
    """U D^½ (H x r): the top-`rank` eigenvectors of xᵀx scaled by the square roots of their eigenvalues
    (from the SVD of x: xᵀx = V S² Vᵀ, so U D^½ = V[:, :r] S[:r])."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"representations must be a non-empty (rows x features) matrix, not shape {x.shape}")
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    r = min(rank, len(s))
    return vt[:r].T * s[:r]


def covsim(a: np.ndarray, b: np.ndarray) -> float:
    """CovSim of two tasks from their `principal` factors (H x r_a, H x r_b); 0 for a task without variance."""
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(np.linalg.norm(a.T @ b) / norm) if norm > 0 else 0.0


def covsim_matrix(representations: dict[str, np.ndarray], rank: int) -> tuple[list[str], np.ndarray]:
    """(task names, tasks x tasks CovSim) of each task's representations at `rank`."""
    if rank < 1:
        raise ValueError(f"rank must be >= 1, not {rank}")
    names = list(representations)
    factors = [principal(representations[n], rank) for n in names]
    matrix = np.array([[covsim(a, b) for b in factors] for a in factors])
    return names, matrix
