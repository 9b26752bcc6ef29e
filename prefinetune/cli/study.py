"""`prefinetune study`: the held-out study (README, "Does pre-finetuning help downstream?"): pre-finetune
MiniLM on 19 shared tasks (and 4 and 8 for the task-count sweep), then compare its export with plain
MiniLM on three held-out tasks at 10% and 100% of their training rows on Ray Tune
(prefinetune/finetune/study.py).

    prefinetune study --data-dir ../shared/data [--output-dir runs/heldout_study] [--seeds 3]
"""
from __future__ import annotations

import argparse

__all__ = ["make_parser", "main"]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prefinetune study", description=__doc__.splitlines()[0].strip("`"))
    p.add_argument("--data-dir", required=True, help="the shared data folder (only read)")
    p.add_argument("--output-dir", default="runs/heldout_study")
    p.add_argument("--seeds", type=int, default=3)
    return p


def main(argv: list[str] | None = None) -> int:
    from prefinetune.finetune.study import run_study

    args = make_parser().parse_args(argv)
    run_study(args.data_dir, args.output_dir, args.seeds)
    return 0
