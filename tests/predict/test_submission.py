"""Which submission file each task's predictions go to (pure: no model): only unlabeled splits, MNLI's
mismatched file by the split's name, two tasks for one file refused, and each benchmark's value format.

    python -m pytest tests/predict/test_submission.py -q
"""
from __future__ import annotations

from pathlib import Path

import pytest

from prefinetune.predict.submission import submission_files, submission_value
from prefinetune.predict.task_predictions import TaskPredictions
from prefinetune.recipe.config import TaskConfig

NLI3 = ["entailment", "neutral", "contradiction"]


def _done(name: str, split: str = "test", labeled: bool = False) -> TaskPredictions:
    task = TaskConfig.model_validate({"name": name, "label_names": NLI3, "splits": {"train": "a", split: "b"},
                                      "columns": {"text": "p", "text_pair": "h", "label": "l"}})
    return TaskPredictions(task, split, "b", labeled, id_column=False)


def test_only_unlabeled_splits_of_benchmark_tasks_get_files():
    files = submission_files([_done("mnli"), _done("mnli_mismatched"), _done("cb", labeled=True), _done("trec")])
    assert list(files) == [Path("glue/MNLI-m.tsv"), Path("glue/MNLI-mm.tsv")]
    assert list(submission_files([_done("mnli", "test_mismatched")])) == [Path("glue/MNLI-mm.tsv")]


def test_two_tasks_for_one_file_are_refused_by_name():
    with pytest.raises(ValueError, match="tasks 'mnli' and 'mnli_matched' would both write glue/MNLI-m.tsv"):
        submission_files([_done("mnli"), _done("mnli_matched")])


@pytest.mark.parametrize("prediction, how, names, want", [
    ("neutral", "class_id", NLI3, 1), (3.14159, "value", None, 3.142), (1, "choice", None, 1),
    ("b", "choice", ["a", "b"], 1), ("true", "bool_lower", None, "true"), ("False", "bool_lower", None, "false"),
    ("true", "bool_title", None, "True"), ("entailment", ("entailment", "not_entailment"), None, "entailment")])
def test_values_are_written_as_each_benchmark_wants(prediction, how, names, want):
    assert submission_value(prediction, how, names, "t") == want


def test_a_label_the_benchmark_does_not_know_is_an_error_naming_the_task():
    with pytest.raises(ValueError, match="task 'rte': label 'neutral' is not one of the benchmark's labels"):
        submission_value("neutral", ("entailment", "not_entailment"), None, "rte")
    with pytest.raises(ValueError, match="task 'wsc': label 'maybe' is not true/false"):
        submission_value("maybe", "bool_title", None, "wsc")
