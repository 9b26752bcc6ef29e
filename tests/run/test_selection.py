"""The run's score (eval.select), early stopping (eval.patience) and the best checkpoint: the score and
its ties, patience's count and its state across a resume, retention that keeps the best checkpoints and
the newest, the choice of the best, the recipe's errors; and patience stopping a real one-process run
whose score cannot move (lr 1e-30) with the reason on the console. (The best checkpoint exported by a
real Ray run: tests/test_main_job.py.)

    python -m pytest tests/run/test_selection.py -q
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny import tiny_recipe  # noqa: E402

from prefinetune.recipe.config import RecipeError, load_recipe, recipe_from_dict
from prefinetune.run.checkpoints import stale
from prefinetune.run.selection import Patience, best_checkpoint, score, score_record, write_score


def _recipe(metric: str = "mean", mode: str = "max", patience: int | None = None, **sections):
    return recipe_from_dict(tiny_recipe(eval={"every_updates": 2, "select": {"metric": metric, "mode": mode},
                                              "patience": patience},
                                        checkpoint={"every_updates": 4}, **sections))


METRICS = {"dev/two/accuracy": 0.5, "dev/two/f1": 0.1, "dev/two/rows": 40, "dev/three/accuracy": 0.8,
           "dev/four/accuracy": 0.2, "test/two/accuracy": 1.0}


def test_the_score_is_one_metric_or_the_mean_of_each_tasks_first():
    assert score(METRICS, _recipe()) == pytest.approx((0.5 + 0.8 + 0.2) / 3)     # f1, rows and test left out
    assert score(METRICS, _recipe("three/accuracy")) == 0.8
    assert score({"dev/two/accuracy": 0.5}, _recipe("three/accuracy")) is None


def test_patience_counts_evaluations_without_improvement_and_survives_a_resume():
    recipe = _recipe("two/accuracy", "min", patience=2)
    patience = Patience(recipe)
    said = [patience.after_eval(u, {"dev/two/accuracy": a}) for u, a in ((2, 0.6), (4, 0.5), (6, 0.5))]
    assert said == [None, None, None]                       # 0.5 is better (min); the tie is not
    resumed = Patience(recipe)
    resumed.load_state(patience.state())                      # what a checkpoint keeps
    stop = resumed.after_eval(8, {"dev/two/accuracy": 0.7})
    assert stop == ("early stop after update 8: dev two/accuracy (min) has not improved for 2 evaluations "
                    "(eval.patience=2); the best, 0.5000, was at update 4")


def test_a_nan_score_is_never_the_best_and_a_missing_metric_stops_the_run():
    from prefinetune.run.selection import SelectError

    patience = Patience(_recipe("two/accuracy", patience=2))
    assert patience.after_eval(2, {"dev/two/accuracy": float("nan")}) is None     # pearson of constant outputs
    assert patience.after_eval(4, {"dev/two/accuracy": 0.1}) is None               # an improvement on NaN
    assert patience.best == 0.1 and patience.waited == 0
    with pytest.raises(SelectError, match=r"eval.select.metric 'two/accuracy' is not among the dev metrics of "
                                          r"update 6: \['three/accuracy'\]"):
        patience.after_eval(6, {"dev/three/accuracy": 0.5})
    # a resume whose eval.select names another score starts counting afresh
    other = Patience(_recipe("three/accuracy", patience=2))
    other.load_state(patience.state())
    assert other.best is None and other.waited == 0


def test_a_checkpoint_saved_by_an_early_stop_is_not_resumed_unless_patience_is_raised():
    from prefinetune.run.run_folder import _refuse_stopped_early

    state = {"patience": {"select": ["mean", "max"], "best": 0.7, "best_update": 4, "waited": 2}}
    with pytest.raises(RecipeError, match=r"is where the run stopped early \(eval.patience=2: 2 evaluations"):
        _refuse_stopped_early(_recipe(patience=2), "ckpt", state)
    _refuse_stopped_early(_recipe(patience=3), "ckpt", state)          # raised: it trains on


def test_selection_in_a_finetune_recipe_exports_the_last_checkpoint_only():
    with pytest.raises(RecipeError, match="with eval.select set export.which: last"):
        load_recipe("recipes/finetune/rte.yaml", ["eval.select={metric: rte/accuracy}", "eval.every_updates=1"])
    recipe = load_recipe("recipes/finetune/rte.yaml", ["eval.select={metric: rte/accuracy}", "eval.every_updates=1",
                                                       "export.which=last", "eval.patience=2"])
    assert recipe.eval.patience == 2


def _checkpoint(root: Path, name: str, update: int, value: float | None, recipe) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "latest").write_text(f"update-{update:07d}")
    if value is not None:
        write_score(folder, score_record(update, {"dev/two/accuracy": value}, recipe))
    return folder


def test_retention_keeps_the_best_and_the_newest_and_the_best_is_chosen(tmp_path):
    recipe = _recipe("two/accuracy")
    a, b, c, d = (_checkpoint(tmp_path, f"checkpoint_{u}", u, v, recipe)
                  for u, v in ((4, 0.7), (8, 0.9), (12, 0.7), (16, 0.6)))
    assert stale(tmp_path, 2, d, "max") == [c]                # best two: b (0.9), a (0.7, earlier than c); d newest
    assert stale(tmp_path, 1, d, "max") == [c, a]
    assert stale(tmp_path, 2, d) == [b, a]                    # without a score: the two newest
    assert best_checkpoint([a, b, c, d], "max") == b and best_checkpoint([a, c, d], "min") == d
    assert best_checkpoint([a, c], "max") == a                # a tie: the earlier update
    unscored = _checkpoint(tmp_path, "checkpoint_20", 20, None, recipe)
    assert best_checkpoint([unscored], "max") is None


@pytest.mark.parametrize("sections, message", [
    ({"eval": {"patience": 3}}, "eval.patience needs eval.select"),
    ({"export": {"which": "best"}}, "export.which: best needs eval.select"),
    ({"eval": {"select": {"metric": "nope/accuracy"}}}, "eval.select.metric 'nope/accuracy' is 'mean' or <task>/"),
    ({"eval": {"every_updates": 3, "select": {"metric": "mean"}}, "checkpoint": {"every_updates": 4}},
     "checkpoint.every_updates=4 must be a multiple of eval.every_updates=3"),
])
def test_bad_selection_keys_are_refused(sections, message):
    with pytest.raises(RecipeError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        recipe_from_dict(tiny_recipe(**sections))


def test_patience_stops_a_run_whose_score_cannot_move(tmp_path, data_root, capfd):
    """RTE on a tiny BERT with lr 1e-30: the held-out accuracy never changes, so with patience 2 the run
    stops after its third evaluation (update 3), says why, and its last record is that update's."""
    from prefinetune.finetune.local import finetune_in_process
    from prefinetune.finetune.resolve import resolve_finetune
    from prefinetune.model.tiny import save_tiny_bert
    from prefinetune.run.driver import prepare_data, resolve_paths

    bert = save_tiny_bert(tmp_path / "bert")
    recipe = resolve_paths(load_recipe("recipes/finetune/rte.yaml", [
        f"model.name_or_path={bert}", f"data.root={data_root}", f"run.output_dir={tmp_path / 'out'}",
        "finetune.epochs=0.05", "eval.max_rows=16", "train.log_every=1", "finetune.eval_at_start=false",
        "optim.lr=1e-30", "eval.every_updates=1", "eval.select={metric: rte/accuracy, mode: max}",
        "eval.patience=2", "export.which=last"]))
    prepare_data(recipe)
    recipe = resolve_finetune(recipe)
    assert recipe.train.updates > 4
    finetune_in_process(recipe)
    records = [json.loads(line) for line in (recipe.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(r["update"] for r in records) == 3
    said = "".join(capfd.readouterr())
    split = next(k.split("/")[0] for r in records for k in r if k.endswith("/rte/accuracy"))   # the select split
    assert f"[prefinetune] early stop after update 3: {split} rte/accuracy (max) has not improved for 2 evaluations" \
        in said


class _SavingSession:
    """One process that saves a checkpoint at each report as Ray Train's workers do (DeepSpeed state under
    the update's tag, and the score as select.json), one folder per update."""

    rank, world, saves_checkpoints = 0, 1, True

    def __init__(self, folder: Path):
        import torch

        self.device, self.folder, self.metrics, self.saved = torch.device("cpu"), folder, {}, []

    def checkpoint(self, resume_from, experiment):
        return None

    def report(self, engine, update, client_state, metrics, score=None):
        from prefinetune.run.selection import write_score
        from prefinetune.run.worker import checkpoint_tag

        path = self.folder / f"checkpoint_{update:06d}"
        engine.save_checkpoint(str(path), tag=checkpoint_tag(update), client_state=client_state)
        if score is not None:
            write_score(path, score)
        self.metrics = dict(metrics)
        self.saved.append(path)


def test_a_score_that_peaks_mid_run_exports_that_checkpoints_weights(tmp_path):
    """A tiny BERT on one synthetic 4-class task, trained with a large learning rate (0.1) and scored and
    checkpointed at every update: its dev accuracy rises and falls, and the export is the checkpoint of
    its best score (checked to be one, strictly best, neither the first nor the last), weight for weight,
    with the card saying which update and why."""
    from types import SimpleNamespace

    import torch

    from prefinetune.export import load_exported, read_tasks_info, state_dict_from_checkpoint
    from prefinetune.finetune.local import one_process_group
    from prefinetune.model.tiny import save_tiny_bert
    from prefinetune.run.driver import choose_export, export_run, prepare_data, resolve_paths
    from prefinetune.run.hooks import RunHooks
    from prefinetune.run.selection import read_score
    from prefinetune.run.worker import run_worker

    data = load_recipe("recipes/local_cpu.yaml", [
        f"model.name_or_path={save_tiny_bert(tmp_path / 'bert', seed=2)}", f"run.output_dir={tmp_path / 'out'}",
        "data.synthetic_rows=300", "scaling.num_workers=1", "train.updates=10", "train.slots_per_update=2",
        "train.batch_size=8", "optim.lr=0.1", "optim.warmup_updates=0", "eval.every_updates=1",
        "checkpoint.every_updates=1", "checkpoint.keep=10", "eval.max_rows=64",
        "eval.select={metric: syn_topic/accuracy, mode: max}"]).model_dump(mode="json")
    data["tasks"] = [t for t in data["tasks"] if t["name"] == "syn_topic"]
    recipe = resolve_paths(recipe_from_dict(data))
    prepare_data(recipe)
    session = _SavingSession(tmp_path / "ckpt")
    one_process_group()
    run_worker(recipe, session, hooks=RunHooks())
    scores = [read_score(p)["score"] for p in session.saved]
    best = scores.index(max(scores))
    assert 0 < best < len(scores) - 1 and scores.count(max(scores)) == 1, scores      # a peak in the middle
    result = SimpleNamespace(metrics=session.metrics, checkpoint=SimpleNamespace(path=str(session.saved[-1])))
    chosen, metrics, exported = choose_export(recipe, result)
    assert Path(chosen.path) == session.saved[best] and exported["update"] == best + 1
    out = export_run(recipe, chosen, tmp_path / "export", metrics, exported)
    model, _ = load_exported(out)
    want = state_dict_from_checkpoint(session.saved[best])
    last = state_dict_from_checkpoint(session.saved[-1])
    got = model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert any(not torch.equal(got[k], last[k]) for k in last)
    assert read_tasks_info(out)["exported"]["update"] == best + 1
    assert f"Exported: update {best + 1}, the best dev syn_topic/accuracy (max: {max(scores):.4f})" in \
        (out / "README.md").read_text()

