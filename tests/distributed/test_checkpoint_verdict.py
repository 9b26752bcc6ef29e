"""A restart reads the checkpoint once: on 2 real gloo workers, rank 0 alone hashes the checkpoint's files
(`agreed_newest_whole`), and both ranks resume from the same folder with the same warning; when no whole
checkpoint is left, both raise the same error. (The whole restart through Ray: tests/test_worker_failure.py.)

    python -m pytest tests/distributed/test_checkpoint_verdict.py -q
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import free_port, rank_env  # noqa: E402


def _checkpoint(folder: Path, update: int) -> Path:
    """A checkpoint folder as the worker loop writes one: DeepSpeed's `latest`, a file, 2 ranks' lists."""
    from prefinetune.distributed.checkpoint_files import write_file_list

    tag = f"update-{update:07d}"
    (folder / tag).mkdir(parents=True)
    (folder / "latest").write_text(tag)
    (folder / tag / "weights.pt").write_bytes(bytes(range(256)) * 64)
    for rank in range(2):
        write_file_list(folder, rank, 2)
    return folder


def _worker(rank: int, port: int, root: str) -> None:
    rank_env(rank, 2, port)
    torch.distributed.init_process_group("gloo")
    from prefinetune.data import shards
    from prefinetune.distributed.checkpoint_files import TornCheckpointError, agreed_newest_whole

    hashed = []
    real = shards.sha256_file                 # what the checkpoint check hashes with (imported where used)
    shards.sha256_file = lambda path: hashed.append(str(path)) or real(path)
    folder, note, torn = agreed_newest_whole(Path(root, "checkpoint_b"), rank)
    remote = agreed_newest_whole(Path(root, "checkpoint_b"), rank, local=rank != 0)   # rank 0's word counts
    try:
        agreed_newest_whole(Path(root, "other", "checkpoint_c"), rank)
        error = None
    except TornCheckpointError as err:
        error = str(err)
    Path(root, f"rank{rank}.json").write_text(json.dumps({"folder": str(folder), "note": note, "hashed": len(hashed),
                                                          "torn": [str(p) for p in torn], "remote": remote,
                                                          "error": error}))
    torch.distributed.destroy_process_group()


def test_rank_0_alone_reads_the_checkpoint_and_every_rank_gets_its_verdict(tmp_path, gloo):
    whole = _checkpoint(tmp_path / "checkpoint_a", 2)
    torn = _checkpoint(tmp_path / "checkpoint_b", 4)
    (torn / "update-0000004" / "weights.pt").write_bytes(b"cut")
    alone = _checkpoint(tmp_path / "other" / "checkpoint_c", 2)      # no whole one beside it
    (alone / "update-0000002" / "weights.pt").write_bytes(b"cut")
    gloo.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert reports[0]["hashed"] > 0 and reports[1]["hashed"] == 0
    for report in reports:
        assert report["folder"] == str(whole)
        assert report["note"].startswith(f"checkpoint {torn} is torn") and "(update 2)" in report["note"]
        assert report["torn"] == [str(torn)] and report["remote"] is None
    assert reports[0]["error"] == reports[1]["error"]
    assert reports[0]["error"].startswith("no whole checkpoint to resume from")
