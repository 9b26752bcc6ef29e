"""Fine-tune one downstream task on Ray (one worker or many, DeepSpeed as in pre-finetuning), from a
Hugging Face model or a prefinetune export, whose head for the task is reused where it has one.

    python launch/finetune.py --recipe recipes/finetune/rte.yaml --data-dir ../shared/data
    python launch/finetune.py --recipe recipes/finetune/rte.yaml --data-dir ../shared/data --model runs/X/export
    ray job submit --working-dir . -- python launch/finetune.py --recipe R --gpu --num-workers 4

The same as `prefinetune finetune ...`; what it writes: README.md, "Fine-tuning".
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefinetune.cli import finetune_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(finetune_main(sys.argv[1:]))
