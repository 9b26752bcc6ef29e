"""writable_folder under concurrency: runs that check one folder at the same moment (two recipes
preparing into one shards folder, two jobs on one output root) must all pass the check.

    python -m pytest tests/data/test_folders.py -q
"""
from __future__ import annotations

import threading

from prefinetune.data.folders import writable_folder


def test_many_checks_of_one_folder_at_once_all_pass(tmp_path):
    folder = tmp_path / "shards"
    errors = []
    start = threading.Barrier(8)

    def check():
        start.wait()
        for _ in range(200):
            try:
                writable_folder(folder, "data.shards_dir")
            except Exception as err:      # noqa: BLE001 - reported by the assertion below
                errors.append(err)

    threads = [threading.Thread(target=check) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert list(folder.iterdir()) == [], "a probe file was left behind"
