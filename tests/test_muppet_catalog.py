"""The Muppet hub catalog and the three recipes generated from it (no hub access needed).

Rows in each dataset's hub layout (from the dataset cards) are fed through the real reader and family
`to_record` by standing in for `datasets.load_dataset`, so a wrong column, dotted path or label
convention fails here rather than on the cluster.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from prefinetune.catalog.muppet import (
    MUPPET_CATALOG,
    NOTES,
    PAPER_DATASETS,
    PARQUET_EXPORT,
    STRING_ANSWER_SPANS,
    UNSUPPORTED,
    muppet_names,
    muppet_task,
    muppet_tasks,
)
from prefinetune.data.readers import read_split
from prefinetune.recipe.config import TaskConfig, load_recipe, recipe_from_dict

REPO = Path(__file__).resolve().parents[1]


def _load_writer():
    path = REPO / "data_prep" / "write_muppet_recipes.py"
    spec = importlib.util.spec_from_file_location("write_muppet_recipes", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


writer = _load_writer()
RECIPE_NAMES = ["muppet_roberta_base", "muppet_roberta_large", "muppet_bart_large"]


# ---------------------------------------------------------------- the catalog

@pytest.mark.parametrize("name", list(MUPPET_CATALOG))
def test_every_entry_validates(name):
    entry = MUPPET_CATALOG[name]
    task = TaskConfig.model_validate(entry)
    assert task.name == name
    assert task.format == "hub" and task.hub is not None and task.hub.path
    assert {"train", "dev"} <= set(task.splits), "every task needs a train and a dev split"
    assert muppet_task(name) == task.model_dump(mode="json")


def test_families_of_known_datasets():
    expected = {
        "classification": ["cola", "sst2", "mrpc", "qqp", "mnli", "qnli", "rte", "wnli", "boolq", "wic", "cb",
                           "ag_news", "imdb", "snli", "hans", "rotten_tomatoes", "yelp_polarity",
                           "wsc", "multirc", "eraser_multirc", "wikiqa", "trec", "scitail"],
        "multiple_choice": ["copa", "record", "math_qa", "openbookqa", "swag", "hellaswag", "race", "commonsense_qa",
                            "cosmos_qa", "arc_easy", "arc_challenge", "sciq"],
        "span": ["squad", "drop", "natural_questions", "triviaqa", "hotpotqa"],
        "summarization": ["cnn_dailymail", "billsum", "xsum", "aeslc", "multi_news"],
    }
    for family, names in expected.items():
        assert muppet_names([family]) == names
    assert muppet_task("cola")["metrics"] == ["mcc"]
    assert muppet_task("mrpc")["metrics"] == muppet_task("qqp")["metrics"] == ["accuracy", "f1"]
    assert muppet_task("copa")["num_choices"] == 2 and muppet_task("commonsense_qa")["num_choices"] == 5
    assert muppet_task("arc_easy")["num_choices"] is None  # 3 to 5 choices on the hub
    assert muppet_task("mnli")["splits"]["dev"] == "validation_matched"
    assert muppet_task("hans")["hub"]["revision"] == PARQUET_EXPORT


def test_every_paper_dataset_is_catalogued_or_unsupported_with_a_reason():
    assert len(PAPER_DATASETS) == 45
    names = list(PAPER_DATASETS.values())
    assert len(set(names)) == len(names)
    for paper_name, name in PAPER_DATASETS.items():
        assert (name in MUPPET_CATALOG) != (name in UNSUPPORTED), paper_name
    for name, reason in UNSUPPORTED.items():
        assert name in names and len(reason) > 40, name
    assert set(MUPPET_CATALOG) <= set(names)
    assert set(NOTES) <= set(names)


@pytest.mark.parametrize("name", list(STRING_ANSWER_SPANS))
def test_string_answer_span_tasks_are_in_the_catalog(name):
    assert name in MUPPET_CATALOG and name not in UNSUPPORTED
    assert TaskConfig.model_validate(MUPPET_CATALOG[name]).family == "span"


def test_muppet_task_overrides_and_errors():
    assert muppet_task("sst2", splits={"train": "train[:1%]", "dev": "validation"})["splits"]["train"] == "train[:1%]"
    with pytest.raises(KeyError, match="unknown Muppet task"):
        muppet_task("nope")
    with pytest.raises(ValueError, match="unknown task families"):
        muppet_tasks(["clasification"])
    assert [t["name"] for t in muppet_tasks("span")] == ["squad", "drop", "natural_questions", "triviaqa", "hotpotqa"]
    assert len(muppet_tasks()) == len(MUPPET_CATALOG)


# ---------------------------------------------------------------- the recipes

@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_recipe_is_what_the_writer_generates(name):
    path = REPO / "recipes" / f"{name}.yaml"
    assert path.read_text(encoding="utf-8") == writer.render_recipe(name), (
        f"{path.name} is stale: run python data_prep/write_muppet_recipes.py")
    loaded = load_recipe(path)
    assert loaded.model_dump() == recipe_from_dict(writer.build_recipe(name)).model_dump()
    assert [t.model_dump(mode="json") for t in loaded.tasks] == [muppet_task(t.name) for t in loaded.tasks]


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_recipe_settings(name):
    path = REPO / "recipes" / f"{name}.yaml"
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == (f"# ray job submit --working-dir . -- python launch/muppet_64gpu.py --recipe recipes/{name}.yaml"
                     " --output-dir /shared/runs")
    recipe = load_recipe(path)
    assert recipe.scaling.num_workers == 64 and recipe.scaling.use_gpu
    assert recipe.train.slots_per_update == 64
    assert recipe.data.on_bad_row == "quarantine"
    assert recipe.deepspeed.precision == "bf16"
    # What the paper gives: one-task slots (above), natural sampling, R3F; log(n) scaling is the trainer's.
    assert recipe.sampling.policy == "natural" and recipe.sampling.strategy == "batch_heterogeneous"
    assert recipe.r3f.enabled
    families = {t.family for t in recipe.tasks}
    if "roberta" in name:
        assert recipe.model.name_or_path == f"FacebookAI/{name.split('_', 1)[1].replace('_', '-')}"
        assert "summarization" not in families
        assert [t.name for t in recipe.tasks] == muppet_names(["classification", "multiple_choice", "span"])
    else:
        assert recipe.model.name_or_path == "facebook/bart-large"
        assert [t.name for t in recipe.tasks] == list(MUPPET_CATALOG)
        assert "summarization" in families


# ---------------------------------------------------------------- hub-layout rows through the readers

_NLI_ROW = {"premise": "A man plays a guitar.", "hypothesis": "A person makes music.", "label": 0}
SAMPLE_ROWS = {
    "cola": {"sentence": "Our friends won't buy this analysis.", "label": 1, "idx": 0},
    "sst2": {"sentence": "a gorgeous , witty film", "label": 1, "idx": 0},
    "mrpc": {"sentence1": "He said so.", "sentence2": "So he said.", "label": 1, "idx": 0},
    "qqp": {"question1": "How do I learn Python?", "question2": "What is the best way to learn Python?",
            "label": 1, "idx": 0},
    "mnli": {**_NLI_ROW, "label": 2, "idx": 0},
    "qnli": {"question": "Where is Paris?", "sentence": "Paris is in France.", "label": 0, "idx": 0},
    "rte": {"sentence1": "Dogs bark.", "sentence2": "Animals make noise.", "label": 0, "idx": 0},
    "wnli": {"sentence1": "The cup fell.", "sentence2": "It fell.", "label": 1, "idx": 0},
    "boolq": {"question": "is the sky blue", "passage": "The sky is blue on clear days.", "idx": 0, "label": 1},
    "wic": {"word": "bank", "sentence1": "He sat on the bank.", "sentence2": "The bank was closed.",
            "start1": 14, "start2": 4, "end1": 18, "end2": 8, "idx": 0, "label": 0},
    "cb": {**_NLI_ROW, "label": 2, "idx": 0},
    "ag_news": {"text": "Stocks rallied on Friday.", "label": 2},
    "imdb": {"text": "A wonderful movie.", "label": 1},
    "snli": dict(_NLI_ROW),
    "hans": {**_NLI_ROW, "label": 1, "parse_premise": "(ROOT)", "parse_hypothesis": "(ROOT)",
             "binary_parse_premise": "( )", "binary_parse_hypothesis": "( )", "heuristic": "lexical_overlap",
             "subcase": "ln_subject/object_swap", "template": "temp1"},
    "rotten_tomatoes": {"text": "the film is a mess .", "label": 0},
    "yelp_polarity": {"text": "Great food, friendly staff.", "label": 1},
    "wsc": {"text": "The trophy does not fit in the suitcase because it is too big.", "span1_index": 1,
            "span2_index": 9, "span1_text": "The trophy", "span2_text": "it", "idx": 0, "label": 1},
    "math_qa": {"Problem": "what is 2 + 3 ?", "Rationale": "2 + 3 = 5", "options": "a ) 4 , b ) 5 , c ) 6 , d ) 1 , 0 , e ) none",
                "correct": "b", "annotated_formula": "add(n0,n1)", "linear_formula": "add(n0,n1)|", "category": "general"},
    "multirc": {"paragraph": "Tom went home. He ate.", "question": "Who ate?", "answer": "Tom",
                "idx": {"paragraph": 0, "question": 0, "answer": 0}, "label": 1},
    "eraser_multirc": {"passage": "Tom went home. He ate.", "query_and_answer": "Who ate? || Tom", "label": 1,
                       "evidences": ["He ate."]},
    "wikiqa": {"question_id": "Q1", "question": "how are glacier caves formed?", "document_title": "Glacier cave",
               "answer": "A glacier cave is a cave formed within the ice of a glacier.", "label": 1},
    "trec": {"text": "How far is it from Denver to Aspen ?", "coarse_label": 5, "fine_label": 40},
    "scitail": {"premise": "Water boils at 100 C.", "hypothesis": "Water boils when heated.", "label": "entails"},
    "copa": {"premise": "My body cast a shadow.", "choice1": "The sun was rising.", "choice2": "The grass was cut.",
             "question": "cause", "idx": 0, "label": 0},
    "record": {"passage": "Obama met Merkel in Berlin. @highlight Talks went well.",
               "query": "@placeholder hosted the talks.", "entities": ["Berlin", "Merkel", "Obama"],
               "entity_spans": {"text": ["Obama", "Merkel", "Berlin"], "start": [0, 10, 20], "end": [5, 16, 26]},
               "answers": ["Merkel"], "idx": {"passage": 0, "query": 0}},
    "openbookqa": {"id": "7-980", "question_stem": "The sun is responsible for",
                   "choices": {"text": ["puppies", "plants sprouting", "rain", "wind"], "label": ["A", "B", "C", "D"]},
                   "answerKey": "B"},
    "swag": {"video-id": "anetv_1", "fold-ind": "3416", "startphrase": "Members sit. They", "sent1": "Members sit.",
             "sent2": "They", "gold-source": "gold", "ending0": "stand.", "ending1": "sing.", "ending2": "eat.",
             "ending3": "run.", "label": 2},
    "hellaswag": {"ind": 4, "activity_label": "Removing ice", "ctx_a": "A man scrapes ice.", "ctx_b": "then",
                  "ctx": "A man scrapes ice. then", "endings": ["he stops.", "he sings.", "he flies.", "he eats."],
                  "source_id": "x", "split": "train", "split_type": "indomain", "label": "3"},
    "race": {"example_id": "high1.txt", "article": "Tom likes apples.", "answer": "B",
             "question": "What does Tom like?", "options": ["pears", "apples", "plums", "figs"]},
    "commonsense_qa": {"id": "q1", "question": "Where do you keep milk?", "question_concept": "milk",
                       "choices": {"label": ["A", "B", "C", "D", "E"],
                                   "text": ["fridge", "oven", "shelf", "car", "bag"]},
                       "answerKey": "A"},
    "cosmos_qa": {"id": "c1", "context": "I missed the bus.", "question": "Why was I late?", "answer0": "Traffic",
                  "answer1": "I missed the bus", "answer2": "Rain", "answer3": "None of the above", "label": 1},
    "arc_easy": {"id": "a1", "question": "Which is a liquid?",
                 "choices": {"text": ["ice", "water", "steam", "rock"], "label": ["1", "2", "3", "4"]},
                 "answerKey": "2"},
    "arc_challenge": {"id": "a2", "question": "Which is a gas?",
                      "choices": {"text": ["ice", "water", "steam", "rock", "wood"],
                                  "label": ["A", "B", "C", "D", "E"]},
                      "answerKey": "C"},
    "sciq": {"question": "What do plants make?", "distractor3": "salt", "distractor1": "iron",
             "distractor2": "sand", "correct_answer": "sugar", "support": ""},
    "squad": {"id": "5733be284776f41900661182", "title": "Notre_Dame",
              "context": "Architecturally, the school has a Catholic character.",
              "question": "What character does the school have?",
              "answers": {"text": ["a Catholic character"], "answer_start": [32]}},
    "drop": {"section_id": "nfl_1", "query_id": "q1", "passage": "The Bears scored first with a field goal.",
             "question": "Who scored first?", "answers_spans": {"spans": ["The Bears"], "types": ["span"]}},
    "natural_questions": {"key": "nq1", "context": "The capital of France is Paris.",
                          "question": "what is the capital of france", "answers": ["Paris"]},
    "triviaqa": {"key": "tq1", "context": "Mount Everest is the highest mountain.",
                 "question": "Which is the highest mountain?", "answers": ["Mount Everest"]},
    "hotpotqa": {"key": "hp1", "context": "Ada Lovelace wrote the first program. She was English.",
                 "question": "Who wrote the first program?", "answers": ["Ada Lovelace"]},
    "cnn_dailymail": {"article": "LONDON (CNN) -- A long article.", "highlights": "A summary.", "id": "abc"},
    "billsum": {"text": "SECTION 1. SHORT TITLE.", "summary": "A bill summary.", "title": "A bill"},
    "xsum": {"document": "A news story.", "summary": "One sentence.", "id": "1"},
    "aeslc": {"email_body": "Please find the report attached.", "subject_line": "Report"},
    "multi_news": {"document": "Story one. ||||| Story two.", "summary": "– Both stories."},
}
EXPECTED = {  # what the record must hold: a label id, a choice index, an answer or a target
    "cola": 1, "mnli": 2, "cb": 2, "ag_news": 2, "trec": 5, "scitail": 0, "hans": 1, "wsc": 1, "math_qa": 1, "multirc": 1, "eraser_multirc": 1,
    "copa": 0, "record": 1, "openbookqa": 1, "swag": 2, "hellaswag": 3, "race": 1, "commonsense_qa": 0,
    "cosmos_qa": 1, "arc_easy": 1, "arc_challenge": 2, "sciq": 3,
    "squad": "a Catholic character", "cnn_dailymail": "A summary.", "aeslc": "Report",
}


@pytest.fixture
def fake_hub(monkeypatch):
    """Stand in for datasets.load_dataset: rows[(path, name, revision, split)] -> list of row dicts."""
    import datasets

    rows: dict[tuple, list[dict]] = {}

    def load_dataset(path, name=None, split=None, revision=None, **kwargs):
        return list(rows[(path, name, revision, split)])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return rows


def _serve(fake_hub, task: TaskConfig, split: str, rows: list[dict]) -> None:
    fake_hub[(task.hub.path, task.hub.name, task.hub.revision, task.splits[split])] = rows


def test_sample_rows_cover_the_catalog():
    assert set(SAMPLE_ROWS) == set(MUPPET_CATALOG)


@pytest.mark.parametrize("name", list(MUPPET_CATALOG))
def test_hub_layout_row_reads(name, fake_hub):
    task = TaskConfig.model_validate(muppet_task(name))
    for split in ("train", "dev"):
        _serve(fake_hub, task, split, [SAMPLE_ROWS[name]])
        records = read_split(task, split).records
        assert len(records) == 1
    record = records[0]
    if name in EXPECTED:
        got = {"span": lambda r: r["answers"][0]["text"], "summarization": lambda r: r["target"]}.get(
            task.family, lambda r: r["label"])(record)
        assert got == EXPECTED[name]
    if task.family == "multiple_choice" and task.num_choices:
        assert len(record["choices"]) == task.num_choices


@pytest.mark.parametrize("name, bad_row, field", [
    ("snli", {**_NLI_ROW, "label": -1}, "label"),                                  # no gold label
    ("record", {**SAMPLE_ROWS["record"], "answers": ["Paris"]}, "label"),          # answer not an entity
    ("sciq", {**SAMPLE_ROWS["sciq"], "distractor1": "sugar"}, "label"),            # answer twice
    ("commonsense_qa", {**SAMPLE_ROWS["commonsense_qa"],
                        "choices": {"label": ["A", "B"], "text": ["fridge", "oven"]}}, "choices"),
])
def test_conversion_bad_rows_are_quarantined(name, bad_row, field, fake_hub, tmp_path):
    task = TaskConfig.model_validate(muppet_task(name))
    _serve(fake_hub, task, "train", [SAMPLE_ROWS[name], bad_row])
    quarantine = tmp_path / "quarantine.jsonl"
    result = read_split(task, "train", on_bad_row="quarantine", quarantine_path=quarantine)
    assert len(result.records) == 1 and result.quarantined == 1
    assert quarantine.read_text(encoding="utf-8").count("\n") == 1
    assert f'"field": "{field}' in quarantine.read_text(encoding="utf-8")
