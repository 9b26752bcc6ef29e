"""The recipe schema: defaults, errors that name the key, command-line overrides."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny import tiny_recipe  # noqa: E402

from prefinetune.recipe.config import RecipeError, apply_overrides, load_recipe, recipe_from_dict

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path, data) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_fill_what_the_recipe_leaves_out():
    r = recipe_from_dict(tiny_recipe())
    assert r.deepspeed.zero_stage == 2 and r.deepspeed.precision == "auto"
    assert r.model.trust_remote_code is False
    assert r.sampling.policy == "natural"
    assert [t.num_labels for t in r.tasks] == [2, 3, 4]


def test_unknown_key_is_named_with_the_file(tmp_path):
    data = tiny_recipe()
    data["train"]["updatez"] = 3
    with pytest.raises(RecipeError, match=r"r\.yaml.*\n.*key 'train\.updatez': unknown key"):
        load_recipe(_write(tmp_path, data))


def test_bad_value_names_the_nested_key(tmp_path):
    data = tiny_recipe(deepspeed={"zero_stage": 4})
    with pytest.raises(RecipeError, match=r"key 'deepspeed\.zero_stage'.*must be 0, 1 or 2, not 4"):
        load_recipe(_write(tmp_path, data))
    data = tiny_recipe()
    data["tasks"][1]["label_names"] = ["a", "a"]
    with pytest.raises(RecipeError, match=r"key 'tasks\.1\.label_names'.*repeat"):
        load_recipe(_write(tmp_path, data))


def test_zero3_is_refused_saying_why_and_what_to_use(tmp_path):
    with pytest.raises(RecipeError, match=r"key 'deepspeed\.zero_stage'.*zero_stage 3 is not supported: ZeRO-3 keeps "
                       r"every parameter cut.*Use zero_stage 2 .* with model\.gradient_checkpointing: true"):
        load_recipe(_write(tmp_path, tiny_recipe(deepspeed={"zero_stage": 3})))


def test_slots_must_split_evenly_over_workers():
    with pytest.raises(RecipeError, match=r"slots_per_update=6 must be a multiple of scaling\.num_workers=4"):
        recipe_from_dict(tiny_recipe(train={"slots_per_update": 6}, scaling={"num_workers": 4}))


def test_overrides_reach_any_key_and_are_validated(tmp_path):
    path = _write(tmp_path, tiny_recipe())
    r = load_recipe(path, ["train.updates=7", "optim.lr=2e-5", "tasks.0.label_names=[neg, pos]",
                           "scaling.use_gpu=true"])
    assert (r.train.updates, r.optim.lr, r.tasks[0].label_names, r.scaling.use_gpu) == (7, 2e-5, ["neg", "pos"], True)
    with pytest.raises(RecipeError, match=r"key 'train\.updates'"):
        load_recipe(path, ["train.updates=zero"])
    with pytest.raises(RecipeError, match=r"key 'tasks\.9': no list item 9"):
        apply_overrides(tiny_recipe(), ["tasks.9.name=x"])
    with pytest.raises(RecipeError, match="must look like key.sub=value"):
        apply_overrides(tiny_recipe(), ["train.updates"])


def test_missing_file_and_bad_yaml_are_named(tmp_path):
    with pytest.raises(RecipeError, match="nope.yaml does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(RecipeError, match="bad.yaml is not valid YAML"):
        load_recipe(bad)


@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "recipes").glob("*.yaml")))
def test_shipped_recipes_validate_and_say_how_to_run(recipe):
    path = REPO / "recipes" / recipe
    assert path.read_text().startswith("# "), f"{recipe} must open with a comment giving its launch command"
    assert "launch/" in path.read_text().splitlines()[0]
    load_recipe(path)


def test_config_round_trips_as_plain_data():
    r = recipe_from_dict(tiny_recipe())
    assert recipe_from_dict(r.model_dump(mode="json")) == r
