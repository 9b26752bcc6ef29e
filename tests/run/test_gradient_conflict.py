"""Gradient conflict (diagnostics.every, prefinetune/run/gradient_conflict.py): on two real gloo workers
under DeepSpeed ZeRO-2, each slot's vector is that slot's own gradient (read by the hooks before DeepSpeed
accumulates or reduces it) at the sampled coordinates, and the pair sums rank 0 writes are the cosines a
single process computes with torch.autograd.grad for every slot of the update; the pure pieces against
numpy; a worker run writes one line per sampled update and `prefinetune report` draws the matrix.

    python -m pytest tests/run/test_gradient_conflict.py -q
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import free_port, rank_env  # noqa: E402
from tiny import tiny_bert, tiny_recipe, tiny_splits  # noqa: E402

from prefinetune.model.multitask import build_model
from prefinetune.recipe.config import recipe_from_dict
from prefinetune.run.gradient_conflict import conflict_matrix, conflict_sums, pair_key
from prefinetune.sampling.schedule import plan_update, worker_slots

WORLD, SLOTS = 2, 6
CASES = {"all": 1_000_000, "sample": 500}       # every coordinate (the tiny backbone has fewer); 500


def _recipe(out: str, coordinates: int) -> dict:
    return tiny_recipe(deepspeed={"zero_stage": 2}, train={"updates": 1, "slots_per_update": SLOTS, "batch_size": 3},
                       run={"output_dir": out, "name": "conflict", "seed": 0},
                       diagnostics={"every": 1, "coordinates": coordinates})


def _model(recipe):
    torch.manual_seed(0)
    return build_model(recipe, backbone=tiny_bert(seed=0))


def _worker(rank: int, port: int, out: str) -> None:
    from prefinetune.distributed.engine import build_engine
    from prefinetune.run.gradient_conflict import ConflictSampler
    from prefinetune.run.step import TrainData, run_update

    rank_env(rank, WORLD, port)
    for name, coordinates in CASES.items():
        recipe = recipe_from_dict(_recipe(str(Path(out, name)), coordinates))
        engine = build_engine(_model(recipe), recipe, WORLD, on_gpu=False)
        data = TrainData(tiny_splits(recipe), recipe.tasks, pad_id=0)
        sampler = ConflictSampler(engine.module, recipe, rank)
        sampler.run_dir.mkdir(parents=True, exist_ok=True)
        plan = plan_update(recipe.sampling, 0, 0, 1, SLOTS, data.sizes, recipe.train.batch_size)
        with sampler.update(1) as probe:
            run_update(engine, {t.name: i for i, t in enumerate(recipe.tasks)}, worker_slots(plan, rank, WORLD),
                       data, torch.device("cpu"), 0, 0, probe=probe)
        torch.save({"slots": probe.slots, "chosen": probe.chosen}, Path(out, name, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def _reference(recipe) -> list[tuple[str, torch.Tensor]]:
    """Every slot of update 0, in plan order: (task, its gradient over the trainable backbone, flat)."""
    from prefinetune.run.step import TrainData, slot_loss

    model = _model(recipe)
    data = TrainData(tiny_splits(recipe), recipe.tasks, pad_id=0)
    params = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")]
    out = []
    for slot in plan_update(recipe.sampling, 0, 0, 1, SLOTS, data.sizes, recipe.train.batch_size):
        ids = [t.name for t in recipe.tasks].index(slot.task)
        loss, _ = slot_loss(model, ids, recipe.tasks[ids], data.batch(slot, torch.device("cpu")))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        out.append((slot.task, torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                          for g, p in zip(grads, params)])))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, gloo) -> Path:
    out = tmp_path_factory.mktemp("conflict")
    gloo.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_two_workers_record_what_one_process_computes(runs, case, tmp_path):
    recipe = recipe_from_dict(_recipe(str(tmp_path), CASES[case]))
    reference = _reference(recipe)
    saved = [torch.load(runs / case / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    chosen = saved[0]["chosen"]
    assert torch.equal(chosen, saved[1]["chosen"]) and len(chosen) == min(CASES[case], len(reference[0][1]))
    plan = plan_update(recipe.sampling, 0, 0, 1, SLOTS, {t.name: 40 + 10 * i for i, t in enumerate(recipe.tasks)},
                       recipe.train.batch_size)
    for rank in range(WORLD):
        mine = [reference[s.index] for s in worker_slots(plan, rank, WORLD)]
        got = saved[rank]["slots"]
        assert [t for t, _ in got] == [t for t, _ in mine]
        for (_, vector), (_, full) in zip(got, mine):       # the slot's own gradient, up to DeepSpeed's 1/S
            want = full[chosen].numpy()
            cosine = vector @ want / (np.linalg.norm(vector) * np.linalg.norm(want))
            assert cosine == pytest.approx(1.0, abs=1e-5)
    line = json.loads((runs / case / "conflict" / "gradient_conflict.jsonl").read_text())
    want = conflict_sums([(t, v[chosen].numpy()) for t, v in reference])
    assert line["update"] == 1 and line["slots"] == SLOTS and line["pairs"].keys() == want.keys()
    for key, (total, n) in want.items():
        assert line["pairs"][key][1] == n and line["pairs"][key][0] == pytest.approx(total, abs=1e-4)


def test_coordinates_are_distinct_sorted_and_the_same_for_a_seed_without_a_full_permutation():
    from prefinetune.run.gradient_conflict import sample_coordinates

    a = sample_coordinates(1000, 900, seed=3)                 # many collisions to redraw
    assert torch.equal(a, sample_coordinates(1000, 900, seed=3))
    assert not torch.equal(a, sample_coordinates(1000, 900, seed=4))
    assert len(a) == len(torch.unique(a)) == 900 and bool((a[1:] > a[:-1]).all())
    assert 0 <= int(a[0]) and int(a[-1]) < 1000
    assert sample_coordinates(10, 50, seed=0).tolist() == list(range(10))
    assert len(sample_coordinates(355_000_000, 16384, seed=0)) == 16384     # roberta-large's size, in no time


def test_pair_sums_and_the_matrix_against_numpy():
    rng = np.random.default_rng(0)
    slots = [(t, rng.normal(size=20)) for t in ("a", "b", "a", "c", "b")] + [("c", np.zeros(20))]
    sums = conflict_sums(slots)
    unit = [(t, v / np.linalg.norm(v)) for t, v in slots[:5]]
    for i in range(5):
        for j in range(i + 1, 5):
            key = pair_key(unit[i][0], unit[j][0])
            sums[key][0] -= float(unit[i][1] @ unit[j][1])
            sums[key][1] -= 1
    assert all(abs(total) < 1e-12 and n == 0 for total, n in sums.values())       # every pair, once; zero left out
    records = [{"update": 1, "pairs": {"a|b": [0.5, 2], "a|a": [0.9, 1]}}, {"update": 2, "pairs": {"a|b": [-0.1, 1]}}]
    matrix, counts = conflict_matrix(records, ["a", "b", "c"])
    assert matrix[0, 1] == matrix[1, 0] == pytest.approx(0.4 / 3) and matrix[0, 0] == pytest.approx(0.9)
    assert np.isnan(matrix[2, 2]) and counts[0, 1] == 3 and counts[2].sum() == 0


def test_a_run_samples_every_nth_update_a_resume_drops_later_lines_and_the_report_draws_it(tmp_path):
    """The worker loop with diagnostics.every=2 (one process, two synthetic tasks, 4 updates): lines for
    updates 2 and 4, pairs of the tasks it drew; a restart from update 2 drops line 4; `prefinetune
    report`'s gradient_conflict.json is the mean of the lines' cosines."""
    from prefinetune.finetune.local import one_process_group
    from prefinetune.model.tiny import save_tiny_bert
    from prefinetune.recipe.config import load_recipe
    from prefinetune.report.build import write_conflicts
    from prefinetune.run.driver import prepare_data, resolve_paths
    from prefinetune.run.gradient_conflict import drop_later_lines, read_conflicts
    from prefinetune.run.hooks import RunHooks
    from prefinetune.run.worker import LocalSession, run_worker

    data = load_recipe("recipes/local_cpu.yaml", [
        f"model.name_or_path={save_tiny_bert(tmp_path / 'bert')}", f"run.output_dir={tmp_path / 'out'}",
        "data.synthetic_rows=200", "scaling.num_workers=1", "train.updates=4", "train.slots_per_update=4",
        "train.batch_size=4", "eval.max_rows=8", "diagnostics.every=2", "diagnostics.coordinates=2000"]
    ).model_dump(mode="json")
    data["tasks"] = data["tasks"][:2]
    recipe = resolve_paths(recipe_from_dict(data))
    prepare_data(recipe)
    one_process_group()
    run_worker(recipe, LocalSession(torch.device("cpu")), hooks=RunHooks())
    lines = read_conflicts(recipe.run_dir)
    assert [r["update"] for r in lines] == [2, 4] and all(r["slots"] == 4 for r in lines)
    assert all(sum(n for _, n in r["pairs"].values()) == 4 * 3 / 2 for r in lines)      # every pair of 4 slots
    out = tmp_path / "report"
    out.mkdir()
    names = [t["name"] for t in data["tasks"]]
    assert write_conflicts(recipe.run_dir, names, out)
    report = json.loads((out / "gradient_conflict.json").read_text())
    matrix, _ = conflict_matrix(lines, names)
    assert report["updates"] == [2, 4] and np.allclose(np.array(report["cosine"], dtype=float), matrix,
                                                       equal_nan=True)
    assert (out / "gradient_conflict.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    drop_later_lines(recipe.run_dir, 2)
    assert [r["update"] for r in read_conflicts(recipe.run_dir)] == [2]
    drop_later_lines(recipe.run_dir, 0)
    assert read_conflicts(recipe.run_dir) == []
