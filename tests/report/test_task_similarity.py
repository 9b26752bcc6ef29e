"""Task covariance similarity (prefinetune/report/task_similarity.py) against the definition computed
directly: eigenvectors of XᵀX from numpy's eigh, the Frobenius norms of eq. 3.7; and on known cases.

    python -m pytest tests/report/test_task_similarity.py -q
"""
from __future__ import annotations

import numpy as np
import pytest

from prefinetune.report.task_similarity import covsim, covsim_matrix, principal


def _direct(x: np.ndarray, y: np.ndarray, rank: int) -> float:
    """Eq. 3.7 as written: U D U^T the top-r eigenpairs of X^T X (numpy's eigh), norms of U D^1/2."""
    def ud(m):
        values, vectors = np.linalg.eigh(m.T @ m)
        top = np.argsort(values)[::-1][:rank]
        return vectors[:, top] * np.sqrt(np.clip(values[top], 0, None))
    a, b = ud(x), ud(y)
    return np.linalg.norm(a.T @ b, "fro") / (np.linalg.norm(a, "fro") * np.linalg.norm(b, "fro"))


def test_it_is_the_definition_on_random_tasks():
    rng = np.random.default_rng(0)
    tasks = {f"t{i}": rng.normal(size=(40 + 7 * i, 12)) @ rng.normal(size=(12, 12)) for i in range(4)}
    names, sim = covsim_matrix(tasks, rank=5)
    want = np.array([[_direct(tasks[a], tasks[b], 5) for b in names] for a in names])
    np.testing.assert_allclose(sim, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sim, sim.T, rtol=0, atol=1e-14)
    assert names == list(tasks) and np.all((sim > 0) & (sim <= 1))


def test_known_cases():
    rng = np.random.default_rng(1)
    direction = rng.normal(size=16)
    one = rng.normal(size=(30, 1)) * direction                     # all variance in one direction
    assert covsim(principal(one, 4), principal(one * 3.0, 4)) == pytest.approx(1.0)   # itself, any scale
    basis = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    left = rng.normal(size=(50, 3)) @ basis[:, :3].T                # directions 0-2
    right = rng.normal(size=(50, 3)) @ basis[:, 3:6].T              # directions 3-5: orthogonal
    assert covsim(principal(left, 3), principal(right, 3)) == pytest.approx(0.0, abs=1e-12)
    even = basis[:, :4].T * 2.0                                     # variance spread evenly over 4 directions
    assert covsim(principal(even, 4), principal(even, 4)) == pytest.approx(1 / np.sqrt(4))
    assert covsim(principal(even, 4), principal(even[:, ::-1], 4)) < 1.0
    with pytest.raises(ValueError, match="non-empty"):
        principal(np.zeros((0, 3)), 2)
    with pytest.raises(ValueError, match="rank must be >= 1"):
        covsim_matrix({"a": one}, 0)
