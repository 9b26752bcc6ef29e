"""What the worker loop prints grows with its log windows, evals and checkpoints, never with its updates:
the loop of a real run (`run_worker`, plain run hooks) in this process on a tiny BERT and synthetic
rows, run for N and for 2N updates with the same number of windows and evals. (The whole main job's
console, Ray's lines and the driver's included: tests/test_console.py.)

    python -m pytest tests/run/test_worker_console.py -q
"""
from __future__ import annotations

import re

import pytest

from prefinetune.finetune.local import one_process_group
from prefinetune.model.tiny import save_tiny_bert
from prefinetune.recipe.config import load_recipe
from prefinetune.run.driver import prepare_data, resolve_paths
from prefinetune.run.worker import LocalSession, run_worker

NUMBER = re.compile(r"\d+(\.\d+)?(e-?\d+)?")


def _printed(capfd, bert, out, updates: int) -> list[str]:
    every = updates // 2
    recipe = resolve_paths(load_recipe("recipes/local_cpu.yaml", [
        f"model.name_or_path={bert}", f"run.output_dir={out}", f"run.name=u{updates}", "data.synthetic_rows=60",
        f"data.shards_dir={out / 'shards'}", "model.max_length=24", f"train.updates={updates}",
        "train.slots_per_update=2", "train.batch_size=2", f"train.log_every={every}", f"eval.every_updates={every}",
        "eval.max_rows=4", "scaling.num_workers=1"]))
    prepare_data(recipe)
    capfd.readouterr()
    run_worker(recipe, LocalSession())
    printed = capfd.readouterr()
    return [line for line in (printed.out + printed.err).splitlines() if line.strip()]


@pytest.mark.slow
def test_twice_the_updates_print_the_same_lines(capfd, tmp_path):
    one_process_group()
    bert = save_tiny_bert(tmp_path / "bert")
    short, long = _printed(capfd, bert, tmp_path, 4), _printed(capfd, bert, tmp_path, 8)
    assert sum(line.startswith("update ") for line in short) == 4, short      # 2 windows, 2 evals
    # the same window and eval lines (up to their numbers; which tasks a window saw varies)...
    assert _kinds(long) == _kinds(short), "\n".join(long)
    # ...and nothing else more: the first run also has DeepSpeed's once-per-process lines
    assert len(long) <= len(short), "\n".join(long)


def _kinds(lines: list[str]) -> list[str]:
    return [NUMBER.sub("#", line.split("|")[0]) for line in lines if line.startswith("update ")]
