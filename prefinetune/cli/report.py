"""`prefinetune report RUN_DIR`: what a finished run says about its tasks, in RUN_DIR/report/: the task
covariance similarity of its export on each task's eval split (JSON and a heatmap; Wu, Zhang & Ré 2020),
its loss curves and its task mix.

    prefinetune report runs/local_cpu [--split dev] [--max-rows 256] [--rank 8] [--data-dir DIR]
"""
from __future__ import annotations

import argparse
import sys

from prefinetune.cli.common import data_dir_overrides, input_errors
from prefinetune.run.console import say

__all__ = ["make_parser", "main"]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prefinetune report", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a finished run's folder (recipe.json, export/, metrics.jsonl)")
    p.add_argument("--split", help="the split whose rows are represented (default: the run's eval.split)")
    p.add_argument("--max-rows", type=int, default=256, help="rows per task (default 256; 0: all)")
    p.add_argument("--rank", type=int, default=8, help="principal directions per task (default 8)")
    p.add_argument("--data-dir", help="data.root, where the run's task files are now")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from prefinetune.report.build import write_report

    try:
        out, notes = write_report(args.run_dir, args.split, args.max_rows or None, args.rank,
                                  data_dir_overrides(args.data_dir), args.device)
    except (*input_errors(), ValueError, FileNotFoundError) as err:
        say(f"error: {err}", sys.stderr)
        return 2
    for note in notes:
        say(f"[prefinetune] report: {note}")
    say(f"[prefinetune] report: {out}")
    return 0
