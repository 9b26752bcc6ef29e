"""A disk that fills while a checkpoint is written: the run stops with a message that says so and names
the newest whole checkpoint, which is untouched (every byte as written) even with checkpoint.keep=1.

The run folder is a 24 MiB tmpfs mounted in a mount namespace of the test's own (`unshare -rm`, no
privileges needed where user namespaces are allowed): the first checkpoint of a tiny BERT (16 MiB)
fits, the second does not. One real local Ray run, 1 worker.

    python -m pytest tests/test_disk_full.py -q
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REPO  # noqa: E402

from prefinetune.distributed.checkpoint_files import check_files, checkpoint_update
from prefinetune.model.tiny import save_tiny_bert

SCRIPT = """set -e
mount -t tmpfs -o size=24m tmpfs "$1"
rc=0
"$2" -m prefinetune --recipe recipes/local_cpu.yaml --cpu --num-workers 1 --updates 4 --slots 1 \\
  --output-dir "$1" --name full model.name_or_path="$3" data.synthetic_rows=60 model.max_length=24 \\
  train.batch_size=4 checkpoint.every_updates=2 checkpoint.keep=1 eval.every_updates=2 eval.max_rows=8 \\
  2>"$4/stderr.txt" || rc=$?
cp -a "$1/full" "$4/copy"       # the tmpfs goes with the namespace
exit $rc
"""


def _can_mount_tmpfs(tmp_path: Path) -> bool:
    (tmp_path / "probe").mkdir()
    probe = subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "tmpfs", str(tmp_path / "probe")],
                           capture_output=True)
    return shutil.which("unshare") is not None and probe.returncode == 0


@pytest.mark.slow
def test_a_full_disk_stops_the_run_clearly_and_leaves_the_last_checkpoint_whole(tmp_path):
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("this machine allows no user namespace (unshare -rm) to mount a small tmpfs in")
    bert = save_tiny_bert(tmp_path / "bert")
    small = tmp_path / "small"
    small.mkdir()
    out = subprocess.run(["unshare", "-rm", "bash", "-c", SCRIPT, "disk-full", str(small), sys.executable,
                          str(bert), str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert out.returncode == 1, out.stdout[-3000:] + stderr[-3000:]
    said = [line for line in stderr.splitlines() if line.startswith("error: ")]    # Ray's worker logs may follow
    assert len(said) == 1, stderr[-3000:]
    match = re.fullmatch(r"error: the run stopped: (.*No space left on device.*)\. The newest whole checkpoint, "
                         r"untouched, is (\S+) \(update 2\): resume with --resume-from \2", said[0])
    assert match, said[0]
    newest = tmp_path / "copy" / Path(match.group(2)).relative_to(small / "full")
    assert checkpoint_update(newest) == 2
    assert check_files(newest) is None        # every file there, each of the size and sha256 written
    later = [p for p in newest.parent.iterdir() if p.is_dir() and p != newest]
    assert all(check_files(p) is not None for p in later), later      # the cut-short copy is known as torn
