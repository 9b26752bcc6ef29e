"""Muppet-style pre-finetuning as a Ray job: 64 GPU workers by default, on the cluster it finds.

    ray start --head                       # or an existing cluster; RAY_ADDRESS tells the job where
    ray job submit --working-dir . -- python launch/muppet_64gpu.py --recipe recipes/cluster_glue_roberta_base.yaml
    # overrides: --num-workers 8 --cpu --updates 1000 --output-dir /shared/runs --data-dir /shared/data optim.lr=2e-5

On a multi-node cluster, run.output_dir and data.shards_dir must be on storage every node sees.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a `--working-dir` copy too

from prefinetune.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(description="Muppet pre-finetuning on a Ray cluster (64 GPU workers by default)"))
