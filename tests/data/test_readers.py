"""Readers: real shared-data files of every family against MANIFEST.json, the catalog, and strict
bad-row handling (classification files; the other families' formats: tests/data/test_family_readers.py).

    python -m pytest tests/data/test_readers.py -q
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefinetune.catalog.shared_data import CATALOG, EVAL_ONLY, catalog_names, catalog_task
from prefinetune.data.readers import BadRowError, TaskSourceError, read_split, split_target
from prefinetune.families.classification import label_id
from prefinetune.recipe.config import TaskConfig


@pytest.fixture(scope="module")
def manifest_rows(data_root) -> dict[str, int]:
    """Rows per file; RACE's rows are passages, and what it trains on are its questions (the file's units)."""
    manifest = json.loads((data_root / "MANIFEST.json").read_text())
    return {f["path"]: f.get("units", {}).get("questions", f["rows"]) for task in manifest for f in task["files"]}


def _task(name: str, **overrides) -> TaskConfig:
    base = {**CATALOG, **EVAL_ONLY}[name]
    if "train" not in base["splits"] and "splits" not in overrides:  # eval-only: any split stands in
        overrides["splits"] = {**base["splits"], "train": next(iter(base["splits"].values()))}
    return TaskConfig.model_validate({**base, **overrides})


def _tmp_task(tmp_path: Path, name: str, content: bytes, **config) -> TaskConfig:
    path = tmp_path / name
    path.write_bytes(content)
    return TaskConfig.model_validate({"name": "t", "label_names": ["neg", "pos"], "splits": {"train": name},
                                      **config})


ALL_SPLITS = [(name, split) for name, d in {**CATALOG, **EVAL_ONLY}.items() for split in d["splits"]]


# ---------------------------------------------------------------- real data


# Rows of the real data that are bad on purpose-built rules: sciq/test.json 270 (correct answer "3"
# is also choice index 3), 719 and 885 (the correct answer repeats a distractor).
EXPECTED_BAD = {("sciq", "test"): [270, 719, 885]}
# Rows without a gold label (SNLI's '-'), skipped and counted: the data's README gives 158 dev, 176 test.
EXPECTED_UNLABELED = {("snli", "dev"): 158, ("snli", "test"): 176}


def _check_classification(task: TaskConfig, records: list[dict]) -> None:
    labels = {r["label"] for r in records}
    assert labels <= set(range(task.num_labels)) and len(labels) >= 2
    pair = task.columns.text_pair is not None
    assert all((r["text_pair"] is not None) == pair for r in records)


def _check_regression(task: TaskConfig, records: list[dict]) -> None:
    labels = [r["label"] for r in records]
    assert all(isinstance(v, float) and 0.0 <= v <= 5.0 for v in labels) and len(set(labels)) > 10
    assert all(r["text"].strip() and r["text_pair"].strip() for r in records)


def _check_multiple_choice(task: TaskConfig, records: list[dict]) -> None:
    assert all(0 <= r["label"] < len(r["choices"]) for r in records)
    assert all(len(r["choices"]) == (task.num_choices or len(r["choices"])) >= 2 for r in records)
    assert len({r["label"] for r in records}) >= 2 or task.name == "sciq"  # SciQ: the answer is choice 0


def _check_span(task: TaskConfig, records: list[dict]) -> None:
    assert len({r["id"] for r in records}) == len(records)
    for r in records:
        assert r["answers"] and all(r["context"][a["answer_start"]:].startswith(a["text"]) for a in r["answers"])


def _check_summarization(task: TaskConfig, records: list[dict]) -> None:
    assert all(r["text"].strip() and r["target"].strip() for r in records)


def _check_tagging(task: TaskConfig, records: list[dict]) -> None:
    assert all(len(r["tokens"]) == len(r["tags"]) >= 1 for r in records)
    used = {t for r in records for t in r["tags"]}
    assert used <= set(range(task.num_labels)) and len(used) > task.num_labels // 2


CHECKS = {"classification": _check_classification, "regression": _check_regression,
          "multiple_choice": _check_multiple_choice, "span": _check_span,
          "summarization": _check_summarization, "tagging": _check_tagging}


def test_conllu_words_match_the_manifest_word_counts(data_root):
    """Multiword-token lines and empty nodes are not words: the words read equal the data's own count."""
    manifest = {f["path"]: f for t in json.loads((data_root / "MANIFEST.json").read_text()) for f in t["files"]}
    task = _task("ud_en_ewt")
    for split in ("train", "dev"):
        path, _ = split_target(task, split)
        records = read_split(task, split, data_root).records
        assert sum(len(r["tokens"]) for r in records) == manifest[path]["units"]["tokens"]
        assert len(records) == manifest[path]["units"]["sentences"]


@pytest.mark.parametrize("name,split", ALL_SPLITS, ids=[f"{n}-{s}" for n, s in ALL_SPLITS])
def test_catalog_rows_match_manifest(data_root, manifest_rows, tmp_path, name, split):
    task = _task(name)
    read = read_split(task, split, data_root, "quarantine", tmp_path / "q.jsonl")
    bad = [json.loads(line)["row"] for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert bad == EXPECTED_BAD.get((name, split), [])
    assert read.unlabeled == EXPECTED_UNLABELED.get((name, split), 0)
    path, articles = split_target(task, split)
    if articles is None:  # xquad_en's article splits: tests/data/test_family_readers.py
        assert len(read.records) + len(bad) + read.unlabeled == manifest_rows[path]
    CHECKS[task.family](task, read.records)


def test_catalog_covers_every_shared_dataset(data_root):
    tasks = {t["task"] for t in json.loads((data_root / "MANIFEST.json").read_text())}
    left_out = {"wsc", "multirc", "rotten_tomatoes"}  # see the catalog's docstring
    assert tasks - left_out <= set(catalog_names())
    assert {f: len(catalog_names(f)) > 0 for f in CHECKS} == {f: True for f in CHECKS}


def test_catalog_task_dicts_validate():
    for name in CATALOG:
        assert TaskConfig.model_validate(catalog_task(name)).name == name
    for name in EVAL_ONLY:
        with pytest.raises(ValueError, match="no train split"):
            catalog_task(name)
    boolq = catalog_task("boolq", splits={"train": "boolq/val.jsonl"})
    assert boolq["label_names"] == ["false", "true"]
    with pytest.raises(KeyError, match="unknown catalog task"):
        catalog_task("squad")


def test_glue_tsv_keeps_quotes_and_known_labels(data_root):
    first = read_split(_task("mrpc"), "train", data_root).records[0]
    assert first["text"].startswith('Amrozi accused his brother , whom he called " the witness "')
    assert first["label"] == 1  # "equivalent"
    cola = read_split(_task("cola"), "dev", data_root).records
    assert cola[-1]["text"].endswith("himself.")  # dev.tsv has no trailing newline
    sst2 = read_split(_task("sst2"), "test", data_root).records  # CRLF line ends
    assert not any(r["text"].endswith("\r") for r in sst2)


def test_bom_needs_utf8_sig(data_root):
    with pytest.raises(TaskSourceError, match="BOM"):
        read_split(_task("mrpc", encoding="utf-8"), "dev", data_root)


def test_trec_latin1_and_per_row_decode_errors(data_root, tmp_path):
    rows = read_split(_task("trec"), "train", data_root).records
    assert "sister\u00f0city" in rows[65]["text"]
    assert rows[0] == {"text": "How did serfdom develop in and then leave Russia ?", "text_pair": None,
                       "label": 2}  # DESC
    as_utf8 = _task("trec", encoding="utf-8")
    with pytest.raises(BadRowError) as err:
        read_split(as_utf8, "train", data_root)
    message = str(err.value)
    assert "trec/train.txt" in message and "data row 66" in message and "field text" in message
    read = read_split(as_utf8, "train", data_root, "quarantine", tmp_path / "q.jsonl")
    assert read.quarantined == 1 and len(read.records) == 5451
    bad = json.loads((tmp_path / "q.jsonl").read_text())
    assert bad["row"] == 66 and "\\xf0" in bad["raw"] and "utf-8" in bad["reason"]


def test_json_booleans_are_label_names(data_root):
    wic = read_split(_task("wic"), "dev", data_root).records
    raw = [json.loads(line)["label"] for line in (data_root / "wic/val.jsonl").read_text().splitlines()]
    assert [r["label"] for r in wic] == [int(v) for v in raw]


# ---------------------------------------------------------------- bad rows in small files


TSV = {"format": "tsv", "columns": {"text": "sentence", "label": "label"}}


@pytest.mark.parametrize("body,row,line,field,reason", [
    (b"sentence\tlabel\ngood one\t1\nonly one field\n", 2, 3, "(row)", "1 fields, expected 2"),
    (b"sentence\tlabel\ngood\t1\nok\t0\nbad label\t7\n", 3, 4, "label", "outside 0..1"),
    (b"sentence\tlabel\ngood\t1\nbad label\tmaybe\n", 2, 3, "label", "neither a label name"),
    (b"sentence\tlabel\n   \t1\n", 1, 2, "text", "empty text"),
    (b"sentence\tlabel\ngood\t1\ncaf\xe9 au lait\t0\n", 2, 3, "text", "not valid utf-8"),
    (b"sentence\tlabel\ngood\t1\n\n", 2, 3, "(row)", "blank line"),
])
def test_bad_rows_raise_naming_file_row_field(tmp_path, body, row, line, field, reason):
    task = _tmp_task(tmp_path, "bad.tsv", body, **TSV)
    with pytest.raises(BadRowError) as err:
        read_split(task, "train", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "bad.tsv") in message
    assert f"data row {row} (1-based, header not counted; line {line})" in message
    assert f"field {field}" in message and reason in message
    assert err.value.bad.row == row and err.value.bad.field.startswith(field)


def test_quarantine_sets_aside_and_counts(tmp_path):
    body = b"sentence\tlabel\ngood\t1\nbad\t9\n\t0\nfine\tpos\ncaf\xe9\t1\nlast\t0\n"
    task = _tmp_task(tmp_path, "mixed.tsv", body, **TSV)
    read = read_split(task, "train", tmp_path, "quarantine", tmp_path / "out" / "q.jsonl")
    assert [r["text"] for r in read.records] == ["good", "fine", "last"]
    assert [r["label"] for r in read.records] == [1, 1, 0]
    assert read.quarantined == 3
    bad = [json.loads(line) for line in (tmp_path / "out" / "q.jsonl").read_text().splitlines()]
    assert [b["row"] for b in bad] == [2, 3, 5]
    assert set(bad[0]) == {"file", "row", "unit", "line", "field", "reason", "raw"} and bad[0]["unit"] == "data row"
    assert bad[0]["raw"] == "bad\t9" and bad[2]["raw"] == "caf\\xe9\t1"
    with pytest.raises(ValueError, match="quarantine_path"):
        read_split(task, "train", tmp_path, "quarantine")


def test_csv_quoting_and_multiline_rows(tmp_path):
    body = b'text,label\n"hello, world",1\n"two\nlines",0\n"",1\n'
    task = _tmp_task(tmp_path, "q.csv", body, format="csv", columns={"text": "text", "label": "label"})
    with pytest.raises(BadRowError, match=r"data row 3 \(1-based, header not counted; line 5\)"):
        read_split(task, "train", tmp_path)
    read = read_split(task, "train", tmp_path, "quarantine", tmp_path / "q.jsonl")
    assert [r["text"] for r in read.records] == ["hello, world", "two\nlines"]


def test_headerless_int_columns_and_bad_column_specs(tmp_path):
    task = _tmp_task(tmp_path, "h.tsv", b"pos\ta b\nneg\tc d\n", format="tsv", header=False,
                     columns={"text": 1, "label": 0})
    assert [r["label"] for r in read_split(task, "train", tmp_path).records] == [1, 0]
    named = _tmp_task(tmp_path, "h.tsv", b"pos\ta b\n", format="tsv", header=False,
                      columns={"text": "text", "label": 0})
    with pytest.raises(TaskSourceError, match="no header"):
        read_split(named, "train", tmp_path)
    missing = _tmp_task(tmp_path, "m.tsv", b"a\tb\nx\t1\n", format="tsv", columns={"text": "s", "label": "b"})
    with pytest.raises(TaskSourceError, match="no column 's'"):
        read_split(missing, "train", tmp_path)
    with pytest.raises(TaskSourceError, match="does not exist"):
        read_split(TaskConfig.model_validate({**task.model_dump(), "splits": {"train": "nope.tsv"}}),
                   "train", tmp_path)
    with pytest.raises(TaskSourceError, match="no split 'dev'"):
        read_split(task, "dev", tmp_path)


def test_jsonl_bad_rows(tmp_path):
    lines = [b'{"s": "fine", "y": "pos"}', b'{"s": "no label"}', b"{not json", b'{"s": 3, "y": 0}',
             b'["a", 1]', b'{"s": "ok", "y": 1.0}']
    task = _tmp_task(tmp_path, "t.jsonl", b"\n".join(lines) + b"\n", columns={"text": "s", "label": "y"})
    read = read_split(task, "train", tmp_path, "quarantine", tmp_path / "q.jsonl")
    assert read.records == [{"text": "fine", "text_pair": None, "label": 1}]
    bad = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert [(b["row"], b["field"]) for b in bad] == [
        (2, "label (column 'y')"), (3, "(json)"), (4, "text (column 's')"), (5, "(json)"),
        (6, "label (column 'y')")]
    with pytest.raises(BadRowError, match=r"t.jsonl: data row 2 .*field label \(column 'y'\): missing"):
        read_split(task, "train", tmp_path)


def test_pair_task_needs_both_texts(tmp_path):
    body = b'{"a": "x", "b": "y", "y": 0}\n{"a": "x", "y": 1}\n'
    task = _tmp_task(tmp_path, "p.jsonl", body, columns={"text": "a", "text_pair": "b", "label": "y"})
    with pytest.raises(BadRowError, match="data row 2 .*field text_pair"):
        read_split(task, "train", tmp_path)


def test_json_parquet_and_txt_formats(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps([{"s": "a", "y": "neg"}, {"s": "b", "y": 1}]))
    pq.write_table(pa.table({"s": ["a", "b", "c"], "y": [0, 1, 0]}), tmp_path / "d.parquet")
    (tmp_path / "d.txt").write_text("1 good film\n0 bad film\nno label here\n")
    as_json = TaskConfig(name="j", label_names=["neg", "pos"], format="json", splits={"train": "d.json"},
                         columns={"text": "s", "label": "y"})
    assert [r["label"] for r in read_split(as_json, "train", tmp_path).records] == [0, 1]
    as_parquet = as_json.model_copy(update={"format": "parquet", "splits": {"train": "d.parquet"}})
    assert [r["text"] for r in read_split(as_parquet, "train", tmp_path).records] == ["a", "b", "c"]
    as_txt = TaskConfig(name="x", label_names=["neg", "pos"], format="txt", splits={"train": "d.txt"},
                        line_pattern=r"(?P<y>[01]) (?P<s>.*)", columns={"text": "s", "label": "y"})
    with pytest.raises(BadRowError, match="data row 3 .*does not match line_pattern"):
        read_split(as_txt, "train", tmp_path)


def test_hub_format_reads_through_load_dataset(tmp_path):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    rows = [{"sentence": f"text {i}", "label": i % 2} for i in range(5)]
    for name in ("train", "validation"):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = TaskConfig(name="h", label_names=["neg", "pos"], format="hub", hub={"path": str(folder)},
                      splits={"train": "train", "dev": "validation"}, columns={"text": "sentence", "label": "label"})
    read = read_split(task, "dev", None)
    assert [r["label"] for r in read.records] == [0, 1, 0, 1, 0]
    assert read.source.startswith("hub:") and "[validation]" in read.source


def test_label_rules():
    task = TaskConfig(name="l", label_names=["neg", "pos"], splits={"train": "x"},
                      columns={"text": "t", "label": "y"})
    assert [label_id(v, task) for v in ("neg", "pos", 0, 1, "0", "1")] == [0, 1, 0, 1, 0, 1]
    for bad in ("2", 2, -1, "-1", "POS", 1.0, None, True):
        with pytest.raises(ValueError):
            label_id(bad, task)
    mapped = task.model_copy(update={"label_map": {"1": "pos", "-1": "neg", "true": "pos"}})
    assert [label_id(v, mapped) for v in ("1", 1, "-1", -1, True)] == [1, 1, 0, 0, 1]
    with pytest.raises(ValueError, match="not a key of label_map"):
        label_id("pos", mapped)
    numeric_names = TaskConfig(name="n", label_names=["1", "0"], splits={"train": "x"},
                               columns={"text": "t", "label": "y"})
    assert label_id("1", numeric_names) == 0  # a string equal to a label name is that name


def test_a_role_can_join_several_columns(tmp_path):
    """MultiRC as pairs: text = paragraph + question (joined by a space), text_pair = the answer."""
    from prefinetune.recipe.config import TaskConfig

    rows = [{"paragraph": "Tom went home.", "question": "Who went?", "answer": "Tom", "label": 1},
            {"paragraph": "Tom went home.", "question": "", "answer": "Ann", "label": 0}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    task = TaskConfig.model_validate({
        "name": "multirc", "label_names": ["false", "true"], "splits": {"train": "m.jsonl"},
        "columns": {"text": ["paragraph", "question"], "text_pair": "answer", "label": "label"}})
    with pytest.raises(BadRowError, match=r"row 2.*text\[1\].*empty text"):
        read_split(task, "train", tmp_path)
    (tmp_path / "m.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert read_split(task, "train", tmp_path).records == [
        {"text": "Tom went home. Who went?", "text_pair": "Tom", "label": 1}]


def test_rows_selector_cuts_one_file_into_splits(data_root):
    """`#rows=START:STOP` on any format: two selections of qnli's dev file partition it, in file order,
    and match reading the whole file; a bad row outside the selection is not read."""
    whole = read_split(_task("qnli"), "dev", data_root).records
    task = _task("qnli", splits={"train": "qnli/dev.tsv#rows=0:4000", "dev": "qnli/dev.tsv#rows=4000:"})
    train, dev = (read_split(task, s, data_root) for s in ("train", "dev"))
    assert len(train.records) == 4000 and len(dev.records) == len(whole) - 4000
    assert train.records + dev.records == whole
    assert dev.source.endswith("(rows 4000:)")


def test_rows_selector_skips_unselected_bad_rows_and_checks_bounds(tmp_path):
    good = b"".join(f'{{"text": "t{i}", "label": "pos"}}\n'.encode() for i in range(4))
    body = good + b"not json\n" + good
    task = _tmp_task(tmp_path, "t.jsonl", body, format="jsonl", columns={"text": "text", "label": "label"})
    first = task.model_copy(update={"splits": {"train": "t.jsonl#rows=1:3"}})
    assert [r["text"] for r in read_split(first, "train", tmp_path).records] == ["t1", "t2"]
    with pytest.raises(BadRowError, match=r"data row 5 .*line 5"):
        read_split(task.model_copy(update={"splits": {"train": "t.jsonl#rows=2:"}}), "train", tmp_path)
    with pytest.raises(TaskSourceError, match=r"#rows=-2: needs bounds >= 0"):
        read_split(task.model_copy(update={"splits": {"train": "t.jsonl#rows=-2:"}}), "train", tmp_path)
    with pytest.raises(TaskSourceError, match="#articles= selects articles of a squad file"):
        read_split(task.model_copy(update={"splits": {"train": "t.jsonl#articles=0:2"}}), "train", tmp_path)
