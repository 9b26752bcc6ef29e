"""The cost of MT-Uncertainty sampling: seconds per update with the natural schedule and with
MT-Uncertainty (every task a candidate, and `candidate_tasks` of them), measured side by side in one run
(interleaved, same updates), reported as ratios. CPU figures are ratios only.

    python benchmarks/mt_uncertainty_cost.py --data-dir ../shared/data --out benchmarks/results/mt_uncertainty_cost.json

One process runs updates of `--slots` slots on MiniLM (max_length 128, 16 rows a slot) over four real
tasks of two families. An update is its planning (MT-Uncertainty: one no-grad forward per candidate) and
forward + loss + backward of each slot it planned. Planning and training are timed apart, so the
scoring overhead can be read without the task mix the two schedules happen to pick.
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
from prefinetune.run.step import slot_loss  # noqa: E402
from prefinetune.sampling.schedule import plan_update  # noqa: E402
from prefinetune.sampling.uncertainty import UncertaintySampler  # noqa: E402

TASKS = ["rte", "sst2", "cola", "copa"]
CPU = torch.device("cpu")


def _planner(recipe, data, ids, slots: int, k):
    """plan(model, update_index) -> the update's slots, for k = None (natural), 'all' or a number of candidates."""
    if k is None:
        return lambda model, update_index: plan_update(recipe.sampling, 0, update_index, 10**6, slots, data.sizes, 16)
    sampler = UncertaintySampler(ids, None if k == "all" else k)
    return lambda model, update_index: sampler.plan(model, data, ids, 0, update_index, slots, 0, 1, CPU, 16)[0]


def _time_update(model, plan, data, ids, recipe, update_index: int) -> tuple[float, float]:
    """(planning seconds, training seconds) of one update."""
    start = time.perf_counter()
    slots = plan(model, update_index)
    planned = time.perf_counter()
    for slot in slots:
        loss, _ = slot_loss(model, ids[slot.task], recipe.task(slot.task), data.batch(slot, CPU))
        loss.backward()
    model.zero_grad(set_to_none=True)
    return planned - start, time.perf_counter() - planned


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "mt_uncertainty_cost.json"))
    p.add_argument("--work", default="/tmp/prefinetune_mtu_bench")
    p.add_argument("--slots", type=int, default=4, help="slots per update")
    p.add_argument("--candidates", type=int, default=2, help="candidate_tasks of the limited variant")
    p.add_argument("--updates", type=int, default=8, help="timed updates per method")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    recipe, _, data = prepared_tasks(args.data_dir, Path(args.work), TASKS, "mtu_bench")
    model = build_model(recipe).train()
    ids = {t.name: model.task_id(t.name) for t in recipe.tasks}
    methods = {"natural": None, "mt_uncertainty": "all", f"mt_uncertainty_k{args.candidates}": args.candidates}
    plans = {name: _planner(recipe, data, ids, args.slots, k) for name, k in methods.items()}
    times = {name: [] for name in methods}
    for update_index in range(args.updates + 1):                # update 0 warms up; interleaved after it
        for name, plan in plans.items():
            measured = _time_update(model, plan, data, ids, recipe, update_index)
            if update_index:
                times[name].append(measured)
    results = {}
    for name, pairs in times.items():
        plan_s, train_s = (float(np.median(col)) for col in zip(*pairs))
        total = float(np.median([a + b for a, b in pairs]))
        results[name] = {"median_plan_s": plan_s, "median_train_s": train_s, "median_update_s": total}
    base = results["natural"]
    for name, r in results.items():
        r["update_ratio_to_natural"] = r["median_update_s"] / base["median_update_s"]
        r["plan_over_natural_train"] = r["median_plan_s"] / base["median_train_s"]
        print(f"{name:20s} update / natural = {r['update_ratio_to_natural']:.2f}   "
              f"planning / natural training = {r['plan_over_natural_train']:.2f}")
    out = {"settings": {"model": MODEL, "tasks": TASKS, "slots": args.slots, "batch_rows": 16,
                        "max_length": 128, "updates": args.updates, "device": "cpu",
                        "torch_threads": torch.get_num_threads(),
                        "what": "one update: planning + forward/loss/backward of each slot, median seconds, "
                                "methods interleaved update by update"},
           "methods": results}
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
