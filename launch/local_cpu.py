"""The main job on one machine: a local Ray started in-process, 2 CPU workers, DeepSpeed ZeRO-2 over
gloo, all-MiniLM-L6-v2 (shipped in a PyPI wheel), and an offline synthetic suite of classification
tasks that data_prep writes: no network and no external data needed.

    python launch/local_cpu.py                                  # the embedded default recipe
    python launch/local_cpu.py --real-data ../shared/data       # same job on real GLUE/SuperGLUE files
    python launch/local_cpu.py --updates 50 optim.lr=5e-5       # any override
"""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prefinetune.cli import main  # noqa: E402

DEFAULT = REPO / "recipes" / "local_cpu.yaml"
REAL_DATA = REPO / "recipes" / "shared_data_cpu.yaml"


def _argv(argv: list[str]) -> list[str]:
    """`--real-data DIR` is `--recipe recipes/shared_data_cpu.yaml --data-dir DIR`."""
    if "--real-data" not in argv:
        return argv
    i = argv.index("--real-data")
    if i + 1 >= len(argv):
        sys.exit("error: --real-data needs a folder, e.g. --real-data ../shared/data")
    return argv[:i] + ["--recipe", str(REAL_DATA), "--data-dir", argv[i + 1]] + argv[i + 2:]


if __name__ == "__main__":
    sys.exit(main(_argv(sys.argv[1:]), default_recipe=str(DEFAULT),
                  description="prefinetune on this machine: local Ray, 2 CPU workers, offline data"))
