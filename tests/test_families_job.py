"""Every task family end to end on real data from ../shared/data, through the main job's CLI (local Ray,
2 CPU workers, ZeRO-2): all six families on a tiny random BART, each task trained and scored with its own
family's metrics. (The five encoder families on a tiny BERT, each trained and scored by the worker loop
with its own metrics: tests/finetune/test_finetune_families.py.)

The run has matplotlib broken on purpose (a package of that name that fails to import comes first on
PYTHONPATH, workers included): the task-mix plot fails, and the run still ends with its metrics and
export and one warning that says what failed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REPO  # noqa: E402

METRICS = {"classification": {"accuracy"}, "regression": {"pearson", "spearman"},
           "multiple_choice": {"accuracy"}, "span": {"exact_match", "f1"},
           "summarization": {"rouge1", "rouge2", "rougeL"}, "tagging": {"accuracy"}}


BROKEN = "matplotlib is broken on purpose by the test"


def _broken_matplotlib(folder: Path) -> str:
    (folder / "matplotlib").mkdir(parents=True)
    (folder / "matplotlib" / "__init__.py").write_text(f"raise ImportError({BROKEN!r})\n")
    return str(folder)


def _run(recipe: str, data_root: Path, out: Path, *extra: str) -> dict:
    cmd = [sys.executable, "launch/local_cpu.py", "--recipe", recipe, "--data-dir", str(data_root),
           "--output-dir", str(out), "--name", "job", "--updates", "4", "--slots", "2",
           "train.batch_size=4", "train.log_every=2", "eval.max_rows=12", "model.max_length=96", *extra]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([_broken_matplotlib(out / "broken_site"), env.get("PYTHONPATH", "")])
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    run = out / "job"
    recipe_used = json.loads((run / "recipe.json").read_text())
    final = json.loads((run / "eval_final.json").read_text())
    for task in recipe_used["tasks"]:
        got = {key.split("/")[2] for key in final if key.startswith(f"dev/{task['name']}/")} - {"rows"}
        assert METRICS[task["family"]] <= got, (task["name"], got)
    return {"families": {t["family"] for t in recipe_used["tasks"]}, "run": run, "console": done.stdout + done.stderr}


@pytest.mark.slow
def test_all_six_families_on_a_tiny_bart(data_root, tmp_path):
    from prefinetune.model.tiny import save_tiny_bart

    bart = save_tiny_bart(tmp_path / "tiny_bart")
    result = _run("recipes/shared_data_families_cpu.yaml", data_root, tmp_path, f"model.name_or_path={bart}")
    assert result["families"] == set(METRICS)
    info = json.loads((result["run"] / "export" / "tasks.json").read_text())
    assert {t["family"] for t in info["tasks"]} == set(METRICS)
    # the failed plot costs the plot only: the run's outputs are all there, and one warning says why
    for name in ("eval_final.json", "eval_final.txt", "export/model.safetensors", "export/tasks.json"):
        assert (result["run"] / name).is_file(), name
    assert not (result["run"] / "task_mix.png").exists()
    warnings = [line for line in result["console"].splitlines() if "WARNING" in line and "task-mix plot" in line]
    assert len(warnings) == 1, warnings
    assert f"ImportError: {BROKEN}" in warnings[0]
    assert json.loads((result["run"] / "eval_final.json").read_text())["update"] == 4
