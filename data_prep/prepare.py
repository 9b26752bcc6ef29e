"""Prepare a recipe's tasks into tokenized Arrow shards + manifest.json: `prefinetune prepare` as a script.

    python data_prep/prepare.py --recipe recipes/shared_data_cpu.yaml --data-dir ../shared/data
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without installing (ray job submit)

from prefinetune.cli.prepare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
