"""The cluster path, for real, with every task family on real data: `ray start --head`, then `ray job
submit --working-dir . -- python launch/muppet_64gpu.py --recipe recipes/shared_data_families_cpu.yaml`
on a tiny random BART (2 CPU workers, ZeRO-2, overrides for workers, CPU, updates and paths) with the
method's knobs all on at once: R3F + R4F, annealed temperature sampling, token budgets. All six families
(classification, regression, multiple choice, span, summarization, tagging) are trained and scored with
their own family's metrics, and exported.

The job has matplotlib broken on purpose (a package of that name that fails to import comes first on
the job's PYTHONPATH, its workers included): the task-mix plot fails, and the run still ends with its
metrics and export and one warning that says what failed; the report at its end writes its numbers and
warns once per figure. (The plot itself: the main job, tests/
test_console.py; the five encoder families on a tiny BERT, each trained and scored by the worker loop with
its own metrics: tests/finetune/test_finetune_families.py.)

The test stops its head and only it: every process naming its temp folder is gone after (tests/
ray_heads.py checks), while the suite's bystander head, alive all the while, must still run at the end
(tests/conftest.py checks).

    python -m pytest tests/test_ray_job.py -q
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REPO  # noqa: E402
from ray_heads import RAY, own_ray_head  # noqa: E402

METRICS = {"classification": {"accuracy"}, "regression": {"pearson", "spearman"},
           "multiple_choice": {"accuracy"}, "span": {"exact_match", "f1"},
           "summarization": {"rouge1", "rouge2", "rougeL"}, "tagging": {"accuracy"}}
BROKEN = "matplotlib is broken on purpose by the test"


def _broken_matplotlib(folder: Path) -> str:
    (folder / "matplotlib").mkdir(parents=True)
    (folder / "matplotlib" / "__init__.py").write_text(f"raise ImportError({BROKEN!r})\n")
    return str(folder)


@pytest.fixture
def ray_head():
    with own_ray_head() as (address, env, _):
        yield address, env


@pytest.mark.slow
def test_ray_job_submit_trains_all_six_families_on_a_tiny_bart(ray_head, data_root, tmp_path):
    from prefinetune.model.tiny import save_tiny_bart

    address, env = ray_head
    bart = save_tiny_bart(tmp_path / "tiny_bart")
    runtime_env = {"env_vars": {"PYTHONPATH": _broken_matplotlib(tmp_path / "broken_site")}}
    cmd = [RAY, "job", "submit", f"--address={address}", "--working-dir", str(REPO),
           "--runtime-env-json", json.dumps(runtime_env), "--",
           "python", "launch/muppet_64gpu.py", "--recipe", "recipes/shared_data_families_cpu.yaml",
           "--data-dir", str(data_root), "--num-workers", "2", "--cpu", "--updates", "4", "--slots", "2",
           "--output-dir", str(tmp_path), "--name", "job", f"model.name_or_path={bart}",
           "train.batch_size=4", "train.log_every=2", "checkpoint.every_updates=2", "eval.max_rows=12",
           "model.max_length=96",
           # the knobs of the method, all on at once: R3F + R4F, annealed temperature sampling, token budgets
           "r3f.enabled=true", "r3f.spectral_norm=true", "r3f.sigma=0.01", "sampling.policy=temperature",
           "train.token_budget=384", "diagnostics.report_rows=12"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    console = out.stdout + out.stderr
    assert out.returncode == 0, console[-6000:]
    assert "succeeded" in out.stdout.lower(), console[-4000:]

    run = tmp_path / "job"
    recipe = json.loads((run / "recipe.json").read_text())
    assert recipe["scaling"] == {**recipe["scaling"], "num_workers": 2, "use_gpu": False}
    assert recipe["r3f"]["enabled"] and recipe["r3f"]["spectral_norm"] and recipe["train"]["token_budget"] == 384
    assert {t["family"] for t in recipe["tasks"]} == set(METRICS)
    final = json.loads((run / "eval_final.json").read_text())
    assert final["update"] == 4
    for task in recipe["tasks"]:
        got = {key.split("/")[2] for key in final if key.startswith(f"dev/{task['name']}/")} - {"rows"}
        assert METRICS[task["family"]] <= got, (task["name"], got)

    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in lines if any(k.startswith("loss/") for k in r)]
    assert [r["update"] for r in train_lines] == [2, 4]
    for r in train_lines:
        assert sum(v for k, v in r.items() if k.startswith("mix/")) == pytest.approx(1.0)
        assert any(k.startswith("padding_efficiency/") for k in r)
        assert all(0 < v <= 1 for k, v in r.items() if k.startswith("padding_efficiency/"))

    info = json.loads((run / "export" / "tasks.json").read_text())
    assert {t["family"] for t in info["tasks"]} == set(METRICS)
    from transformers import AutoModel

    model = AutoModel.from_pretrained(run / "export")
    assert isinstance(model(input_ids=torch.tensor([[0, 713, 16, 2]])).last_hidden_state, torch.Tensor)

    # the failed plot costs the plot only: the run's outputs are all there, and one warning says why
    for name in ("eval_final.json", "eval_final.txt", "export/model.safetensors", "export/tasks.json"):
        assert (run / name).is_file(), name
    assert not (run / "task_mix.png").exists()
    warnings = [line for line in console.splitlines() if "WARNING" in line and "the task-mix plot failed" in line]
    assert len(warnings) == 1, warnings
    assert f"ImportError: {BROKEN}" in warnings[0]
    # the report at the run's end (diagnostics.report): its numbers written, each figure one warning
    similarity = json.loads((run / "report" / "task_similarity.json").read_text())
    assert similarity["tasks"] == [t["name"] for t in recipe["tasks"]] and similarity["max_rows"] == 12
    figures = [line for line in console.splitlines() if "WARNING" in line and "the report's" in line]
    assert len(figures) == 3 and all(f"ImportError: {BROKEN}" in line for line in figures), figures
    assert not list((run / "report").glob("*.png"))
