"""Fuzzing what users give: seeded random malformations of a valid recipe (unknown keys, wrong types,
negative sizes, empty or repeated tasks) and of task files (broken JSON, missing fields, labels not in
the label set, wrong field counts). Each must end in the project's own error naming the key, or the file
and row, never in an exception from deep inside a library.

    python -m pytest tests/test_fuzz_inputs.py -q
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from prefinetune.data.readers import BadRowError, read_split
from prefinetune.recipe.config import RecipeError, load_recipe, recipe_from_dict

BASE = load_recipe("recipes/shared_data_no_summ_cpu.yaml").model_dump(mode="json")
POSITIVE = ["train.updates", "train.slots_per_update", "train.batch_size", "train.log_every", "model.max_length",
            "eval.every_updates", "eval.batch_size", "checkpoint.every_updates", "checkpoint.keep",
            "scaling.num_workers", "data.num_proc", "optim.lr"]
WRONG = {int: "many", float: "lots", bool: "perhaps", str: {"a": 1}, list: 7}


def _leaves(data, prefix=""):
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _leaves(v, f"{prefix}{k}.")
    elif isinstance(data, list) and data and isinstance(data[0], dict):
        for i, v in enumerate(data):
            yield from _leaves(v, f"{prefix}{i}.")
    else:
        yield prefix[:-1], data


def _set(data, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        data = data[int(p)] if isinstance(data, list) else data[p]
    data[int(last) if isinstance(data, list) else last] = value


def _mutations(seed: int, count: int):
    rng = np.random.default_rng(seed)
    typed = [(k, v) for k, v in _leaves(BASE) if type(v) in WRONG and v is not None and not k.endswith("seed")]
    for _ in range(count):
        data, kind = copy.deepcopy(BASE), rng.choice(["unknown", "type", "negative", "empty", "duplicate"])
        if kind == "unknown":
            section = str(rng.choice(["run", "model", "data", "train", "optim", "eval", "tasks.0", "tasks.3.columns"]))
            key = f"{section}.bogus_{rng.integers(1000)}"
            _set(data, key, 1)
        elif kind == "type":   # a column may be a name, an index or a list of them: only a mapping is wrong
            key, value = typed[rng.integers(len(typed))]
            _set(data, key, {"a": 1} if ".columns." in key else WRONG[type(value)])
        elif kind == "negative":
            key = str(rng.choice(POSITIVE))
            _set(data, key, -int(rng.integers(0, 5)))
        elif kind == "empty":
            key, data["tasks"] = "tasks", []
        else:
            i, j = rng.choice(len(data["tasks"]), size=2, replace=False)
            data["tasks"][j]["name"] = data["tasks"][i]["name"]
            key = "tasks repeat a name"
        yield kind, key, data


@pytest.mark.parametrize("seed", range(4))
def test_malformed_recipes_are_refused_naming_the_key(seed):
    for kind, key, data in _mutations(seed, 60):
        with pytest.raises(RecipeError) as caught:
            recipe_from_dict(data, "fuzz.yaml")
        message = str(caught.value)
        assert "fuzz.yaml" in message and key.split(".")[0] in message, (kind, key, message)
        if kind in ("unknown", "type", "negative"):
            assert f"key '{key}'" in message, (kind, key, message)


def _rows(rng, n: int) -> list[str]:
    return [json.dumps({"text": f"sentence {i}", "label": str(rng.choice(["neg", "pos"]))}) for i in range(n)]


def _broken(rng, line: str) -> tuple[str, str]:
    kind = rng.choice(["json", "missing", "label", "type", "empty"])
    row = json.loads(line)
    if kind == "json":
        return line[: len(line) // 2], "not valid JSON"
    if kind == "missing":
        return json.dumps({"label": row["label"]}), "text"
    if kind == "label":
        return json.dumps({**row, "label": "neutral"}), "label"
    if kind == "type":
        return json.dumps({**row, "text": {"nested": 1}}), "text"
    return json.dumps({**row, "text": "   "}), "text"


@pytest.mark.parametrize("seed", range(3))
def test_malformed_rows_are_refused_naming_file_row_and_field(tmp_path, seed):
    from prefinetune.recipe.config import TaskConfig

    rng = np.random.default_rng(seed)
    task = TaskConfig.model_validate({"name": "t", "format": "jsonl", "label_names": ["neg", "pos"],
                                      "splits": {"train": "t.jsonl"}, "columns": {"text": "text", "label": "label"}})
    for case in range(25):
        lines = _rows(rng, 12)
        row = int(rng.integers(len(lines)))
        lines[row], field = _broken(rng, lines[row])
        path = tmp_path / f"case{case}" / "t.jsonl"
        path.parent.mkdir()
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(BadRowError) as caught:
            read_split(task, "train", path.parent)
        message = str(caught.value)
        assert str(path) in message and f"data row {row + 1} " in message and field in message, message


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    """A run folder under a regular file (so not writable, even as root): the error names the key and the
    folder, before data preparation or Ray start."""
    from prefinetune.run.driver import run

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    recipe = load_recipe("recipes/local_cpu.yaml", [f"run.output_dir={blocker}"])
    with pytest.raises(RecipeError, match=rf"run.output_dir: cannot write to {blocker}/local_cpu \(Not a directory\)"):
        run(recipe)
    assert blocker.read_text() == "not a folder"


def test_a_shards_folder_that_cannot_be_written_is_one_line_from_every_entry(tmp_path, capsys):
    """data.shards_dir under a regular file: `prefinetune prepare` (and so data_prep/prepare.py and
    --prepare-only) says so in one line and exits 2; a run refuses it before Ray starts."""
    from prefinetune.cli.prepare import main as prepare_main
    from prefinetune.run.driver import run

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    overrides = [f"data.shards_dir={blocker}/shards", f"run.output_dir={tmp_path / 'out'}", "data.synthetic_rows=50"]
    assert prepare_main(["--recipe", "recipes/local_cpu.yaml", "--quiet", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: data.shards_dir: cannot write to {blocker}/shards (Not a directory)"), err
    assert err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(RecipeError, match=rf"data.shards_dir: cannot write to {blocker}/shards"):
        run(load_recipe("recipes/local_cpu.yaml", overrides))
