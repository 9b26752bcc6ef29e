"""Task-count scaling: update time, peak memory and parameter count of MiniLM with 10, 100 and 1000
synthetic classification tasks, for three head designs (model.head_dense: per_task, Muppet's dense
layer per task; shared, one dense layer and a projection per task; model.head: attention, Wolfe &
Lundgaard's low-dimensional attention head per task at d_t = 64). Every configuration trains the
same slots on the same rows (4 slots of 8 rows, 32 tokens, tasks 0-3), one DeepSpeed ZeRO-2 worker.
Each configuration runs in a process of its own (peak memory is that process's), in rounds that
interleave the configurations, so machine load hits all alike; figures are medians over rounds.

    python benchmarks/task_scaling.py --out benchmarks/results/task_scaling.json
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minilm_tasks import MODEL, REPO, write_result  # noqa: E402

TASK_COUNTS = (10, 100, 1000)
DESIGNS = ("per_task", "shared", "attention")
ATTENTION_WIDTH = 64          # Wolfe & Lundgaard's d_t
SLOTS, ROWS, LENGTH = 4, 8, 32


class RandomRows:
    """A task's train split in memory: random token ids of one length, random labels."""

    def __init__(self, rows: int, num_labels: int, seed: int, vocab: int = 30000):
        rng = np.random.default_rng(seed)
        self.input_ids = [[101] + rng.integers(1000, vocab, LENGTH - 2).tolist() + [102] for _ in range(rows)]
        self.labels = rng.integers(0, num_labels, rows)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.full(len(self), LENGTH)

    def take(self, indices) -> dict[str, list]:
        return {"input_ids": [self.input_ids[i] for i in indices], "label": [int(self.labels[i]) for i in indices]}


def _recipe(tasks: int, design: str):
    from prefinetune.recipe.config import recipe_from_dict

    heads = ({"head": "attention", "head_dim": ATTENTION_WIDTH} if design == "attention" else {"head_dense": design})
    return recipe_from_dict({
        "model": {"name_or_path": MODEL, "max_length": LENGTH, **heads},
        "tasks": [{"name": f"t{i}", "label_names": [f"c{k}" for k in range(2 + i % 4)],
                   "splits": {"train": "synthetic"}, "columns": {"text": "text", "label": "label"}}
                  for i in range(tasks)],
        "train": {"updates": 1000, "slots_per_update": SLOTS, "batch_size": ROWS},
        "deepspeed": {"zero_stage": 2}, "scaling": {"num_workers": 1, "use_gpu": False}})


def measure(tasks: int, design: str, updates: int) -> dict:
    """One configuration in this process: seconds per update (median of `updates`, after one warm-up),
    peak resident memory, parameter counts."""
    import torch

    from prefinetune.distributed.engine import build_engine
    from prefinetune.finetune.local import one_process_group
    from prefinetune.model.multitask import build_model
    from prefinetune.run.step import TrainData, run_update
    from prefinetune.sampling.schedule import Slot

    torch.manual_seed(0)
    recipe = _recipe(tasks, design)
    model = build_model(recipe)
    heads = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("backbone."))
    total = sum(p.numel() for p in model.parameters())
    one_process_group()
    engine = build_engine(model, recipe, 1, on_gpu=False)
    splits = {t.name: RandomRows(64, t.num_labels, i) for i, t in enumerate(recipe.tasks[:SLOTS])}
    data = TrainData(splits, recipe.tasks[:SLOTS], pad_id=0)
    ids = {t.name: i for i, t in enumerate(recipe.tasks)}
    slots = [Slot(k, f"t{k}", tuple(range(k * ROWS, (k + 1) * ROWS))) for k in range(SLOTS)]
    times = []
    for u in range(updates + 1):
        start = time.perf_counter()
        run_update(engine, ids, slots, data, torch.device("cpu"), 0, u)
        times.append(time.perf_counter() - start)
    return {"tasks": tasks, "design": design, "update_s": float(np.median(times[1:])),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "head_parameters": heads, "parameters": total}


def _run_one(tasks: int, design: str, updates: int) -> dict:
    cmd = [sys.executable, __file__, "--one", str(tasks), design, "--updates", str(updates)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{tasks} tasks, {design}: exit {out.returncode}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _summary(runs: list[dict]) -> dict:
    """Medians over rounds per configuration, and each one's ratios to 10 tasks of its design."""
    table = {}
    for design in DESIGNS:
        for tasks in TASK_COUNTS:
            mine = [r for r in runs if r["design"] == design and r["tasks"] == tasks]
            table[f"{design}/{tasks}"] = {**mine[0], "update_s": float(np.median([r["update_s"] for r in mine])),
                                          "peak_rss_mib": float(np.median([r["peak_rss_mib"] for r in mine])),
                                          "rounds": len(mine)}
        base = table[f"{design}/{TASK_COUNTS[0]}"]
        for tasks in TASK_COUNTS:
            row = table[f"{design}/{tasks}"]
            row["update_time_vs_10_tasks"] = row["update_s"] / base["update_s"]
            row["head_parameters_vs_10_tasks"] = row["head_parameters"] / base["head_parameters"]
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "task_scaling.json"))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--updates", type=int, default=4, help="timed updates per configuration and round")
    p.add_argument("--one", nargs=2, metavar=("TASKS", "DESIGN"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(int(args.one[0]), args.one[1], args.updates)))
        return 0
    runs = []
    for r in range(args.rounds):
        for tasks in TASK_COUNTS:
            for design in DESIGNS:
                runs.append(_run_one(tasks, design, args.updates))
                x = runs[-1]
                print(f"round {r + 1}: {design:8s} {tasks:5d} tasks: {x['update_s']:.3f} s/update, "
                      f"{x['head_parameters'] / 1e6:8.2f}M head parameters, {x['peak_rss_mib']:.0f} MiB peak",
                      flush=True)
    table = _summary(runs)
    for key, row in table.items():
        print(f"{key:14s} update time x{row['update_time_vs_10_tasks']:.3f} of 10 tasks, head parameters "
              f"x{row['head_parameters_vs_10_tasks']:.1f}")
    write_result(args.out, {"settings": {"model": MODEL, "slots": SLOTS, "rows": ROWS, "length": LENGTH,
                                         "zero_stage": 2, "workers": 1, "device": "cpu", "rounds": args.rounds,
                                         "timed_updates": args.updates,
                                         "what": "median seconds per update (same 4 slots, tasks 0-3), peak RSS "
                                                 "of the process, parameters outside the backbone; design: "
                                                 "per_task, shared (model.head_dense) or attention (model.head: "
                                                 "attention, head_dim 64)"},
                            "results": table})
    return 0


if __name__ == "__main__":
    sys.exit(main())
