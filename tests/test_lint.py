"""The code passes the project's linter (ruff; rules in pyproject.toml), so the suite fails on lint too.

    ruff check .
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    out = subprocess.run([ruff, "check", "--output-format", "concise", "."], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_tracked_python_file_is_linted():
    """No folder is skipped by a default exclusion (ruff skips folders named dist or build unless told)."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    shown = subprocess.run([ruff, "check", "--show-files", "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    linted = {str(Path(line.strip()).resolve().relative_to(REPO)) for line in shown.stdout.splitlines()
              if line.strip().endswith(".py")}
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True).stdout.split()
    assert tracked and set(tracked) - linted == set()
