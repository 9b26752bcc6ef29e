"""The transfer study: `prefinetune transfer-study` as a script (prefinetune/cli/transfer_study.py).

    python launch/transfer_study.py --data-dir ../shared/data [--recipe R] [--name N] [--low-only | --full-only] \
        [key=value ...]
    python launch/transfer_study.py --data-dir ../shared/data --ablation recipes/transfer_study/ablation.yaml \
        [--arms A B]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without installing (ray job submit)

from prefinetune.cli.transfer_study import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
