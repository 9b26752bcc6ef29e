"""`prefinetune transfer-study`: the transfer study (README, "Does pre-finetuning help downstream?"):
pre-finetune MiniLM with a recipe (default recipes/prefinetune_minilm_cpu.yaml), then compare its export
with plain MiniLM on the six-task held-out panel at 10% (10 seeds) and 100% (3 seeds) of their training
rows, paired by seed (prefinetune/finetune/transfer_study.py).

    prefinetune transfer-study --data-dir ../shared/data [--recipe R] [--name N] [--low-only | --full-only]
        [key=value ...]
    prefinetune transfer-study --data-dir ../shared/data --ablation recipes/transfer_study/ablation.yaml [--arms A B]
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["make_parser", "main"]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prefinetune transfer-study", description=__doc__.splitlines()[0].strip("`"))
    p.add_argument("--data-dir", required=True, help="the shared data folder (only read)")
    p.add_argument("--output-dir", default="runs/transfer_study")
    p.add_argument("--recipe", help="the pre-finetuning recipe (default recipes/prefinetune_minilm_cpu.yaml)")
    p.add_argument("--name", help="run.name of the pre-finetuning (a variant of the ablation: its own export)")
    p.add_argument("--low-only", action="store_true", help="only the 10%% panel")
    p.add_argument("--full-only", action="store_true", help="only the 100%% panel")
    p.add_argument("--ablation", help="an ablation plan (recipes/transfer_study/ablation.yaml): every arm "
                   "pre-finetuned, then one panel over all of them")
    p.add_argument("--arms", nargs="+", metavar="ARM", help="with --ablation: only these arms (and the plan's "
                   "reference), a panel of their own; a plan too long for one sitting runs in parts")
    p.add_argument("--no-reuse", action="store_true", help="run every trial, none copied from the other "
                   "panels in --output-dir (by default a trial they finished is copied: same recipe, model, seed)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="pre-finetuning recipe keys, e.g. optim.lr=3e-5")
    return p


def main(argv: list[str] | None = None) -> int:
    from prefinetune.cli.common import input_errors
    from prefinetune.finetune.compare import CompareInterrupted
    from prefinetune.finetune.transfer_study import DEFAULT_RECIPE, run_ablation, run_transfer_study
    from prefinetune.run.console import say
    from prefinetune.run.errors import RunFailed, RunInterrupted

    args = make_parser().parse_args(argv)
    if args.ablation and (args.recipe or args.name or args.overrides or args.low_only or args.full_only):
        say("error: --ablation takes its recipe and arms from the plan file (not --recipe, --name, --low-only, "
            "--full-only or overrides)", sys.stderr)
        return 2
    if args.arms and not args.ablation:
        say("error: --arms chooses arms of an --ablation plan", sys.stderr)
        return 2
    if args.overrides and not args.name:
        say("error: overrides change the pre-finetuning: give the variant a --name (its own run and panels)",
            sys.stderr)
        return 2
    try:
        if args.ablation:
            run_ablation(args.ablation, args.data_dir, args.output_dir, args.arms, not args.no_reuse)
        else:
            run_transfer_study(args.data_dir, args.output_dir, args.recipe or DEFAULT_RECIPE, args.name,
                               args.overrides, args.low_only, not args.no_reuse, args.full_only)
    except input_errors() as err:
        say(f"error: {err}", sys.stderr)
        return 2
    except RunFailed as err:         # a worker stopped the pre-finetuning and said why
        say(f"error: the run stopped: {err}", sys.stderr)
        return 1
    except (RunInterrupted, CompareInterrupted, KeyboardInterrupt) as err:
        where = str(err) or "run the same command again to go on"
        say(f"[study] interrupted: {where} (the same command goes on: exports and finished trials are kept)",
            sys.stderr)
        return 130
    return 0
