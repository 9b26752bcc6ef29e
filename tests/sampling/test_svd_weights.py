"""Wu, Zhang & Ré's SVD task re-weighting (sampling.task_weights: svd): the weights of a 3-task example by
hand, a task's representation against the model's own pooled states, and the worker loop of a real run in
one process: the weights recomputed every svd_every updates, logged per window, multiplying the losses, and
kept in the checkpoint, so a run resumed between two recomputations ends where the uninterrupted one did.
(Two gloo workers against a single process: tests/distributed/test_zero_parity.py.)

    python -m pytest tests/sampling/test_svd_weights.py -q
"""
from __future__ import annotations

import json
import math
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny import family_splits, mixed_recipe, tiny_bert  # noqa: E402

from prefinetune.model.multitask import build_model
from prefinetune.recipe.config import RecipeError, recipe_from_dict
from prefinetune.run.step import TrainData
from prefinetune.sampling.schedule import Slot
from prefinetune.sampling.svd_weights import SvdTaskWeights, representation_rows, svd_task_weights


def test_three_tasks_by_hand():
    """theta = (1, 0), (0, 1), (1, 1): [theta] [theta]^T = [[2, 1], [1, 2]], top direction u = (1, 1)/sqrt 2, so
    alpha = 1/sqrt 2, 1/sqrt 2, 2/sqrt 2 -> weights 0.75, 0.75, 1.5 (mean 1). With rank 2 every direction
    counts: alpha = ||theta|| = 1, 1, sqrt 2."""
    thetas = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(svd_task_weights(thetas, 1), [0.75, 0.75, 1.5], atol=1e-12)
    np.testing.assert_allclose(svd_task_weights(thetas, 2), np.array([1, 1, math.sqrt(2)]) * 3 / (2 + math.sqrt(2)),
                               atol=1e-12)
    assert np.allclose(svd_task_weights(-thetas, 1), svd_task_weights(thetas, 1))      # the sign of u never matters
    assert np.array_equal(svd_task_weights(np.zeros((2, 3)), 1), [1.0, 1.0])


def test_a_tasks_representation_is_the_mean_of_its_pooled_states():
    recipe = recipe_from_dict(mixed_recipe(["classification", "regression"], sampling={"task_weights": "svd"}))
    model = build_model(recipe, backbone=tiny_bert()).train()
    data = TrainData(family_splits(recipe), recipe.tasks, pad_id=0)
    weights = SvdTaskWeights([t.name for t in recipe.tasks], every=2, rank=1, rows=7, batch_size=3)
    rows = representation_rows(0, 2, 30, 7)
    assert len(set(rows)) == 7 and rows == representation_rows(0, 2, 30, 7) != representation_rows(1, 2, 30, 7)
    got = weights.representation(model, data, 2, "regression", 0, torch.device("cpu"))
    model.eval()
    with torch.no_grad():
        want = model.pooled(2, data.batch(Slot(0, "regression", rows), torch.device("cpu"))).double().mean(dim=0)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=1e-7)
    assert weights.refresh(model, data, {t.name: i for i, t in enumerate(recipe.tasks)}, 0, 0, 0, 1,
                           torch.device("cpu"))
    assert weights.computed_at == 1 and math.isclose(sum(weights.weights.values()), 3.0)
    assert not weights.due(1) and weights.due(2)


def test_a_multiple_choice_tasks_representation_is_the_mean_over_its_real_choices():
    """One sequence per real choice, whatever the batch pads: each row alone gives its own choices' states."""
    recipe = recipe_from_dict(mixed_recipe(["classification", "multiple_choice"], sampling={"task_weights": "svd"}))
    model = build_model(recipe, backbone=tiny_bert()).eval()
    data = TrainData(family_splits(recipe), recipe.tasks, pad_id=0)
    weights = SvdTaskWeights([t.name for t in recipe.tasks], every=2, rank=1, rows=9, batch_size=4)
    i = next(k for k, t in enumerate(recipe.tasks) if t.family == "multiple_choice")
    got = weights.representation(model, data, i, "multiple_choice", 0, torch.device("cpu"))
    states = []
    with torch.no_grad():
        for row in representation_rows(0, i, 30, 9):
            batch = data.batch(Slot(0, "multiple_choice", (row,)), torch.device("cpu"))
            states.append(model.pooled(i, batch).double()[batch["choice_mask"].reshape(-1)])
    np.testing.assert_allclose(got, torch.cat(states).mean(dim=0).numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("sampling,message", [
    ({"svd_every": 5}, "sampling.svd_every sets the SVD task weights: it needs sampling.task_weights: svd"),
    ({"task_weights": "svd", "svd_rank": 4}, r"sampling.svd_rank=4 is more than the recipe's 3 tasks"),
    ({"task_weights": "mean"}, "sampling.task_weights"),
])
def test_bad_svd_keys_are_refused_by_name(sampling, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(mixed_recipe(["classification", "regression"], sampling=sampling))


class _Checkpoint:
    def __init__(self, folder: Path):
        self.folder = folder

    @contextmanager
    def as_directory(self):
        yield str(self.folder)


class _Session:
    """One process that saves a DeepSpeed checkpoint at each report (as Ray Train's workers do) and resumes
    from the one it is given."""
    rank, world, saves_checkpoints = 0, 1, True

    def __init__(self, folder: Path, resume: Path | None = None):
        self.device, self.folder, self.resume, self.saved = torch.device("cpu"), folder, resume, {}

    def checkpoint(self, resume_from, experiment):
        return _Checkpoint(self.resume) if self.resume else None

    def report(self, engine, update, client_state, metrics, score=None):
        from prefinetune.run.worker import checkpoint_tag

        path = self.folder / f"checkpoint_{update:06d}"
        engine.save_checkpoint(str(path), tag=checkpoint_tag(update), client_state=client_state)
        self.saved[update] = path
        self.state = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}


def _weights(run_dir: Path) -> dict[int, dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["update"]: {k: v for k, v in r.items() if k.startswith("task_weight")} for r in records
            if "task_weights/computed_at" in r}


@pytest.mark.slow
def test_a_run_resumed_between_recomputations_continues_with_the_checkpointed_weights(tmp_path):
    """svd_every 2: the weights are computed before updates 1, 3, 5. The run is checkpointed after update 3 and
    resumed there: update 4 must use the weights computed before update 3 (the checkpoint's), not new ones."""
    from prefinetune.finetune.local import one_process_group
    from prefinetune.model.tiny import save_tiny_bert
    from prefinetune.recipe.config import load_recipe
    from prefinetune.run.driver import prepare_data, resolve_paths
    from prefinetune.run.hooks import RunHooks
    from prefinetune.run.worker import run_worker

    bert = save_tiny_bert(tmp_path / "bert", seed=1)

    def recipe(name: str):
        data = load_recipe("recipes/local_cpu.yaml", [
            f"model.name_or_path={bert}", f"run.output_dir={tmp_path / 'out'}", f"run.name={name}",
            f"data.shards_dir={tmp_path / 'shards'}", "data.synthetic_rows=80", "model.max_length=24",
            "scaling.num_workers=1", "train.updates=6", "train.slots_per_update=2", "train.batch_size=4",
            "train.log_every=1", "checkpoint.every_updates=3", "eval.every_updates=6", "eval.max_rows=4",
            "optim.lr=0.01", "optim.warmup_updates=0", "sampling.task_weights=svd", "sampling.svd_every=2",
            "sampling.svd_rows=12", "sampling.svd_rank=1"]).model_dump(mode="json")
        data["tasks"] = data["tasks"][:3]
        return resolve_paths(recipe_from_dict(data))

    one_process_group()
    whole = recipe("whole")
    prepare_data(whole)
    first = _Session(tmp_path / "ckpt_whole")
    run_worker(whole, first, hooks=RunHooks())
    logged = _weights(whole.run_dir)
    assert [logged[u]["task_weights/computed_at"] for u in range(1, 7)] == [1, 1, 3, 3, 5, 5]
    values = {u: [logged[u][f"task_weight/{t.name}"] for t in whole.tasks] for u in logged}
    assert all(math.isclose(sum(v), 3.0) for v in values.values()) and values[1] != values[3] != values[5]
    assert values[3] != [1.0, 1.0, 1.0]

    resumed = recipe("resumed")
    second = _Session(tmp_path / "ckpt_resumed", resume=first.saved[3])
    run_worker(resumed, second, hooks=RunHooks())
    again = _weights(resumed.run_dir)
    assert sorted(again) == [4, 5, 6] and all(again[u] == logged[u] for u in again)
    for name, tensor in first.state.items():
        assert torch.equal(second.state[name], tensor), name
