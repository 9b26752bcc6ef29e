"""The offline synthetic suite: deterministic, balanced, short, readable, and carrying a learnable signal.

    python -m pytest tests/data/test_synthetic.py -q
"""
from __future__ import annotations

import collections
import json

import pytest

from prefinetune.data.readers import read_split
from prefinetune.data.synthetic import SYNTHETIC_TASKS, generate_split, synthetic_task_configs, write_suite
from prefinetune.recipe.config import TaskConfig


def test_suite_shape():
    configs = [TaskConfig.model_validate(c) for c in synthetic_task_configs()]
    assert len(configs) >= 6
    assert {c.num_labels for c in configs} >= {2, 3, 4}
    pairs = [c.columns.text_pair is not None for c in configs]
    assert any(pairs) and not all(pairs)
    assert all(c.format == "jsonl" and set(c.splits) == {"train", "dev"} for c in configs)


def test_deterministic_for_a_seed(tmp_path):
    for task in SYNTHETIC_TASKS:
        assert generate_split(task, 200, 7, "train") == generate_split(task, 200, 7, "train")
        assert generate_split(task, 200, 7, "train") != generate_split(task, 200, 8, "train")
    first = write_suite(tmp_path / "a", 120, seed=3, dev_rows=40)
    write_suite(tmp_path / "b", 120, seed=3, dev_rows=40)
    assert set(first.values()) == {"written"} and len(first) == 2 * len(SYNTHETIC_TASKS)
    for rel in first:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    mtimes = {rel: (tmp_path / "a" / rel).stat().st_mtime_ns for rel in first}
    again = write_suite(tmp_path / "a", 120, seed=3, dev_rows=40)
    assert set(again.values()) == {"unchanged"}
    assert mtimes == {rel: (tmp_path / "a" / rel).stat().st_mtime_ns for rel in first}


def test_balanced_labels_and_no_train_dev_overlap():
    for task, (names, pair, _) in SYNTHETIC_TASKS.items():
        train = generate_split(task, 1200, 0, "train")
        dev = generate_split(task, 300, 0, "dev")
        for rows in (train, dev):
            counts = collections.Counter(r["label"] for r in rows)
            assert set(counts) == set(names)
            assert max(counts.values()) - min(counts.values()) <= 1
            assert all((r["text_pair"] is not None) == pair for r in rows)
        seen = {(r["text"], r["text_pair"]) for r in train}
        assert not any((r["text"], r["text_pair"]) in seen for r in dev), task
        assert len({(r["text"], r["text_pair"]) for r in dev}) > 100, f"{task}: dev too repetitive"


def test_files_read_back_with_the_task_configs(tmp_path):
    write_suite(tmp_path, 100, seed=0, dev_rows=30)
    for config in synthetic_task_configs():
        task = TaskConfig.model_validate(config)
        train = read_split(task, "train", tmp_path)
        assert len(train.records) == 100 and len(read_split(task, "dev", tmp_path).records) == 30
        first = json.loads((tmp_path / task.splits["train"]).read_text().splitlines()[0])
        assert task.label_names[train.records[0]["label"]] == first["label"]


def test_sentences_are_short(tokenizer):
    for task in SYNTHETIC_TASKS:
        rows = generate_split(task, 300, 1, "train")
        texts = [r["text"] for r in rows] + [r["text_pair"] for r in rows if r["text_pair"]]
        longest = max(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
        assert longest < 30, task


def _features(row: dict) -> str:
    """Bag of words; for pairs also the second text's words and the words it adds to the first."""
    if row["text_pair"] is None:
        return row["text"]
    first, second = row["text"].split(), row["text_pair"].split()
    added = [f"new_{w}" for w in second if w not in first]
    return " ".join(first + [f"b_{w}" for w in second] + added)


def test_signal_is_in_the_words():
    """A bag-of-words linear model beats chance by far on every task: the labels are learnable."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    for task, (names, _, _) in SYNTHETIC_TASKS.items():
        train, dev = generate_split(task, 1500, 0, "train"), generate_split(task, 300, 0, "dev")
        vec = CountVectorizer(token_pattern=r"\S+", ngram_range=(1, 2))
        x_train = vec.fit_transform([_features(r) for r in train])
        model = LogisticRegression(max_iter=2000).fit(x_train, [r["label"] for r in train])
        accuracy = model.score(vec.transform([_features(r) for r in dev]), [r["label"] for r in dev])
        assert accuracy > 1 / len(names) + 0.3, f"{task}: bag-of-words dev accuracy {accuracy:.2f}"


def test_local_cpu_recipe_lists_the_suite():
    from pathlib import Path

    from prefinetune.recipe.config import load_recipe

    path = Path(__file__).resolve().parents[2] / "recipes" / "local_cpu.yaml"
    if not path.is_file():
        pytest.skip(f"{path} is not there")
    recipe = load_recipe(path)
    if recipe.data.synthetic:
        assert [t.model_dump(mode="json") for t in recipe.tasks] == synthetic_task_configs()
