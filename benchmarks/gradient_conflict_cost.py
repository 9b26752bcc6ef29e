"""The cost of sampling gradient conflict (diagnostics.every): the time of one slot's forward + backward
with the probe's hooks on against off, MiniLM on real rows, measured side by side in one run (interleaved,
same batches), reported as ratios, for two sample sizes. Off, nothing is hooked: a sampled update costs
this ratio, the others nothing, so `every: N` costs about (ratio - 1) / N. CPU figures are ratios only.

    python benchmarks/gradient_conflict_cost.py --data-dir ../shared/data      # writes benchmarks/results/
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minilm_tasks import MODEL, bench_args, prepared_tasks, time_slot, write_result  # noqa: E402

from prefinetune.model.multitask import build_model  # noqa: E402
from prefinetune.run.gradient_conflict import GradientProbe  # noqa: E402
from prefinetune.sampling.schedule import Slot  # noqa: E402

TASKS = ["rte", "sst2", "copa"]
SAMPLES = (16384, 1_000_000)


def _probed(probe: GradientProbe, task: str):
    """A backward with the probe's hooks on, as a sampled update runs it."""
    def backward(loss) -> None:
        with probe.sampling():
            probe.start()
            loss.backward()
            probe.stop(task)
    return backward


def main(argv=None) -> int:
    args = bench_args(__doc__, "gradient_conflict_cost", 8, argv)
    torch.manual_seed(0)
    recipe, _, data = prepared_tasks(args.data_dir, Path(args.work), TASKS, "conflict_bench")
    model = build_model(recipe).train()
    probes = {n: GradientProbe(model, n, seed=0) for n in SAMPLES}
    times = {"off": [], **{str(n): [] for n in SAMPLES}}
    for repeat in range(args.repeats + 1):
        for i, task in enumerate(recipe.tasks):
            batch = data.batch(Slot(0, task.name, tuple(range(16))), torch.device("cpu"))
            row = {"off": time_slot(model, i, task, batch)}
            row.update({str(n): time_slot(model, i, task, batch, backward=_probed(probe, task.name))
                        for n, probe in probes.items()})
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
