"""The gloo tests' process pool (tests/gloo_pool.py) keeps torch.multiprocessing.spawn's promises: every
rank runs the job in a process group of the job's own, a rank that raises fails the job with its
traceback (never a hang), and the next job runs in processes as clean as new ones.

    python -m pytest tests/test_gloo_pool.py -q
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import free_port, rank_env  # noqa: E402


def _sum_of_ranks(rank: int, world: int, port: int, out: str) -> None:
    import torch

    rank_env(rank, world, port)
    torch.distributed.init_process_group("gloo")
    total = torch.tensor([float(rank + 1)])
    torch.distributed.all_reduce(total)
    Path(out, f"rank{rank}.json").write_text(json.dumps({"sum": total.item(), "pid": os.getpid(),
                                                         "world": torch.distributed.get_world_size()}))
    # no destroy_process_group: the pool tears the group down after the job


def _fails_on_rank_1(rank: int) -> None:
    if rank == 1:
        raise ValueError("rank 1 fails on purpose")


def test_jobs_run_in_groups_of_their_own_and_a_failing_rank_fails_the_job(gloo, tmp_path):
    runs = []
    for world in (2, 1, 2):
        out = tmp_path / f"run{len(runs)}"
        out.mkdir()
        gloo.spawn(_sum_of_ranks, args=(world, free_port(), str(out)), nprocs=world)
        runs.append([json.loads((out / f"rank{r}.json").read_text()) for r in range(world)])
    assert [[r["sum"] for r in run] for run in runs] == [[3.0, 3.0], [1.0], [3.0, 3.0]]
    assert [[r["world"] for r in run] for run in runs] == [[2, 2], [1], [2, 2]]
    assert runs[0][0]["pid"] == runs[2][0]["pid"]          # the same processes, reused
    with pytest.raises(RuntimeError, match=r"_fails_on_rank_1 failed on rank 1:\n(.|\n)*ValueError: rank 1 fails"):
        gloo.spawn(_fails_on_rank_1, nprocs=2)
    out = tmp_path / "after"
    out.mkdir()
    gloo.spawn(_sum_of_ranks, args=(2, free_port(), str(out)), nprocs=2)      # new processes, clean
    after = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["sum"] for r in after] == [3.0, 3.0] and after[0]["pid"] != runs[0][0]["pid"]
