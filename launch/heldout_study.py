"""The held-out study (README, "Does pre-finetuning help downstream?"): pre-finetune MiniLM on 19 shared
tasks (and 4 and 8 for the task-count sweep), then compare its export with plain MiniLM on three
held-out tasks at 10% and 100% of their training rows, 3 seeds, on Ray Tune (prefinetune/finetune/study.py).

    python launch/heldout_study.py --data-dir ../shared/data [--output-dir runs/heldout_study] [--seeds 3]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefinetune.finetune.study import run_study  # noqa: E402

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="the shared data folder (only read)")
    p.add_argument("--output-dir", default="runs/heldout_study")
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    run_study(args.data_dir, args.output_dir, args.seeds)
