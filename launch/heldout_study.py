"""The held-out study: `prefinetune study` as a script (prefinetune/cli/study.py).

    python launch/heldout_study.py --data-dir ../shared/data [--output-dir runs/heldout_study] [--seeds 3]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without installing (ray job submit)

from prefinetune.cli.study import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
