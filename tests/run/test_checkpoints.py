"""prefinetune's own checkpoint retention on folders made here: the `keep` newest stay, a torn one set aside
is never counted in place of a whole one, folders still being written are left alone, and a (re)start
makes the folder one line ending at the checkpoint resumed from. (Through a real run with a torn
checkpoint and a killed worker: tests/test_worker_failure.py.)

    python -m pytest tests/run/test_checkpoints.py -q
"""
from __future__ import annotations

from pathlib import Path

import ray.train

from prefinetune.distributed.checkpoint_files import Found
from prefinetune.run.checkpoints import SUPERSEDED, TORN, aside_newest, restore, set_aside, stale, tidy_at_start
from prefinetune.run.controller import KeepCheckpoints


def _checkpoint(experiment: Path, name: str, update: int | None) -> Path:
    folder = experiment / name
    folder.mkdir(parents=True)
    (folder / "weights.pt").write_bytes(b"w" * 64)
    if update is not None:
        (folder / "latest").write_text(f"update-{update:07d}")
    return folder


def _names(experiment: Path, kind: str = "") -> list[str]:
    return sorted(p.name for p in (experiment / kind).glob("checkpoint_*") if p.is_dir())


def test_the_newest_are_kept_and_a_torn_one_set_aside_never_counts(tmp_path):
    a, b, c = (_checkpoint(tmp_path, f"checkpoint_{u}", u) for u in (2, 4, 6))
    assert stale(tmp_path, 2, c) == [a]
    assert stale(tmp_path, 1, c) == [b, a]
    assert stale(tmp_path, 3, c) == []
    # a restart finds c torn and falls back to b: c goes to torn/, so the next update-6 checkpoint keeps b
    lines = tidy_at_start(tmp_path, Found(b, "c is torn", (c,)))
    assert lines == [f"1 checkpoint(s) torn set aside in {tmp_path / TORN}: checkpoint_6"]
    again = _checkpoint(tmp_path, "checkpoint_6b", 6)
    assert stale(tmp_path, 2, again) == [a]
    # Ray Train's own rule, in report order, would have kept c (torn) and `again`, and deleted b
    KeepCheckpoints(2).after_report(None, [{}], ray.train.Checkpoint(str(again)))
    assert _names(tmp_path) == ["checkpoint_4", "checkpoint_6b"]
    assert (tmp_path / TORN / "checkpoint_6" / "weights.pt").is_file()      # evidence kept, out of the count


def test_folders_still_being_written_are_left_alone(tmp_path):
    old = _checkpoint(tmp_path, "checkpoint_2", 2)
    current = _checkpoint(tmp_path, "checkpoint_4", 4)
    copying = _checkpoint(tmp_path, "checkpoint_5", None)       # no `latest` yet
    next_one = _checkpoint(tmp_path, "checkpoint_6", 6)          # a later update, saved while this one is counted
    assert stale(tmp_path, 1, current) == [old]
    assert copying.is_dir() and next_one.is_dir()
    KeepCheckpoints(1).after_report(None, [{}], None)                  # a report without a checkpoint: nothing
    assert _names(tmp_path) == ["checkpoint_2", "checkpoint_4", "checkpoint_5", "checkpoint_6"]


def test_a_restart_makes_the_folder_one_line_ending_at_the_checkpoint_resumed_from(tmp_path):
    """After a resume from update 2: the later checkpoints (an abandoned attempt's, a same-update copy a
    killed worker left) go to superseded/, a copy cut short (no `latest`) to torn/; a superseded one
    given to --resume-from later is put back in line."""
    run = tmp_path / "run"
    a, b, c = (_checkpoint(run, f"checkpoint_{u}", u) for u in (2, 4, 6))
    twin = _checkpoint(run, "checkpoint_2z", 2)
    cut = _checkpoint(run, "checkpoint_7", None)
    lines = tidy_at_start(run, Found(a, None))
    assert _names(run) == ["checkpoint_2"]
    assert _names(run, SUPERSEDED) == ["checkpoint_2z", "checkpoint_4", "checkpoint_6"]
    assert _names(run, TORN) == ["checkpoint_7"]
    assert lines == [f"1 checkpoint(s) torn set aside in {run / TORN}: checkpoint_7",
                     f"3 checkpoint(s) of a later update (an earlier attempt's) set aside in {run / SUPERSEDED}: "
                     "checkpoint_2z, checkpoint_4, checkpoint_6"]
    assert aside_newest(run) == run / SUPERSEDED / "checkpoint_6"
    assert restore(run / SUPERSEDED / "checkpoint_6", run) == c and (c / "latest").is_file()
    assert restore(a, run) == a                                   # one in line stays where it is
    # a name already set aside gets a suffix; another run's checkpoint is not this run's to move
    again = _checkpoint(run, "checkpoint_4", 4)
    moved, failed = set_aside([again], run, SUPERSEDED)
    assert moved == [run / SUPERSEDED / "checkpoint_4.1"] and failed == [] and not b.exists()
    other = _checkpoint(tmp_path / "other", "checkpoint_8", 8)
    assert set_aside([other], run, TORN) == ([], []) and other.is_dir()
    assert not twin.exists() and not cut.exists()
