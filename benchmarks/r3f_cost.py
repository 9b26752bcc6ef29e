"""The cost of R3F: time of one slot's forward + backward with and without the penalty, measured side by
side in one run (interleaved, same batches), reported as a ratio. CPU figures are ratios only.

    python benchmarks/r3f_cost.py --data-dir ../shared/data --out benchmarks/results/r3f_cost.json
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minilm_tasks import MODEL, bench_args, prepared_tasks, time_slot, write_result  # noqa: E402

from prefinetune.model.multitask import build_model  # noqa: E402
from prefinetune.recipe.config import R3FSection  # noqa: E402
from prefinetune.sampling.schedule import Slot  # noqa: E402

TASKS = ["rte", "sst2", "copa", "stsb"]


def main(argv=None) -> int:
    args = bench_args(__doc__, "r3f_cost", 12, argv)
    torch.manual_seed(0)
    recipe, _, data = prepared_tasks(args.data_dir, Path(args.work), TASKS, "r3f_bench")
    on, off = R3FSection(enabled=True, sigma=1e-5), R3FSection(enabled=False)
    model = build_model(recipe).train()
    results = {}
    for i, task in enumerate(recipe.tasks):
        batch = data.batch(Slot(0, task.name, tuple(range(16))), torch.device("cpu"))
        time_slot(model, i, task, batch, off), time_slot(model, i, task, batch, on)   # warm-up
        times = {"without": [], "with": []}
        for _ in range(args.repeats):          # interleaved: machine load hits both equally
            times["without"].append(time_slot(model, i, task, batch, off))
            times["with"].append(time_slot(model, i, task, batch, on))
        med = {k: float(np.median(v)) for k, v in times.items()}
        results[task.name] = {"family": task.family, "median_s_without": med["without"],
                              "median_s_with": med["with"], "ratio": med["with"] / med["without"]}
        print(f"{task.name:8s} {task.family:16s} R3F / plain = {results[task.name]['ratio']:.2f}")
    out = {"settings": {"model": MODEL, "batch_rows": 16, "max_length": 128, "repeats": args.repeats,
                        "device": "cpu", "torch_threads": torch.get_num_threads(),
                        "what": "one slot: forward + loss + backward, median seconds, interleaved"},
           "tasks": results}
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
