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


def test_random_weights_copy_keeps_the_shapes_and_tokenizer_with_new_values(tmp_path):
    """--random-weights: the model the check builds where the pretrained weights cannot travel."""
    from transformers import AutoModel, AutoTokenizer

    from prefinetune.model.source import NO_HUB_KERNELS
    from prefinetune.model.tiny import save_tiny_bert

    sys.path.insert(0, str(REPO / "benchmarks"))
    from gpu_check import random_weights_copy

    source = save_tiny_bert(tmp_path / "bert", seed=7)          # the copy draws with seed 0: other values
    folder = Path(random_weights_copy(str(source), tmp_path / "random"))
    original = AutoModel.from_pretrained(source, **NO_HUB_KERNELS).state_dict()
    copy = AutoModel.from_pretrained(folder, **NO_HUB_KERNELS).state_dict()
    assert (folder / "model.safetensors").is_file()
    assert {k: v.shape for k, v in copy.items()} == {k: v.shape for k, v in original.items()}
    assert not torch.equal(copy["embeddings.word_embeddings.weight"], original["embeddings.word_embeddings.weight"])
    text = "a test sentence"
    assert AutoTokenizer.from_pretrained(folder)(text) == AutoTokenizer.from_pretrained(source)(text)
