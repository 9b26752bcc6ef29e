"""The report of a finished run, in RUN_DIR/report/: the task covariance similarity of its export on each
task's eval split (task_similarity.json and .png), the gradient conflict between tasks where the run
sampled it (diagnostics.every: gradient_conflict.json and .png), its training loss curves and its task
mix (from metrics.jsonl). Reads the run folder only (recipe.json, export/, metrics.jsonl,
gradient_conflict.jsonl) and the tasks' files.

    out, notes = write_report("runs/local_cpu", rank=8, max_rows=256)   # or: prefinetune report runs/local_cpu
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from prefinetune.data.prepare import data_root
from prefinetune.export.folder import load_exported
from prefinetune.model.source import load_tokenizer
from prefinetune.recipe.config import recipe_from_dict
from prefinetune.recipe.overrides import apply_overrides
from prefinetune.report.plots import heatmap, loss_curves
from prefinetune.report.representations import task_representations
from prefinetune.report.task_similarity import covsim_matrix
from prefinetune.run.best_effort import best_effort
from prefinetune.run.gradient_conflict import conflict_matrix, read_conflicts

__all__ = ["REPORT_FOLDER", "run_recipe", "write_conflicts", "write_similarity", "write_report"]

REPORT_FOLDER = "report"
DEFINITION = ("CovSim_ij = ||(U_i D_i^1/2)^T U_j D_j^1/2||_F / (||U_i D_i^1/2||_F ||U_j D_j^1/2||_F), "
              "U_i D_i U_i^T the top-rank eigenpairs of X_i^T X_i, X_i the pooled states of task i's rows "
              "(Wu, Zhang & Re 2020)")


def write_conflicts(run_dir: Path, tasks: list[str], out: Path) -> bool:
    """gradient_conflict.json and .png from the run's sampled updates; False when it sampled none."""
    records = read_conflicts(run_dir)
    if not records:
        return False
    matrix, counts = conflict_matrix(records, tasks)
    (out / "gradient_conflict.json").write_text(json.dumps({
        "tasks": tasks, "updates": [r["update"] for r in records],
        "cosine": [[None if np.isnan(v) else v for v in row] for row in matrix.tolist()],
        "pairs": counts.astype(int).tolist(),
        "definition": "mean cosine of the slot gradients of two tasks (a task with itself: of its own slots) at "
                      "a fixed random sample of backbone coordinates, over the sampled updates"}, indent=1) + "\n",
        encoding="utf-8")
    best_effort("the report's gradient-conflict heatmap", heatmap, tasks, matrix,
                f"gradient cosine between tasks ({len(records)} sampled updates)", out / "gradient_conflict.png",
                low=-1.0, high=1.0)
    return True


def run_recipe(run_dir: Path, overrides: list[str] = ()):
    """The recipe a run used (its recipe.json), placed where the run folder is now (a moved folder keeps
    its synthetic data), with `key=value` overrides (e.g. data.root=...)."""
    run_dir = Path(run_dir).resolve()
    path = run_dir / "recipe.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no recipe.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    placed = [f"run.output_dir={run_dir.parent}", f"run.name={run_dir.name}", *overrides]
    return recipe_from_dict(apply_overrides(data, placed), str(path))


def write_similarity(run_dir: Path, recipe, split: str, max_rows: int | None, rank: int, out: Path,
                     device: str = "cpu") -> str | None:
    """task_similarity.json and .png from the run's export; None, or why it was not written (no export
    yet; fewer than two tasks with rows in `split`)."""
    export = run_dir / "export"
    if not (export / "tasks.json").is_file():
        return f"no task similarity: {run_dir} has no export yet"
    model, info = load_exported(export, trust_remote_code=recipe.model.trust_remote_code)
    model.to(device)
    reps = task_representations(model, info, recipe.tasks, split, data_root(recipe), load_tokenizer(str(export)),
                                max_rows, device=device)
    reps = {name: r for name, r in reps.items() if len(r)}
    if len(reps) < 2:
        return f"no task similarity: it needs two tasks with rows in their {split!r} split, the run has {sorted(reps)}"
    names, matrix = covsim_matrix(reps, rank)
    (out / "task_similarity.json").write_text(json.dumps({
        "split": split, "rank": rank, "max_rows": max_rows, "sequences": {n: len(reps[n]) for n in names},
        "tasks": names, "covsim": matrix.tolist(), "definition": DEFINITION}, indent=1) + "\n", encoding="utf-8")
    best_effort("the report's task-similarity heatmap", heatmap, names, matrix,
                f"task covariance similarity ({split}, rank {rank})", out / "task_similarity.png")
    return None


def write_report(run_dir: str | Path, split: str | None = None, max_rows: int | None = 256, rank: int = 8,
                 overrides: list[str] = (), device: str = "cpu") -> tuple[Path, list[str]]:
    """RUN_DIR/report/ and what was left out, and why: the gradient conflict (where the run sampled it),
    the loss curves and the task mix (where it has metrics.jsonl), then the task similarity (where it has
    an export and two tasks with rows). A figure that fails is a warning (the JSON stays). Nothing to write
    at all is an error."""
    from prefinetune.run.task_mix import plot_task_mix

    run_dir = Path(run_dir)
    recipe = run_recipe(run_dir, overrides)
    out = run_dir / REPORT_FOLDER
    out.mkdir(exist_ok=True)
    notes = [] if write_conflicts(run_dir, [t.name for t in recipe.tasks], out) else [
        "no gradient conflict: the run did not sample it (diagnostics.every)"]
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        best_effort("the report's loss curves", loss_curves, metrics, out / "loss_curves.png")
        best_effort("the report's task-mix plot", plot_task_mix, metrics, out / "task_mix.png")
    why = write_similarity(run_dir, recipe, split or recipe.eval.split, max_rows, rank, out, device)
    notes += [why] if why else []
    if not any(out.iterdir()):
        raise ValueError(f"nothing to report for {run_dir}: " + "; ".join(notes))
    return out, notes
