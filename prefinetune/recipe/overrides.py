"""Command-line overrides of a recipe: `section.key=value` (value parsed as YAML) set into the recipe's
plain dict before it is validated; list items by index (`tasks.0.label_names=[a,b]`).

    apply_overrides({"train": {"updates": 10}}, ["train.updates=200"])   # {"train": {"updates": 200}}
"""
from __future__ import annotations

from typing import Any

import yaml

from prefinetune.recipe.task_config import RecipeError

__all__ = ["apply_overrides", "set_values", "flat_keys"]


def _set_dotted(data: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise RecipeError(f"override {source!r}: key '{where}': no list item {part}")
            part = int(part)
        elif not isinstance(node, dict):
            raise RecipeError(f"override {source!r}: key '{where}': parent is not a section")
        if last:
            node[part] = value
        else:
            if isinstance(node, dict) and part not in node:
                node[part] = {}
            node = node[part]


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides (value parsed as YAML) to a recipe dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        _set_dotted(data, key.strip(), yaml.safe_load(raw) if raw.strip() else None, item)
    return data


def set_values(data: dict[str, Any], values: dict[str, Any], source: str = "grid") -> dict[str, Any]:
    """Set `{dotted.key: value}` (values as they are, not parsed) into a recipe dict, in place."""
    for key, value in values.items():
        _set_dotted(data, key, value, f"{source} {key}")
    return data


def flat_keys(data, prefix: str = "") -> dict:
    """A nested dict (a dumped recipe) as {dotted.key: value}; lists stay values."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            out.update(flat_keys(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}
