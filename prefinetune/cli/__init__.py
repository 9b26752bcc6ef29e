"""The command line shared by the launch scripts: a recipe, a few flags, and key=value overrides.

    python launch/local_cpu.py                                   # embedded default: offline, 2 CPU workers
    python launch/local_cpu.py --recipe recipes/shared_data_cpu.yaml --data-dir ../shared/data
    python launch/muppet_64gpu.py --recipe recipes/X.yaml --num-workers 8 train.updates=1000
    prefinetune finetune --recipe recipes/finetune/rte.yaml --data-dir ../shared/data --model runs/X/export
    prefinetune compare --recipe recipes/finetune/rte.yaml --models BASE CANDIDATE --fractions 0.1,1.0 --seeds 3

`prefinetune` alone (or `prefinetune pretrain`) pre-finetunes; `finetune` and `compare`: prefinetune/finetune/.

Flags are shorthands for overrides; any recipe key can be overridden as `section.key=value`
(value parsed as YAML, e.g. `tasks.0.label_names=[no,yes]`).
"""
from __future__ import annotations

import argparse
import sys

from prefinetune.cli.common import flag_overrides, input_errors, make_parser
from prefinetune.recipe.config import RecipeError, load_recipe
from prefinetune.run.errors import RunFailed

__all__ = ["main", "finetune_main"]

def main(argv: list[str] | None = None, default_recipe: str | None = None,
         description: str = "prefinetune: multi-task pre-finetuning on Ray + DeepSpeed") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("finetune", "compare"):
        return _subcommand(argv[0], argv[1:])
    if argv and argv[0] == "pretrain":
        argv = argv[1:]
    args = make_parser(default_recipe, description).parse_args(argv)
    return _run(args)


def finetune_main(argv: list[str] | None = None) -> int:
    """`prefinetune finetune`: one downstream task from a plain model or an export (recipes/finetune/)."""
    args = make_parser(None, "prefinetune finetune: fine-tune a model or a prefinetune export on one task "
                       "(a recipe with a finetune: section, e.g. recipes/finetune/rte.yaml)").parse_args(argv)
    return _run(args, needs_finetune=True)


def _subcommand(name: str, argv: list[str]) -> int:
    if name == "finetune":
        return finetune_main(argv)
    from prefinetune.cli.compare import compare_main

    return compare_main(argv)


def _run(args: argparse.Namespace, needs_finetune: bool = False) -> int:
    from prefinetune.run.driver import prepare_data, resolve_paths, run

    try:
        recipe = load_recipe(args.recipe, flag_overrides(args))
        if needs_finetune and recipe.finetune is None:
            raise RecipeError(f"recipe {args.recipe} has no finetune: section; fine-tuning recipes are in "
                              "recipes/finetune/ (pre-finetuning: prefinetune --recipe ...)")
        if args.prepare_only:
            prepare_data(resolve_paths(recipe))
        else:
            run(recipe, args.resume_from, source=args.recipe)
    except input_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunFailed as err:         # a worker stopped the run and said why (non-finite loss, disk full)
        print(f"error: the run stopped: {err}", file=sys.stderr)
        return 1
    return 0
