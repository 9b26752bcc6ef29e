"""Export a DeepSpeed checkpoint of a run as a Hugging Face folder (and push it): `prefinetune export` as a
script.

    python launch/export.py --recipe recipes/local_cpu.yaml --checkpoint DIR --out DIR [--push-to-hub REPO_ID]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without installing (ray job submit)

from prefinetune.cli.export import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
