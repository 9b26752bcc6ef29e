"""Torn-checkpoint detection on folders made here: every rank's file list must be there and every file
must match it; the newest whole checkpoint of an earlier update stands in, or an error lists each one.

    python -m pytest tests/test_checkpoint_files.py -q
"""
from __future__ import annotations

import pytest

from prefinetune.distributed.checkpoint_files import (
    TornCheckpointError,
    check_files,
    newest_in,
    newest_whole,
    write_file_list,
)


def _checkpoint(root, name: str, update: int, world: int = 2):
    folder = root / name
    for rank in range(world):
        part = folder / f"update-{update:07d}"
        part.mkdir(parents=True, exist_ok=True)
        (part / f"zero_pp_rank_{rank}_optim_states.pt").write_bytes(bytes(range(256)) * (rank + 1))
        if rank == 0:
            (folder / "latest").write_text(f"update-{update:07d}")
        write_file_list(folder, rank, world)
    return folder


def test_a_whole_checkpoint_passes_and_each_tear_is_named(tmp_path):
    folder = _checkpoint(tmp_path, "a", 4)
    assert check_files(folder) is None
    optim = folder / "update-0000004" / "zero_pp_rank_1_optim_states.pt"
    optim.write_bytes(optim.read_bytes()[:100])
    assert check_files(folder) == f"{optim} (rank 1) has 100 bytes, 512 were written"
    optim.write_bytes(bytes(512))
    assert check_files(folder) == f"{optim} (rank 1) differs from what was written (sha256)"
    optim.unlink()
    assert check_files(folder) == f"{optim} (rank 1) is missing"
    (folder / "files-rank-1.json").unlink()
    assert check_files(folder) == "the file lists of ranks [1] of 2 are missing"
    (folder / "files-rank-0.json").write_text('{"rank": 0, "wor')      # a list cut short
    assert check_files(folder) == f"its file list {folder / 'files-rank-0.json'} cannot be read (cut short?)"
    (folder / "files-rank-0.json").unlink()      # a copy cut short before the lists
    assert check_files(folder) == "it has no file lists (files-rank-*.json): its copy to storage did not finish"


def test_the_newest_whole_earlier_checkpoint_stands_in(tmp_path):
    old, mid, new = (_checkpoint(tmp_path, f"checkpoint_{u}", u) for u in (2, 4, 6))
    assert newest_whole(new) == (new, None, ())
    (mid / "update-0000004" / "zero_pp_rank_0_optim_states.pt").write_bytes(b"")
    (new / "files-rank-0.json").unlink()
    folder, warning, torn = newest_whole(new)
    assert folder == old and warning.startswith(f"checkpoint {new} is torn (the file lists of ranks [0]")
    assert warning.endswith(f"resuming from the previous whole one, {old} (update 2)")
    assert torn == (new, mid)          # every torn one passed over, to be set aside
    (tmp_path / "torn").mkdir()
    new.rename(tmp_path / "torn" / new.name)   # the one asked for, set aside earlier: the newest whole one beside it
    assert newest_whole(new) == (old, f"checkpoint {new} is torn ({new}/latest is missing); resuming from the "
                                      f"previous whole one, {old} (update 2)", (mid,))
    (tmp_path / "torn" / new.name).rename(new)
    (old / "latest").unlink()
    with pytest.raises(TornCheckpointError, match=r"no whole checkpoint to resume from:\n  .*checkpoint_6.*\n  "
                                                  r".*checkpoint_4.*has 0 bytes"):
        newest_whole(new)


def test_the_newest_whole_checkpoint_of_a_run_folder_is_found(tmp_path):
    assert newest_in(tmp_path / "nothing-here") is None
    old, new = (_checkpoint(tmp_path, f"checkpoint_{u}", u) for u in (2, 4))
    (tmp_path / "checkpoint_manager_snapshot.json").write_text("{}")
    assert newest_in(tmp_path) == new
    (new / "files-rank-1.json").unlink()
    assert newest_in(tmp_path) == old
    (old / "latest").unlink()
    assert newest_in(tmp_path) is None
