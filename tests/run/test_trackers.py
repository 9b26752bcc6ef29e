"""Experiment trackers for real, read back with each library's own reader: TensorBoard's event files
(tensorboard's EventAccumulator), an MLflow file store (MlflowClient), W&B offline (its run file); a
resume continues the same tracker run and TensorBoard drops the events past it; the export as an
artifact; a tracker whose package is missing is refused naming the extra. (Through the main job, with
the worker loop writing: tests/test_main_job.py.)

    python -m pytest tests/run/test_trackers.py -q
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny import tiny_recipe  # noqa: E402

from prefinetune.recipe.config import RecipeError, recipe_from_dict
from prefinetune.run.trackers import RECORD, check_trackers, log_export, open_trackers

RECORDS = {1: {"lr": 1e-3, "loss/two": 0.9, "seen/two": 12, "mix/two": 0.5},
           2: {"lr": 2e-3, "loss/two": 0.7, "seen/two": 24, "mix/two": 0.25, "dev/two/accuracy": 0.5},
           3: {"lr": 3e-3, "loss/two": 0.6, "seen/two": 36, "mix/two": 0.5},
           4: {"lr": 4e-3, "loss/two": 0.4, "seen/two": 48, "mix/two": 0.75}}


def _recipe(tmp_path: Path, *trackers: str):
    return recipe_from_dict(tiny_recipe(run={"output_dir": str(tmp_path), "name": "tracked"},
                                        log={"trackers": ["jsonl", *trackers]}, optim={"lr": 4e-3}))


def _run(recipe, start: int, updates) -> None:
    trackers = open_trackers(recipe, start)
    for update in updates:
        trackers.log(update, {"update": update, "note": "text is not a metric", **RECORDS[update]})
    trackers.close()


def _scalars(folder: Path, key: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, pytest.approx(e.value)) for e in events.Scalars(key)]


def test_tensorboard_and_mlflow_hold_every_record_and_a_resume_continues_the_same_run(tmp_path):
    from mlflow import MlflowClient

    recipe = _recipe(tmp_path, "tensorboard", "mlflow")
    _run(recipe, 0, [1, 2, 3, 4])
    _run(recipe, 2, [3, 4])                  # a restart from the checkpoint of update 2 runs 3 and 4 again
    board = recipe.run_dir / "tensorboard"
    assert _scalars(board, "loss/two") == [(u, RECORDS[u]["loss/two"]) for u in (1, 2, 3, 4)]   # each update once
    assert _scalars(board, "dev/two/accuracy") == [(2, 0.5)]
    record = json.loads((recipe.run_dir / RECORD).read_text())
    client = MlflowClient((recipe.run_dir / "mlruns").resolve().as_uri())
    run = client.get_run(record["mlflow_run_id"])
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == "0.004" and run.data.params["tasks"] == "two,three,four"
    history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "seen/two")]
    assert history == [(1, 12), (2, 24), (3, 36), (4, 48), (3, 36), (4, 48)]       # MLflow keeps the re-run
    assert "note" not in run.data.metrics
    export = tmp_path / "export"
    export.mkdir()
    (export / "tasks.json").write_text('{"tasks": []}')
    assert log_export(recipe, export) == [f"MLflow run {run.info.run_id} (artifact export/)"]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "export")] == ["export/tasks.json"]
    assert json.loads(Path(client.download_artifacts(run.info.run_id, "recipe.json", str(tmp_path))).read_text())[
        "optim"]["lr"] == 0.004


def test_wandb_offline_writes_its_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    recipe = _recipe(tmp_path, "wandb")
    _run(recipe, 0, [1, 2])
    run_id = json.loads((recipe.run_dir / RECORD).read_text())["wandb_run_id"]
    [folder] = (recipe.run_dir / "wandb").glob(f"offline-run-*-{run_id}")
    # the run's record file (what `wandb sync` uploads): W&B 0.31 has no Python reader for it, so its
    # protobuf records are checked for the keys logged and the recipe's sections
    data = (folder / f"run-{run_id}.wandb").read_bytes()
    for key in (b"loss/two", b"seen/two", b"dev/two/accuracy", b"optim", b"tracked"):
        assert key in data, key
    assert b"text is not a metric" not in data


def test_a_tracker_whose_package_is_missing_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)          # what Python does when it cannot import it
    recipe = _recipe(tmp_path, "tensorboard", "mlflow")
    with pytest.raises(RecipeError, match=r"log.trackers asks for \['mlflow'\], whose package is not installed: "
                                          r"pip install 'prefinetune\[mlflow\]'"):
        check_trackers(recipe)
    assert not recipe.run_dir.exists()
    with pytest.raises(RecipeError, match="log.trackers repeats a tracker"):
        _recipe(tmp_path, "mlflow", "mlflow")


def test_a_tracker_that_fails_is_dropped_with_a_warning_and_a_failed_run_is_marked_failed(tmp_path, monkeypatch,
                                                                                         capsys):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    gone = recipe_from_dict(tiny_recipe(run={"output_dir": str(tmp_path), "name": "gone"},
                                        log={"trackers": ["jsonl", "tensorboard", "mlflow"],
                                             "mlflow_tracking_uri": "http://127.0.0.1:9"}))
    trackers = open_trackers(gone, 0)                       # no MLflow server there: TensorBoard alone goes on
    trackers.log(1, RECORDS[1])
    trackers.close()
    assert "the mlflow tracker failed and was skipped" in capsys.readouterr().err
    assert _scalars(gone.run_dir / "tensorboard", "loss/two") == [(1, RECORDS[1]["loss/two"])]
    recipe = _recipe(tmp_path, "mlflow")
    trackers = open_trackers(recipe, 0)
    trackers.log(1, RECORDS[1])
    trackers.close(failed=True)                             # the worker loop raised
    run_id = json.loads((recipe.run_dir / RECORD).read_text())["mlflow_run_id"]
    assert MlflowClient((recipe.run_dir / "mlruns").resolve().as_uri()).get_run(run_id).info.status == "FAILED"


def test_each_compare_trial_logs_its_own_tracker_run(tmp_path, data_root):
    """compare's trials (its trial recipes, run in one process as a Tune trial runs them) each write their
    own TensorBoard run in their trial folder, holding every number of their metrics.jsonl."""
    from prefinetune.finetune.grid import trial_grid, trial_recipe
    from prefinetune.finetune.local import finetune_in_process
    from prefinetune.finetune.resolve import resolve_finetune
    from prefinetune.model.tiny import save_tiny_bert
    from prefinetune.recipe.config import load_recipe
    from prefinetune.run.driver import prepare_data, resolve_paths

    bert = save_tiny_bert(tmp_path / "bert")
    base = load_recipe("recipes/finetune/rte.yaml", [
        f"data.root={data_root}", "finetune.epochs=0.02", "eval.max_rows=8", "model.max_length=64",
        "log.trackers=[jsonl, tensorboard]", "finetune.grid={optim.lr: [1.0e-4, 1.0e-3]}"]).model_dump(mode="json")
    for trial in trial_grid({"tiny": str(bert)}, [1.0], 1, base["finetune"]["grid"]):
        recipe = resolve_paths(trial_recipe(base, trial, tmp_path / "cmp", tmp_path / "shards"))
        prepare_data(recipe)
        finetune_in_process(resolve_finetune(recipe))
        records = [json.loads(x) for x in (recipe.run_dir / "metrics.jsonl").read_text().splitlines()]
        numbers = {(r["update"], k, v) for r in records for k, v in r.items()
                   if isinstance(v, (int, float)) and k != "update"}
        board = {k: _scalars(recipe.run_dir / "tensorboard", k) for k in {k for _, k, _ in numbers}}
        assert numbers and all((u, v) in board[k] for u, k, v in numbers)
        assert recipe.run_dir.parent == tmp_path / "cmp" / "trials"
