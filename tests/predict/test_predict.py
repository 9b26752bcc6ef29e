"""`prefinetune predict` on an export of a tiny random BERT with a head per family: benchmark-style test
files (GLUE tsv with `index`, SuperGLUE jsonl with `idx`, no labels) and labelled files are predicted,
each prediction checked against the export's stock per-task model (transformers' own class, run on the
raw text by its own tokenizer), and the submission files against the benchmarks' layouts (GLUE: a tsv
`index<TAB>prediction`, class ids / label names / 3-place scores; SuperGLUE: jsonl {idx, label}).

    python -m pytest tests/predict/test_predict.py -q
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from prefinetune.cli import main
from prefinetune.export import export_model
from prefinetune.model.multitask import build_model
from prefinetune.model.source import load_tokenizer
from prefinetune.model.tiny import save_tiny_bert
from prefinetune.recipe.config import recipe_from_dict

NLI2 = ["entailment", "not_entailment"]
PAIRS = [("the cat sat on the mat", "a cat sat"), ("nobody came to the party", "the party was full"),
         ("it rained all day long", "the ground is wet"), ("a man plays a guitar", "a woman sings")]
SENTENCES = ["the movie was good", "bad and very long", "it is not a cat", "dogs ran far away", "what a day"]
QUESTIONS = [{"idx": 7 + i, "question": f"is it {w}", "passage": f"the weather was {w} today"}
             for i, w in enumerate(["cold", "warm", "wet"])]
COPA = [{"idx": 3 + i, "premise": p, "question": "effect", "choice1": a, "choice2": b} for i, (p, a, b) in
        enumerate([("the glass fell", "it broke", "it sang"), ("he was hungry", "he ate", "he slept")])]
NER = [{"words": ["Ada", "Lovelace", "lived", "in", "London"], "tags": ["B-PER", "I-PER", "O", "O", "B-LOC"]},
       {"words": ["Paris", "is", "big"], "tags": ["B-LOC", "O", "O"]}]
SQUAD = [{"id": "q1", "context": "The cat sat on the mat near the door.", "question": "Where did the cat sit?",
          "answers": [{"text": "on the mat", "answer_start": 12}]}]


def _tsv(path: Path, header: list[str], rows: list[list]) -> None:
    path.write_text("\n".join("\t".join(map(str, r)) for r in [header] + rows) + "\n", encoding="utf-8")


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _task(name, family="classification", **fields) -> dict:
    return {"name": name, "family": family, "format": "jsonl", "splits": {"train": "none.jsonl", "test": f"{name}.x"},
            **fields}


def recipe_dict(model: Path, data: Path) -> dict:
    """GLUE/SuperGLUE test files as the benchmarks ship them (no labels), and labelled ones."""
    _tsv(data / "rte.tsv", ["index", "sentence1", "sentence2"], [[10 + i, a, b] for i, (a, b) in enumerate(PAIRS)])
    _tsv(data / "cola.tsv", ["index", "sentence"], [[i, s] for i, s in enumerate(SENTENCES)])
    _tsv(data / "stsb.tsv", ["index", "sentence1", "sentence2"], [[i, a, b] for i, (a, b) in enumerate(PAIRS)])
    _jsonl(data / "boolq.jsonl", QUESTIONS)
    _jsonl(data / "copa.jsonl", COPA)
    _jsonl(data / "ner.jsonl", NER)
    _jsonl(data / "squad.jsonl", SQUAD)
    pair = {"text": "sentence1", "text_pair": "sentence2", "label": "label"}
    tasks = [
        _task("rte", label_names=NLI2, format="tsv", splits={"train": "none.tsv", "test": "rte.tsv"}, columns=pair,
              unlabeled_splits=["test"], split_columns={"test": {"text": "sentence1", "text_pair": "sentence2",
                                                                 "id": "index"}}),
        _task("cola", label_names=["unacceptable", "acceptable"], format="tsv",
              splits={"train": "none.tsv", "test": "cola.tsv"}, columns={"text": "sentence", "label": "label"},
              unlabeled_splits=["test"]),
        _task("stsb", "regression", format="tsv", splits={"train": "none.tsv", "test": "stsb.tsv"}, columns=pair,
              unlabeled_splits=["test"]),
        _task("boolq", label_names=["false", "true"], splits={"train": "none.jsonl", "test": "boolq.jsonl"},
              columns={"text": "question", "text_pair": "passage", "label": "label", "id": "idx"},
              unlabeled_splits=["test"]),
        _task("copa", "multiple_choice", num_choices=2, splits={"train": "none.jsonl", "test": "copa.jsonl"},
              columns={"text": "premise", "text_pair": "question", "choices": ["choice1", "choice2"],
                       "label": "label", "id": "idx"}, unlabeled_splits=["test"]),
        _task("ner", "tagging", label_names=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"],
              splits={"train": "none.jsonl", "test": "ner.jsonl"}, columns={"tokens": "words", "tags": "tags"}),
        _task("squad", "span", splits={"train": "none.jsonl", "test": "squad.jsonl"},
              columns={"context": "context", "question": "question", "answers": "answers", "id": "id"}),
    ]
    return {"model": {"name_or_path": str(model), "max_length": 48, "head_dropout": 0.0},
            "data": {"root": str(data)}, "tasks": tasks, "export": {"task_folders": "all"},
            "train": {"updates": 1, "slots_per_update": 1, "batch_size": 2}, "scaling": {"num_workers": 1}}


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    (root / "data").mkdir()
    model_dir = save_tiny_bert(root / "tiny-bert", seed=3)
    spec = recipe_dict(model_dir, root / "data")
    recipe = recipe_from_dict(spec)
    model = build_model(recipe)
    torch.manual_seed(4)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("backbone."):
                p.normal_(std=0.5)          # heads far from their init, so every prediction differs
    export = export_model(model.eval(), load_tokenizer(str(model_dir)), root / "export", recipe)
    (root / "recipe.yaml").write_text(json.dumps(spec), encoding="utf-8")
    assert main(["predict", "--model", str(export), "--recipe", str(root / "recipe.yaml"), "--batch-size", "3"]) == 0
    out = root / "predictions" / "test"
    lines = {p.stem: [json.loads(x) for x in p.read_text().splitlines()] for p in out.glob("*.jsonl")}
    return export, out, lines


def _stock(export: Path, task: str, auto):
    return auto.from_pretrained(export / "tasks" / task).eval(), load_tokenizer(str(export / "tasks" / task))


def test_classification_and_regression_match_the_stock_models(predicted):
    from transformers import AutoModelForSequenceClassification

    export, _, lines = predicted
    cases = {"rte": PAIRS, "cola": [(s, None) for s in SENTENCES], "stsb": PAIRS,
             "boolq": [(q["question"], q["passage"]) for q in QUESTIONS]}
    for task, texts in cases.items():
        model, tok = _stock(export, task, AutoModelForSequenceClassification)
        firsts, seconds = [a for a, _ in texts], [b for _, b in texts]
        enc = tok(firsts, seconds if seconds[0] is not None else None, padding=True, truncation=True,
                  max_length=48, return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits
        got = lines[task]
        assert len(got) == len(texts) and all("gold" not in g for g in got), task   # unlabeled: no gold
        if task == "stsb":
            torch.testing.assert_close(torch.tensor([g["prediction"] for g in got]), logits[:, 0], atol=1e-5, rtol=0)
            assert all(g["score"] is None for g in got)
            continue
        probs = torch.softmax(logits, -1)
        names = model.config.id2label
        assert [g["prediction"] for g in got] == [names[int(i)] for i in probs.argmax(-1)], task
        torch.testing.assert_close(torch.tensor([g["score"] for g in got]), probs.max(-1).values, atol=1e-5, rtol=0)
    assert [g["id"] for g in lines["rte"]] == [str(10 + i) for i in range(len(PAIRS))]      # the index column
    assert [g["id"] for g in lines["cola"]] == [str(i + 1) for i in range(len(SENTENCES))]  # row numbers
    assert [g["id"] for g in lines["boolq"]] == [q["idx"] for q in QUESTIONS]               # JSON ints kept


def test_choices_tags_and_answers_match_the_stock_models(predicted):
    from transformers import AutoModelForMultipleChoice, AutoModelForQuestionAnswering, AutoModelForTokenClassification

    export, _, lines = predicted
    model, tok = _stock(export, "copa", AutoModelForMultipleChoice)
    for row, got in zip(COPA, lines["copa"]):
        enc = tok([f"{row['premise']} {row['question']}"] * 2, [row["choice1"], row["choice2"]], return_tensors="pt")
        with torch.no_grad():
            probs = torch.softmax(model(**{k: v[None] for k, v in enc.items()}).logits[0], -1)
        assert got["prediction"] == int(probs.argmax()) and got["score"] == pytest.approx(float(probs.max()), abs=1e-5)
        assert got["id"] == row["idx"]

    model, tok = _stock(export, "ner", AutoModelForTokenClassification)
    for row, got in zip(NER, lines["ner"]):
        enc = tok(row["words"], is_split_into_words=True, return_tensors="pt")
        firsts = [enc.word_ids().index(w) for w in range(len(row["words"]))]
        with torch.no_grad():
            probs = torch.softmax(model(**enc).logits[0, firsts], -1)
        assert got["prediction"] == [model.config.id2label[int(i)] for i in probs.argmax(-1)]
        torch.testing.assert_close(torch.tensor(got["score"]), probs.max(-1).values, atol=1e-5, rtol=0)
        assert got["gold"] == row["tags"] and got["untagged"] == 0       # a labelled split keeps its gold

    model, tok = _stock(export, "squad", AutoModelForQuestionAnswering)
    (got,) = lines["squad"]
    row = SQUAD[0]
    enc = tok(row["question"], row["context"], return_offsets_mapping=True, return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0]
    with torch.no_grad():
        out = model(**enc)
    context = [i for i, s in enumerate(enc.sequence_ids(0)) if s == 1]
    best = max(((s, e) for s in context for e in context if 0 <= e - s < 30),
               key=lambda p: float(out.start_logits[0, p[0]] + out.end_logits[0, p[1]]))
    want = row["context"][int(offsets[best[0], 0]):int(offsets[best[1], 1])]
    assert (got["id"], got["prediction"], got["gold"]) == ("q1", want, ["on the mat"])
    assert got["score"] == pytest.approx(float(out.start_logits[0, best[0]] + out.end_logits[0, best[1]]), abs=1e-4)


def test_submission_files_have_each_benchmarks_layout(predicted):
    export, out, lines = predicted
    names = {"rte": NLI2, "cola": ["unacceptable", "acceptable"]}
    glue = {p.name: list(csv.reader(p.open(), delimiter="\t")) for p in (out / "glue").iterdir()}
    assert sorted(glue) == ["CoLA.tsv", "RTE.tsv", "STS-B.tsv"]
    assert all(rows[0] == ["index", "prediction"] for rows in glue.values())
    assert glue["RTE.tsv"][1:] == [[str(10 + i), g["prediction"]] for i, g in enumerate(lines["rte"])]
    assert glue["CoLA.tsv"][1:] == [[str(i), str(names["cola"].index(g["prediction"]))]
                                    for i, g in enumerate(lines["cola"])]
    assert glue["STS-B.tsv"][1:] == [[str(i), str(round(g["prediction"], 3))] for i, g in enumerate(lines["stsb"])]
    superglue = {p.name: [json.loads(x) for x in p.read_text().splitlines()] for p in (out / "superglue").iterdir()}
    assert sorted(superglue) == ["BoolQ.jsonl", "COPA.jsonl", "RTE.jsonl"]
    assert superglue["BoolQ.jsonl"] == [{"idx": q["idx"], "label": g["prediction"]}
                                        for q, g in zip(QUESTIONS, lines["boolq"])]
    assert all(r["label"] in ("true", "false") for r in superglue["BoolQ.jsonl"])
    assert superglue["COPA.jsonl"] == [{"idx": c["idx"], "label": g["prediction"]} for c, g in zip(COPA, lines["copa"])]
    assert superglue["RTE.jsonl"] == [{"idx": 10 + i, "label": g["prediction"]} for i, g in enumerate(lines["rte"])]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == {} and summary["tasks"]["rte"] == {
        "rows": 4, "source": str(out.parents[1] / "data" / "rte.tsv"), "labeled": False, "file": "rte.jsonl"}
    assert summary["tasks"]["ner"]["labeled"] is True and sorted(summary["submissions"]) == [
        "glue/CoLA.tsv", "glue/RTE.tsv", "glue/STS-B.tsv", "superglue/BoolQ.jsonl", "superglue/COPA.jsonl",
        "superglue/RTE.jsonl"]


def test_bad_input_is_refused_by_name(predicted, tmp_path, capsys):
    export, out, _ = predicted
    spec = json.loads((out.parents[1] / "recipe.yaml").read_text())
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(spec))
    assert main(["predict", "--model", str(export), "--recipe", str(recipe), "--tasks", "nope"]) == 2
    assert "--tasks names ['nope'], not tasks of the recipe" in capsys.readouterr().err
    assert main(["predict", "--model", str(export), "--recipe", str(recipe), "--split", "dev"]) == 2
    assert "nothing to predict" in capsys.readouterr().err
    (out.parents[1] / "data" / "twice.jsonl").write_text(json.dumps(QUESTIONS[0]) + "\n" + json.dumps(QUESTIONS[0]))
    spec["tasks"][3]["splits"]["test"] = "twice.jsonl"
    recipe.write_text(json.dumps(spec))
    assert main(["predict", "--model", str(export), "--recipe", str(recipe), "--tasks", "boolq", "--out",
                 str(tmp_path / "p")]) == 2
    assert "twice.jsonl: ids ['7'] name more than one row; ids must be unique to predict" in capsys.readouterr().err
    spec["tasks"][1]["label_names"] = ["no", "yes"]
    recipe.write_text(json.dumps(spec))
    assert main(["predict", "--model", str(export), "--recipe", str(recipe), "--tasks", "cola", "--out",
                 str(tmp_path / "p")]) == 2
    assert "the recipe's label_names ['no', 'yes'] are not the export's" in capsys.readouterr().err
