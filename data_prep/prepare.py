"""Prepare a recipe's tasks into tokenized Arrow shards + manifest.json (see prefinetune/data/prepare.py).

    python data_prep/prepare.py --recipe recipes/shared_data_cpu.yaml --data-dir ../shared/data
    python data_prep/prepare.py --recipe recipes/shared_data_cpu.yaml model.max_length=128 data.on_bad_row=quarantine
    python data_prep/prepare.py --recipe recipes/shared_data_no_summ_cpu.yaml --data-dir ../shared/data  # 4 families

Overrides are `key.sub=value` (YAML values), as for every recipe. A second run with the same inputs
reuses the finished shards and says so. The shards go to data.shards_dir, or output_dir/name/shards.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from prefinetune.cli.common import data_dir_overrides, input_errors  # noqa: E402
from prefinetune.data.prepare import DEFAULT_SHARD_ROWS, prepare_tasks  # noqa: E402
from prefinetune.model.source import load_tokenizer  # noqa: E402
from prefinetune.recipe.config import load_recipe  # noqa: E402

__all__ = ["make_parser", "main"]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    for name, task in manifest["tasks"].items():
        state = "reused" if name in manifest["last_run"]["reused"] else "prepared"
        rows = ", ".join(f"{split} {_rows(s)}" for split, s in task["splits"].items())
        print(f"{name:20s} {state:8s} {rows}")
    print(f"shards: {recipe.shards_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
