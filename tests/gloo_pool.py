"""Worker processes for the suite's gloo tests, started once per session and reused: `pool.spawn(fn,
args, nprocs)` runs fn(rank, *args) on ranks 0..nprocs-1 as torch.multiprocessing.spawn does, without
starting new processes (and importing torch, transformers and DeepSpeed in them again, ~4.5 s) for each
test. Each job sets up its own process group (rank_env, then DeepSpeed or torch.distributed); after it,
the pool tears down whatever group is left, DeepSpeed's cached groups included, so the next job starts
as in a new process. A rank that raises fails the job with that rank's traceback; a rank that dies, or
a job past its timeout, fails it too; the pool then stops its processes (a rank left waiting in a
collective would never return) and starts new ones for the next job.

    pool = GlooPool(2)
    pool.spawn(worker, args=(port, out), nprocs=2)     # worker(rank, port, out) on ranks 0 and 1
    pool.close()
"""
from __future__ import annotations

import multiprocessing
import queue
import sys
import time
import traceback


class GlooPool:
    def __init__(self, size: int = 2):
        self._ctx = multiprocessing.get_context("spawn")
        self._size = size
        self._procs: list = []

    def _start(self) -> None:
        self._jobs = [self._ctx.Queue() for _ in range(self._size)]
        self._done = self._ctx.Queue()
        self._procs = [self._ctx.Process(target=_serve, args=(rank, self._jobs[rank], self._done), daemon=True)
                       for rank in range(self._size)]
        for proc in self._procs:
            proc.start()

    def spawn(self, fn, args: tuple = (), nprocs: int = 2, timeout: float = 900) -> None:
        assert 1 <= nprocs <= self._size, f"the pool has {self._size} processes, the job asks for {nprocs}"
        if not self._procs or not all(p.is_alive() for p in self._procs):
            self.close()
            self._start()
        for rank in range(nprocs):
            self._jobs[rank].put((fn, args))
        finished: set = set()
        deadline = time.time() + timeout
        while len(finished) < nprocs:
            try:
                rank, error = self._done.get(timeout=1)
            except queue.Empty:
                dead = [r for r in range(nprocs) if r not in finished and not self._procs[r].is_alive()]
                if dead or time.time() > deadline:
                    self.close()
                    raise RuntimeError(f"{_name(fn)}: rank {dead} died" if dead else
                                       f"{_name(fn)}: not done after {timeout} s")
                continue
            if error is not None:
                self.close()
                raise RuntimeError(f"{_name(fn)} failed on rank {rank}:\n{error}")
            finished.add(rank)

    def close(self) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()
            proc.join(timeout=30)
        self._procs = []


def _serve(rank: int, jobs, done) -> None:
    while True:
        fn, args = jobs.get()
        try:
            fn(rank, *args)
            error = None
        except BaseException:         # noqa: BLE001 - sent to the parent, which fails the test with it
            error = traceback.format_exc()
        _tear_down_groups()
        done.put((rank, error))


def _tear_down_groups() -> None:
    """What a new process would not have: the job's process group, and DeepSpeed's references to it
    (deepspeed.comm.destroy_process_group releases them the same way)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    groups = sys.modules.get("deepspeed.utils.groups")
    if groups is not None:
        groups._release_process_group_references(None)


def _name(fn) -> str:
    return getattr(fn, "__name__", repr(fn))
