"""The device check (benchmarks/gpu_check.py) says why and exits 2 on a machine without CUDA, before any
work; on a GPU machine it is the one command to run (README "On a cluster").

    python -m pytest tests/test_gpu_check.py -q
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here: the check would run for real")
def test_without_cuda_it_exits_2_with_the_reason(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--out", str(out),
                           "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "gpu_check.py: cannot run here: no CUDA device is visible here" in done.stderr
    assert not out.exists() and not (tmp_path / "work").exists()
