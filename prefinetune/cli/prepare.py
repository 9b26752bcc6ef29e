"""`prefinetune prepare`: a recipe's tasks into tokenized Arrow shards + manifest.json, without training
(prefinetune/data/prepare.py).

    prefinetune prepare --recipe recipes/shared_data_cpu.yaml --data-dir ../shared/data
    prefinetune prepare --recipe recipes/shared_data_cpu.yaml model.max_length=128 data.on_bad_row=quarantine

Overrides are `key.sub=value` (YAML values), as for every recipe. A second run with the same inputs
reuses the finished shards and says so. The shards go to data.shards_dir, or output_dir/name/shards.
"""
from __future__ import annotations

import argparse
import sys

from prefinetune.cli.common import data_dir_overrides, input_errors
from prefinetune.data.prepare import DEFAULT_SHARD_ROWS, prepare_tasks
from prefinetune.model.source import load_tokenizer
from prefinetune.recipe.config import load_recipe

__all__ = ["make_parser", "main"]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prefinetune prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True, help="recipe YAML")
    parser.add_argument("--data-dir", help="data.root: the folder task files are read from (never written to; "
                        "turns data.synthetic off)")
    parser.add_argument("--shard-rows", type=int, default=DEFAULT_SHARD_ROWS, help="rows per Arrow shard")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, key.sub=value")
    return parser


def _rows(split: dict) -> str:
    """Shard rows of a split, and the records they came from where these differ (span windows)."""
    records = split.get("records", split["rows"])
    return f"{split['rows']}" + (f" ({records} records)" if records != split["rows"] else "")


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_intermixed_args(argv)
    try:
        recipe = load_recipe(args.recipe, data_dir_overrides(args.data_dir) + args.overrides)
        model = recipe.model
        tokenizer = load_tokenizer(model.name_or_path, model.revision, model.trust_remote_code)
        manifest = prepare_tasks(recipe, tokenizer, model.name_or_path, progress=not args.quiet,
                                 shard_rows=args.shard_rows)
    except input_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name in (t.name for t in recipe.tasks):      # the manifest also keeps other recipes' tasks
        task = manifest["tasks"][name]
        state = "reused" if name in manifest["last_run"]["reused"] else "prepared"
        rows = ", ".join(f"{split} {_rows(s)}" for split, s in task["splits"].items())
        print(f"{name:20s} {state:8s} {rows}")
    print(f"shards: {recipe.shards_path}")
    return 0
