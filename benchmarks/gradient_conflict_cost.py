"""The cost of sampling gradient conflict (diagnostics.every): the time of one slot's forward + backward
with the probe's hooks on against off, MiniLM on real rows, measured side by side in one run (interleaved,
same batches), reported as ratios, for two sample sizes. Off, nothing is hooked: a sampled update costs
this ratio, the others nothing, so `every: N` costs about (ratio - 1) / N. CPU figures are ratios only.

    python benchmarks/gradient_conflict_cost.py --data-dir ../shared/data      # writes benchmarks/results/
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minilm_tasks import MODEL, REPO, prepared_tasks, write_result  # noqa: E402

from prefinetune.model.multitask import build_model  # noqa: E402
from prefinetune.run.gradient_conflict import GradientProbe  # noqa: E402
from prefinetune.run.step import slot_loss  # noqa: E402
from prefinetune.sampling.schedule import Slot  # noqa: E402

TASKS = ["rte", "sst2", "copa"]
SAMPLES = (16384, 1_000_000)


def _time_slot(model, task_id, task, batch, probe=None) -> float:
    start = time.perf_counter()
    loss, _ = slot_loss(model, task_id, task, batch)
    if probe is None:
        loss.backward()
    else:
        with probe.sampling():
            probe.start()
            loss.backward()
            probe.stop(task.name)
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gradient_conflict_cost.json"))
    p.add_argument("--work", default="/tmp/prefinetune_conflict_bench")
    p.add_argument("--repeats", type=int, default=8)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    recipe, _, data = prepared_tasks(args.data_dir, Path(args.work), TASKS, "conflict_bench")
    model = build_model(recipe).train()
    probes = {n: GradientProbe(model, n, seed=0) for n in SAMPLES}
    times = {"off": [], **{str(n): [] for n in SAMPLES}}
    for repeat in range(args.repeats + 1):
        for i, task in enumerate(recipe.tasks):
            batch = data.batch(Slot(0, task.name, tuple(range(16))), torch.device("cpu"))
            row = {"off": _time_slot(model, i, task, batch)}
            row.update({str(n): _time_slot(model, i, task, batch, probe) for n, probe in probes.items()})
            if repeat:                                   # the first round warms up
                for key, value in row.items():
                    times[key].append(value)
    off = np.median(times["off"])
    result = {"what": "one slot's forward + backward (MiniLM, 16 rows, max_length 128) with the gradient-conflict "
                      "probe's hooks on, over off; medians of interleaved runs",
              "model": MODEL, "tasks": TASKS, "repeats": args.repeats, "device": "cpu",
              "off_median_s": float(off),
              "ratio": {f"{n} coordinates": float(np.median(times[str(n)]) / off) for n in SAMPLES},
              "backbone_coordinates_sampled": {str(n): probe.size for n, probe in probes.items()}}
    write_result(args.out, result)
    print(result["ratio"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
