"""The main job end to end on real data: `python launch/local_cpu.py --real-data ../shared/data`,
with a local Ray started in-process, 2 CPU workers, ZeRO-2 over gloo, then the export (the run is the
session's shared `main_job`, tests/conftest.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import MAIN_JOB_EVAL_ROWS, MAIN_JOB_UPDATES  # noqa: E402

UPDATES = MAIN_JOB_UPDATES


@pytest.mark.slow
def test_main_job_on_real_data_trains_reports_and_exports(data_root, main_job):
    out, run = main_job
    recipe = json.loads((run / "recipe.json").read_text())
    tasks = [t["name"] for t in recipe["tasks"]]
    assert len(tasks) >= 6 and recipe["data"]["root"] == str(data_root.resolve())

    # Every slot's examples are counted once, whichever worker ran it: the rows of the pure schedule under
    # the default token budget (auto: batch_size rows a slot on average), recomputed here from the shards.
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last_train = [r for r in records if "lr" in r][-1]
    assert last_train["update"] == UPDATES and recipe["train"]["token_budget"] == "auto"
    assert {t: last_train[f"seen/{t}"] for t in tasks} == _schedule_rows(recipe, run / "shards")
    efficiency = [v for k, v in last_train.items() if k.startswith("padding_efficiency/")]   # tasks of the window
    assert efficiency and all(0 < v <= 1 for v in efficiency)
    assert 0 <= last_train["time/data_wait_share"] < 1 and last_train["time/update_s"] > 0

    final = json.loads((run / "eval_final.json").read_text())
    manifest = json.loads((run / "shards" / "manifest.json").read_text())
    for t in tasks:
        assert 0.0 <= final[f"dev/{t}/accuracy"] <= 1.0
        assert final[f"dev/{t}/rows"] == min(MAIN_JOB_EVAL_ROWS, manifest["tasks"][t]["splits"]["dev"]["rows"])
        assert t in out.stdout.split("final dev metrics")[-1]

    from transformers import AutoModel, AutoModelForSequenceClassification

    exported = json.loads((run / "export" / "tasks.json").read_text())
    assert [t["name"] for t in exported["tasks"]] == tasks
    encoder = AutoModel.from_pretrained(run / "export")
    ids = torch.tensor([[101, 7592, 2088, 102]])
    assert encoder(input_ids=ids).last_hidden_state.shape == (1, 4, encoder.config.hidden_size)
    clf = AutoModelForSequenceClassification.from_pretrained(run / "export" / "tasks" / tasks[0])
    assert clf.config.num_labels == len(recipe["tasks"][0]["label_names"])


@pytest.mark.slow
def test_the_main_job_writes_its_metrics_to_tensorboard_and_mlflow_too(main_job, monkeypatch):
    """log.trackers=[jsonl,tensorboard,mlflow]: rank 0 writes every metrics.jsonl number to both, read back
    with their own readers; the recipe is the MLflow run's parameters and the export its artifact."""
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")        # MLflow 3 reads its file store only when told
    out, run = main_job
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected: dict = {}
    for r in records:
        for key, value in r.items():
            if key not in ("update", "elapsed_s") and isinstance(value, (int, float)):
                expected.setdefault(key, []).append((r["update"], pytest.approx(value, rel=1e-6)))
    assert any(k.startswith("loss/") for k in expected) and any(k.startswith("dev/") for k in expected)
    board = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    board.Reload()
    for key, points in expected.items():
        assert [(e.step, e.value) for e in board.Scalars(key)] == points, key
    run_id = json.loads((run / "trackers.json").read_text())["mlflow_run_id"]
    client = MlflowClient((run / "mlruns").resolve().as_uri())
    tracked = client.get_run(run_id)
    assert tracked.info.status == "FINISHED" and tracked.data.params["train.updates"] == str(UPDATES)
    for key, points in expected.items():
        assert [(m.step, m.value) for m in client.get_metric_history(run_id, key)] == points, key
    artifacts = {a.path for a in client.list_artifacts(run_id, "export")}
    assert {"export/tasks.json", "export/model.safetensors", "export/heads.safetensors"} <= artifacts
    assert f"export logged to MLflow run {run_id}" in out.stdout


@pytest.mark.slow
def test_the_best_checkpoint_by_the_runs_score_is_exported_and_the_card_says_why(main_job):
    """eval.select={metric: cola/rows, mode: max}: a score every checkpoint ties on, so the best is the
    earliest (update 2), not the last (4); the export holds that checkpoint's weights, and tasks.json, the
    card and the console say which update it is and why."""
    from safetensors.torch import load_file

    from prefinetune.distributed.checkpoint_files import checkpoint_update
    from prefinetune.export.checkpoint import state_dict_from_checkpoint

    out, run = main_job
    kept = {checkpoint_update(p): p for p in (run / "ray" / "real").glob("checkpoint_*") if p.is_dir()}
    assert sorted(kept) == [2, UPDATES]
    scores = {u: json.loads((p / "select.json").read_text()) for u, p in kept.items()}
    assert scores[2]["score"] == scores[UPDATES]["score"] == MAIN_JOB_EVAL_ROWS
    exported = json.loads((run / "export" / "tasks.json").read_text())["exported"]
    assert exported["update"] == 2 and exported["why"].startswith("update 2, the best dev cola/rows (max: ")
    assert exported["why"].endswith(f"the run went to update {UPDATES} (export.which: best)")
    assert f"Exported: {exported['why']}." in (run / "export" / "README.md").read_text()
    assert f"[prefinetune] exporting {exported['why']}" in out.stdout
    state = state_dict_from_checkpoint(kept[2])
    heads = load_file(run / "export" / "heads.safetensors")
    later = state_dict_from_checkpoint(kept[UPDATES])
    assert any(not torch.equal(later[k], state[k]) for k in heads), "updates 2 and 4 hold the same heads"
    for key, tensor in heads.items():
        assert torch.equal(tensor, state[key]), key


def _schedule_rows(recipe: dict, shards: Path) -> dict:
    """Rows per task over the run's updates, as the pure schedule draws them from the shards."""
    from prefinetune.data.shards import open_split
    from prefinetune.recipe.config import recipe_from_dict
    from prefinetune.run.step import TrainData
    from prefinetune.sampling.schedule import plan_update

    r = recipe_from_dict(recipe)
    t = r.train
    data = TrainData({task.name: open_split(shards, task.name, "train") for task in r.tasks}, r.tasks, 0,
                     t.token_budget, t.length_buckets, t.batch_size, r.model.max_length)
    seen = dict.fromkeys(data.sizes, 0)
    for update in range(t.updates):
        for slot in plan_update(r.sampling, r.run.seed, update, t.updates, t.slots_per_update, data.sizes,
                                t.batch_size, data.row_drawer):
            seen[slot.task] += len(slot.rows)
    return seen


@pytest.mark.slow
def test_predict_writes_every_head_that_has_the_split_from_the_pre_finetuning_export(data_root, main_job, tmp_path):
    """`prefinetune predict` on the shared run's export: the recipe's tasks with a test split (sst2, mrpc:
    their first 24 rows) predicted, the others listed as skipped; sst2's labels are the stock per-task
    model's on the raw text. These test files are labelled, so no GLUE submission file is written."""
    import csv

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from prefinetune.cli import main

    _, run = main_job
    recipe = json.loads((run / "recipe.json").read_text())
    index = {t["name"]: i for i, t in enumerate(recipe["tasks"])}
    rows = {name: f"tasks.{index[name]}.splits.test={recipe['tasks'][index[name]]['splits']['test']}#rows=0:24"
            for name in ("sst2", "mrpc")}
    assert main(["predict", "--model", str(run / "export"), "--recipe", str(run / "recipe.json"), "--data-dir",
                 str(data_root), "--out", str(tmp_path), *rows.values()]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert sorted(summary["tasks"]) == ["mrpc", "sst2"] and summary["submissions"] == []   # labelled test files
    assert "written for the unlabeled splits" in summary["no_submissions"]
    assert summary["skipped"] == {name: f"it has no split 'test' (splits: {sorted(t['splits'])})"
                                  for name, t in ((t["name"], t) for t in recipe["tasks"]) if name not in rows}
    lines = [json.loads(x) for x in (tmp_path / "sst2.jsonl").read_text().splitlines()]
    with open(data_root / "sst2" / "test.tsv", encoding="utf-8") as f:
        test = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:24]
    folder = run / "export" / "tasks" / "sst2"
    stock = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokens = AutoTokenizer.from_pretrained(folder)([r["sentence"] for r in test], padding=True, truncation=True,
                                                   max_length=recipe["model"]["max_length"], return_tensors="pt")
    with torch.no_grad():
        want = [stock.config.id2label[int(i)] for i in stock(**tokens).logits.argmax(-1)]
    assert [x["prediction"] for x in lines] == want
    assert [x["gold"] for x in lines] == [stock.config.id2label[int(r["label"])] for r in test]
    assert not (tmp_path / "glue").exists()


@pytest.mark.slow
def test_report_on_the_main_jobs_run_folder(main_job):
    """The report the run wrote at its end (diagnostics.report, 32 rows a task), and `prefinetune report` on
    the shared run writing it again: every task's dev rows represented by its export, a symmetric similarity
    in [0, 1] with each task's own ||D||_F / tr(D) on the diagonal, the gradient conflict the run sampled at
    updates 2 and 4 on its 2 workers, and the figures."""
    import numpy as np

    from prefinetune.cli import main

    done, run = main_job
    recipe = json.loads((run / "recipe.json").read_text())
    at_end = json.loads((run / "report" / "task_similarity.json").read_text())
    assert f"[prefinetune] report: {run / 'report'}" in done.stdout and at_end["max_rows"] == 32
    assert main(["report", str(run), "--max-rows", "32"]) == 0
    again = json.loads((run / "report" / "task_similarity.json").read_text())
    assert again["tasks"] == at_end["tasks"] and np.allclose(again["covsim"], at_end["covsim"], atol=1e-6)
    report = json.loads((run / "report" / "task_similarity.json").read_text())
    assert report["tasks"] == [t["name"] for t in recipe["tasks"]] and report["split"] == "dev"
    sim = np.array(report["covsim"])
    assert np.allclose(sim, sim.T) and np.all((sim >= 0) & (sim <= 1 + 1e-9)) and np.all(np.diag(sim) < 1)
    conflict = json.loads((run / "report" / "gradient_conflict.json").read_text())    # 2 workers, ZeRO-2
    assert conflict["updates"] == [2, 4] and conflict["tasks"] == report["tasks"]
    pairs = np.array(conflict["pairs"])
    assert np.array_equal(pairs, pairs.T) and np.triu(pairs).sum() == 2 * (2 * 1 / 2)   # 2 slots an update: 1 pair
    for name in ("task_similarity.png", "gradient_conflict.png", "loss_curves.png", "task_mix.png"):
        assert (run / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
