"""Experiment trackers (`log.trackers`): every record rank 0 writes to metrics.jsonl (per-task loss and
metrics, examples seen, learning rate, task mix, time per update) also goes to TensorBoard, MLflow or
W&B under the same keys and the update as the step, with the recipe as the run's parameters and, at the
end, the export folder as an artifact where the tracker has one (MLflow: copied into the run; W&B: a
reference artifact, nothing copied). metrics.jsonl itself is always written (prefinetune/run/metrics_log.py).

    check_trackers(recipe)                      # the driver, before any work: a tracker whose package is
                                                # missing is a RecipeError naming the extra to install
    trackers = open_trackers(recipe, start)     # rank 0 of the worker loop, after resuming at `start`
    trackers.log(update, record); trackers.close()
    log_export(recipe, export_dir)              # the driver, after the export

A restarted or resumed run continues the same tracker run: the run ids are kept in RUN_DIR/trackers.json.
TensorBoard drops the events past the update resumed from (purge_step), as metrics.jsonl drops its
records; MLflow keeps them (a metric's history then holds the re-run updates twice); W&B ignores steps
it has seen.
"""
from __future__ import annotations

import importlib
import json
import os
import time
import uuid
from pathlib import Path

from prefinetune.recipe.config import RecipeConfig, RecipeError
from prefinetune.recipe.overrides import flat_keys

__all__ = ["check_trackers", "open_trackers", "log_export", "Trackers", "EXTRA", "RECORD"]

EXTRA = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}     # tracker -> module it needs
RECORD = "trackers.json"
_PARAM_CHARS = 6000           # MLflow's limit on a parameter's value


def check_trackers(recipe: RecipeConfig) -> None:
    """Every tracker the recipe asks for can be imported, else one RecipeError naming the extras."""
    missing = []
    for name in recipe.log.trackers:
        if name in EXTRA:
            try:
                importlib.import_module(EXTRA[name])
            except ImportError:
                missing.append(name)
    if missing:
        extras = ",".join(missing)
        raise RecipeError(f"log.trackers asks for {missing}, whose package is not installed: pip install "
                          f"'prefinetune[{extras}]'")


def _numbers(record: dict) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if k != "update" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def recipe_params(recipe: RecipeConfig) -> dict[str, str]:
    """The recipe as flat `section.key` parameters; the tasks as their names (the whole recipe is logged
    as recipe.json where the tracker keeps files)."""
    data = recipe.model_dump(mode="json")
    tasks = data.pop("tasks")
    params = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in flat_keys(data).items()}
    params["tasks"] = ",".join(t["name"] for t in tasks)
    return {k: v if len(v) <= _PARAM_CHARS else v[:_PARAM_CHARS - 3] + "..." for k, v in params.items()}


class TensorBoardTracker:
    def __init__(self, recipe: RecipeConfig, start: int, record: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(recipe.run_dir / "tensorboard"), purge_step=start + 1 if start else 0)
        if not start:
            text = json.dumps(recipe.model_dump(mode="json"), indent=2)
            self.writer.add_text("recipe", "    " + text.replace("\n", "\n    "), 0)

    def log(self, update: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, update)
        self.writer.flush()

    def close(self, failed: bool = False) -> None:
        self.writer.close()


def _mlflow_client(recipe: RecipeConfig):
    from mlflow import MlflowClient

    uri = recipe.log.mlflow_tracking_uri or (recipe.run_dir / "mlruns").resolve().as_uri()
    if uri.startswith("file:"):
        # MLflow 3 refuses its file store unless told (it asks for a database instead), yet a file store is
        # what a run folder can hold with mlflow-skinny alone; a tracking server or database: log.mlflow_tracking_uri
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=uri)


class MLflowTracker:
    def __init__(self, recipe: RecipeConfig, start: int, record: dict):
        from mlflow.entities import Param

        self.client = _mlflow_client(recipe)
        self.run_id = record.get("mlflow_run_id")
        if self.run_id is None:
            experiment = self.client.get_experiment_by_name(recipe.run.name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(recipe.run.name)
            self.run_id = self.client.create_run(experiment_id, run_name=recipe.run.name).info.run_id
            params = [Param(k, v) for k, v in recipe_params(recipe).items()]
            for i in range(0, len(params), 100):             # MLflow takes at most 100 parameters a call
                self.client.log_batch(self.run_id, params=params[i:i + 100])
            self.client.log_dict(self.run_id, recipe.model_dump(mode="json"), "recipe.json")
            record["mlflow_run_id"] = self.run_id
        else:
            self.client.update_run(self.run_id, status="RUNNING")

    def log(self, update: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(k, v, now, update) for k, v in metrics.items()]
        for i in range(0, len(entries), 1000):               # MLflow takes at most 1000 metrics a call
            self.client.log_batch(self.run_id, metrics=entries[i:i + 1000])

    def close(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


class WandbTracker:
    def __init__(self, recipe: RecipeConfig, start: int, record: dict):
        import wandb

        run_id = record.setdefault("wandb_run_id", uuid.uuid4().hex[:12])
        self.run = wandb.init(project=recipe.log.wandb_project, name=recipe.run.name, id=run_id, resume="allow",
                              dir=str(recipe.run_dir), config=recipe.model_dump(mode="json"))

    def log(self, update: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=update)

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


TRACKERS = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker, "wandb": WandbTracker}


class Trackers:
    """The recipe's trackers as one: each record goes to every one of them. A tracker that fails (a
    server gone) is said once and dropped: training goes on, metrics.jsonl keeps every record."""

    def __init__(self, trackers: list):
        self.trackers = trackers

    def _each(self, what: str, call) -> None:
        from prefinetune.run.best_effort import failure_reason, warn

        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as err:     # noqa: BLE001 - a tracker is an extra; the run and metrics.jsonl go on
                self.trackers.remove(tracker)
                warn(f"tracker {type(tracker).__name__} failed to {what} ({failure_reason(err)}); it gets no more "
                     "records (metrics.jsonl has them all)")

    def log(self, update: int, record: dict) -> None:
        metrics = _numbers(record)
        self._each("log", lambda tracker: tracker.log(update, metrics))

    def close(self, failed: bool = False) -> None:
        """Each tracker's run ended: finished, or (`failed`) marked failed."""
        self._each("close", lambda tracker: tracker.close(failed))


def _read_record(run_dir: Path) -> dict:
    path = Path(run_dir) / RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


def open_trackers(recipe: RecipeConfig, start: int) -> Trackers:
    """The recipe's trackers, started (or, after a restart or resume, continued) by rank 0."""
    from prefinetune.run.best_effort import best_effort

    record = _read_record(recipe.run_dir) if start else {}
    trackers = [best_effort(f"starting the {name} tracker", TRACKERS[name], recipe, start, record)
                for name in recipe.log.trackers if name in TRACKERS]
    if record:
        (recipe.run_dir / RECORD).write_text(json.dumps(record, indent=2))
    return Trackers([t for t in trackers if t is not None])


def log_export(recipe: RecipeConfig, export_dir: Path) -> list[str]:
    """The export folder as an artifact of the run's MLflow and W&B runs; returns where it went, in words."""
    record, done = _read_record(recipe.run_dir), []
    if "mlflow" in recipe.log.trackers and record.get("mlflow_run_id"):
        client = _mlflow_client(recipe)
        client.log_artifacts(record["mlflow_run_id"], str(export_dir), "export")
        done.append(f"MLflow run {record['mlflow_run_id']} (artifact export/)")
    if "wandb" in recipe.log.trackers and record.get("wandb_run_id"):
        import wandb

        run = wandb.init(project=recipe.log.wandb_project, id=record["wandb_run_id"], resume="allow",
                         dir=str(recipe.run_dir))
        artifact = wandb.Artifact(f"{recipe.run.name}-export", type="model")
        artifact.add_reference(Path(export_dir).resolve().as_uri())
        run.log_artifact(artifact)
        run.finish()
        done.append(f"W&B run {record['wandb_run_id']} (artifact {recipe.run.name}-export, a reference)")
    return done
