"""Export size and time with the task count: MiniLM with 6 and 45 classification tasks (random heads),
exported with per-task folders that share one backbone file (the default) against the layout before it
(each folder its own full copy, the same export with the sharing step turned off), and with no per-task
folders (export.task_folders: none). Size is bytes on disk counted once per file (hard links once), as
`du` counts them; each layout is exported `--rounds` times in turn, figures are medians.

    python benchmarks/export_size.py --out benchmarks/results/export_size.json
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minilm_tasks import MODEL, write_result  # noqa: E402

TASK_COUNTS = (6, 45)
LAYOUTS = ("shared_backbone", "copies", "no_task_folders")


def _recipe(tasks: int, task_folders: str):
    from prefinetune.recipe.config import recipe_from_dict

    return recipe_from_dict({
        "model": {"name_or_path": MODEL, "max_length": 128},
        "tasks": [{"name": f"t{i}", "label_names": [f"c{k}" for k in range(2 + i % 4)],
                   "splits": {"train": "synthetic"}, "columns": {"text": "text", "label": "label"}}
                  for i in range(tasks)],
        "train": {"updates": 1, "slots_per_update": 1, "batch_size": 1},
        "scaling": {"num_workers": 1, "use_gpu": False},
        "export": {"task_folders": task_folders}})


def disk_bytes(folder: Path) -> int:
    """Bytes of the files under `folder`, each inode once (a hard-linked file counts once)."""
    seen, total = set(), 0
    for path in Path(folder).rglob("*"):
        if path.is_file():
            stat = path.stat()
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_size
    return total


def export_once(model, tokenizer, recipe, layout: str, out: Path) -> float:
    from prefinetune.export import export_model

    sharing = mock.patch("prefinetune.export.folder.share_backbone", lambda folder, prefix, shared: shared) \
        if layout == "copies" else contextlib.nullcontext()
    with sharing:
        start = time.perf_counter()
        export_model(model, tokenizer, out, recipe)
        return time.perf_counter() - start


def measure(rounds: int) -> list[dict]:
    import torch
    from transformers.utils import logging as transformers_logging

    from prefinetune.model.multitask import build_model
    from prefinetune.model.source import load_tokenizer

    transformers_logging.disable_progress_bar()      # "Writing model shards" per folder
    tokenizer, rows = load_tokenizer(MODEL), []
    for tasks in TASK_COUNTS:
        torch.manual_seed(0)
        model = build_model(_recipe(tasks, "all")).eval()
        seconds = {layout: [] for layout in LAYOUTS}
        sizes = {}
        with tempfile.TemporaryDirectory(prefix="export-size-") as work:
            for _ in range(rounds):
                for layout in LAYOUTS:
                    recipe = _recipe(tasks, "none" if layout == "no_task_folders" else "all")
                    out = Path(work) / layout
                    seconds[layout].append(export_once(model, tokenizer, recipe, layout, out))
                    sizes[layout] = disk_bytes(out)
                    shutil.rmtree(out)
        for layout in LAYOUTS:
            rows.append({"tasks": tasks, "layout": layout, "megabytes": round(sizes[layout] / 2**20, 1),
                         "seconds_median": round(statistics.median(seconds[layout]), 2),
                         "size_vs_copies": round(sizes[layout] / sizes["copies"], 3),
                         "time_vs_copies": round(statistics.median(seconds[layout])
                                                 / statistics.median(seconds["copies"]), 3)})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/export_size.json")
    args = p.parse_args()
    rows = measure(args.rounds)
    write_result(args.out, {"benchmark": "export_size", "model": MODEL, "rounds": args.rounds,
                            "machine": "2-core CPU (this project's dev machine)", "rows": rows,
                            "note": "size: bytes on disk, hard links counted once; times are this machine's "
                                    "(CPU and disk), medians over rounds with the layouts interleaved"})


if __name__ == "__main__":
    main()
