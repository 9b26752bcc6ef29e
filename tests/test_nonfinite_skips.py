"""train.nonfinite_skips in the training loop: updates whose loss is NaN are skipped, counted in
metrics.jsonl and said, until one more than allowed stops the run with an error naming it; a recipe
that asks for skipping without the ZeRO optimizer (which does the skipping) is refused. A real
one-process run (tiny BERT, RTE rows from ../shared/data) whose lr of 1e30 makes every loss after the
first update NaN.

    python -m pytest tests/test_nonfinite_skips.py -q
"""
from __future__ import annotations

import json

import pytest

from prefinetune.model.tiny import save_tiny_bert
from prefinetune.recipe.config import RecipeError, load_recipe
from prefinetune.run.step import NonFiniteLossError


def _recipe(tmp_path, data_root, *overrides: str):
    bert = save_tiny_bert(tmp_path / "bert")
    return load_recipe("recipes/finetune/rte.yaml", [
        f"model.name_or_path={bert}", f"data.root={data_root}", f"run.output_dir={tmp_path / 'out'}",
        "finetune.epochs=0.03", "eval.max_rows=16", "train.log_every=1", "finetune.eval_at_start=false",
        *overrides])


def test_nan_updates_are_skipped_and_counted_until_one_more_than_allowed_stops_the_run(tmp_path, data_root):
    from prefinetune.finetune.local import finetune_in_process
    from prefinetune.finetune.resolve import resolve_finetune
    from prefinetune.run.driver import prepare_data, resolve_paths

    recipe = resolve_paths(_recipe(tmp_path, data_root, "optim.lr=1e30", "train.nonfinite_skips=2"))
    prepare_data(recipe)
    recipe = resolve_finetune(recipe)
    assert recipe.train.updates >= 4
    with pytest.raises(NonFiniteLossError) as err:
        finetune_in_process(recipe)
    assert str(err.value).startswith("update 4, slot 0: task 'rte' gave a non-finite loss (nan) on its training rows")
    assert "3 updates with a non-finite loss or gradient, more than train.nonfinite_skips=2" in str(err.value)
    records = [json.loads(line) for line in (recipe.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["update"], r["skipped_updates"]) for r in records if "skipped_updates" in r] == [(2, 1), (3, 2)]
    losses = [r for r in records if "loss/rte" in r]      # only update 1 trained; the skipped ones log no loss
    assert [r["update"] for r in losses] == [1]


def test_skipping_without_the_zero_optimizer_is_refused_naming_both_keys(tmp_path, data_root):
    with pytest.raises(RecipeError, match=r"train.nonfinite_skips=3 needs deepspeed.zero_stage 1 or 2"):
        _recipe(tmp_path, data_root, "train.nonfinite_skips=3", "deepspeed.zero_stage=0")
