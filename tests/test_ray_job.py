"""The cluster path, for real: `ray start --head`, then `ray job submit --working-dir . -- python
launch/muppet_64gpu.py ...` with overrides for workers, CPU, updates and paths. The test stops its head
and only it: every process naming its temp folder is gone after (tests/ray_heads.py checks), while the
suite's bystander head, alive all the while, must still run at the end (tests/conftest.py checks)."""
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


@pytest.fixture
def ray_head():
    with own_ray_head() as (address, env, _):
        yield address, env


@pytest.mark.slow
def test_ray_job_submit_runs_the_main_job_on_a_local_head(ray_head, tmp_path):
    address, env = ray_head
    cmd = [RAY, "job", "submit", f"--address={address}", "--working-dir", str(REPO), "--",
           "python", "launch/muppet_64gpu.py", "--recipe", "recipes/local_cpu.yaml",
           "--num-workers", "2", "--cpu", "--updates", "4", "--slots", "2",
           "--output-dir", str(tmp_path), "--name", "job",
           "data.synthetic_rows=100", "checkpoint.every_updates=2", "eval.max_rows=16", "train.log_every=2",
           # the knobs of the method, all on at once: R3F + R4F, annealed temperature sampling, token budgets
           "r3f.enabled=true", "r3f.spectral_norm=true", "r3f.sigma=0.01", "sampling.policy=temperature",
           "train.token_budget=96"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    log = out.stdout[-4000:] + out.stderr[-4000:]
    assert out.returncode == 0, log
    assert "succeeded" in out.stdout.lower(), log

    run = tmp_path / "job"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in lines if any(k.startswith("loss/") for k in r)]
    assert [r["update"] for r in train_lines] == [2, 4]
    for r in train_lines:
        assert sum(v for k, v in r.items() if k.startswith("mix/")) == pytest.approx(1.0)
        assert all(0 < v <= 1 for k, v in r.items() if k.startswith("padding_efficiency/"))
        assert any(k.startswith("padding_efficiency/") for k in r)
    from PIL import Image

    assert Image.open(run / "task_mix.png").size[0] > 100
    final = json.loads((run / "eval_final.json").read_text())
    assert final["update"] == 4
    recipe = json.loads((run / "recipe.json").read_text())
    assert recipe["scaling"] == {**recipe["scaling"], "num_workers": 2, "use_gpu": False}
    assert {f"dev/{t['name']}/accuracy" for t in recipe["tasks"]} <= set(final)

    from transformers import AutoModel

    model = AutoModel.from_pretrained(run / "export")
    assert isinstance(model(input_ids=torch.tensor([[101, 2023, 102]])).last_hidden_state, torch.Tensor)
