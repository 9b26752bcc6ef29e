"""prefinetune's own checkpoint retention on folders made here: the `keep` newest stay, a torn one set aside
is never counted in place of a whole one, folders still being written are left alone, and a resume from
an earlier checkpoint sets the later ones aside. (Through a real run with a torn checkpoint and a killed
worker: tests/test_worker_failure.py.)

    python -m pytest tests/run/test_checkpoints.py -q
"""
from __future__ import annotations

from pathlib import Path

import ray.train

from prefinetune.run.checkpoints import SUPERSEDED, TORN, later_than, set_aside, stale
from prefinetune.run.controller import KeepNewest


def _checkpoint(experiment: Path, name: str, update: int | None) -> Path:
    folder = experiment / name
    folder.mkdir(parents=True)
    (folder / "weights.pt").write_bytes(b"w" * 64)
    if update is not None:
        (folder / "latest").write_text(f"update-{update:07d}")
    return folder


def _names(experiment: Path) -> list[str]:
    return sorted(p.name for p in experiment.glob("checkpoint_*"))


def test_the_newest_are_kept_and_a_torn_one_set_aside_never_counts(tmp_path):
    a, b, c = (_checkpoint(tmp_path, f"checkpoint_{u}", u) for u in (2, 4, 6))
    assert stale(tmp_path, 2, c) == [a]
    assert stale(tmp_path, 1, c) == [b, a]
    assert stale(tmp_path, 3, c) == []
    # after a fall-back from the torn c to b, c is set aside: the next checkpoint of update 6 keeps b
    assert set_aside([c], tmp_path, TORN) == [tmp_path / TORN / c.name]
    again = _checkpoint(tmp_path, "checkpoint_6b", 6)
    assert stale(tmp_path, 2, again) == [a]
    # Ray Train's own rule, in report order, would have kept c (torn) and `again`, and deleted b
    KeepNewest(2).after_report(None, [{}], ray.train.Checkpoint(str(again)))
    assert _names(tmp_path) == ["checkpoint_4", "checkpoint_6b"]
    assert (tmp_path / TORN / "checkpoint_6" / "weights.pt").is_file()      # evidence kept, out of the count


def test_folders_still_being_written_are_left_alone(tmp_path):
    old = _checkpoint(tmp_path, "checkpoint_2", 2)
    current = _checkpoint(tmp_path, "checkpoint_4", 4)
    copying = _checkpoint(tmp_path, "checkpoint_5", None)       # no `latest` yet
    next_one = _checkpoint(tmp_path, "checkpoint_6", 6)          # a later update, saved while this one is counted
    assert stale(tmp_path, 1, current) == [old]
    assert copying.is_dir() and next_one.is_dir()
    KeepNewest(1).after_report(None, [{}], None)                  # a report without a checkpoint: nothing
    assert _names(tmp_path) == ["checkpoint_2", "checkpoint_4", "checkpoint_5", "checkpoint_6"]


def test_a_resume_from_an_earlier_checkpoint_sets_the_later_ones_aside(tmp_path):
    run = tmp_path / "run"
    a, b, c = (_checkpoint(run, f"checkpoint_{u}", u) for u in (2, 4, 6))
    assert later_than(run, a) == [b, c]
    moved = set_aside(later_than(run, a), run, SUPERSEDED)
    assert moved == [run / SUPERSEDED / "checkpoint_4", run / SUPERSEDED / "checkpoint_6"]
    assert _names(run) == ["checkpoint_2"]
    # another run's checkpoint (a --resume-from elsewhere) is not this run's to move
    other = _checkpoint(tmp_path / "other", "checkpoint_8", 8)
    assert set_aside([other], run, TORN) == [] and other.is_dir()
