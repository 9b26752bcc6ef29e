"""The tagging family: records and their errors, CoNLL readers, first-sub-token alignment (checked
against the tokenizer's own word_ids), truncation counted, loss, metrics against a hand count, and a
family object the core can ask.

    python -m pytest tests/families/test_tagging.py -q
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny import table_split, tiny_bert  # noqa: E402

from prefinetune.data.readers import BadRowError, TaskSourceError, read_split
from prefinetune.families import FieldError
from prefinetune.families import tagging as tag
from prefinetune.families.family import get_family
from prefinetune.model.multitask import MultiTaskModel, TaskSpec
from prefinetune.recipe.config import TaskConfig

NER = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def ner_task(**extra) -> TaskConfig:
    return TaskConfig.model_validate({"name": "ner", "family": "tagging", "format": "conll", "label_names": NER,
                                      "splits": {"train": "ner.txt"}, "columns": {"tokens": 0, "tags": -1},
                                      **extra})


def test_records_take_tag_names_or_ids_and_name_the_bad_word():
    task = ner_task()
    assert tag.to_record({"tokens": ["Ann", "lives"], "tags": ["B-PER", 0]}, task) == \
        {"tokens": ["Ann", "lives"], "tags": [1, 0]}
    cases = [({"tokens": ["a", "b"], "tags": ["O"]}, "tags", "one tag per word (2 words), got 1"),
             ({"tokens": [], "tags": []}, "tokens", "non-empty list"),
             ({"tokens": ["a", "b"], "tags": ["O", "B-ORG"]}, "tags", "word 2: tag 'B-ORG' is not in label_names"),
             ({"tokens": ["a"], "tags": [7]}, "tags", "word 1: tag id 7 is outside 0..4"),
             ({"tokens": ["a", " "], "tags": ["O", "O"]}, "tokens[1]", "empty text")]
    for values, role, reason in cases:
        with pytest.raises(FieldError) as err:
            tag.to_record(values, task)
        assert err.value.role == role and reason in err.value.reason


def test_conll_reader_sentences_docstart_and_bad_lines(tmp_path):
    (tmp_path / "ner.txt").write_text("-DOCSTART- -X- O O\n\nAnn NNP B-NP B-PER\nlives VBZ B-VP O\n\n"
                                      "in IN B-PP O\nRome NNP B-NP B-LOC\n\n")
    records = read_split(ner_task(), "train", tmp_path).records
    assert records == [{"tokens": ["Ann", "lives"], "tags": [1, 0]}, {"tokens": ["in", "Rome"], "tags": [0, 3]}]
    chunks = ner_task(label_names=["B-NP", "B-VP", "B-PP", "O"], columns={"tokens": 0, "tags": 2})
    assert read_split(chunks, "train", tmp_path).records[0]["tags"] == [0, 1]
    (tmp_path / "ner.txt").write_text("Ann NNP B-PER\nlives O\n\nin IN O\n")
    with pytest.raises(BadRowError, match=r"sentence 1 \(1-based; starts at line 1\).*line 2: 2 columns, expected 3"):
        read_split(ner_task(), "train", tmp_path)
    with pytest.raises(TaskSourceError, match="CoNLL columns have no names: give tokens as an index"):
        read_split(ner_task(columns={"tokens": "FORM", "tags": -1}), "train", tmp_path)


def test_conllu_reader_skips_comments_multiword_tokens_and_empty_nodes(tmp_path):
    lines = ["# sent_id = 1", "1-2\tdon't\t_\t_\t_\t_\t_\t_\t_\t_", "1\tdo\tdo\tAUX\tVBP\t_\t0\troot\t_\t_",
             "2\tn't\tnot\tPART\tRB\t_\t1\tadvmod\t_\t_", "2.1\tgo\tgo\tVERB\tVB\t_\t_\t_\t0:root\t_",
             "3\t!\t!\tPUNCT\t.\t_\t1\tpunct\t_\t_", ""]
    (tmp_path / "a.conllu").write_text("\n".join(lines) + "\n")
    task = TaskConfig.model_validate({"name": "pos", "family": "tagging", "format": "conllu",
                                      "label_names": ["AUX", "PART", "PUNCT", "VERB"], "splits": {"train": "a.conllu"},
                                      "columns": {"tokens": "FORM", "tags": "UPOS"}})
    assert read_split(task, "train", tmp_path).records == [{"tokens": ["do", "n't", "!"], "tags": [0, 1, 2]}]
    with pytest.raises(TaskSourceError, match="CoNLL-U has no field 'POS'"):
        read_split(task.model_copy(update={"columns": task.columns.model_copy(update={"tags": "POS"})}), "train",
                   tmp_path)


def test_tags_sit_on_each_words_first_sub_token_as_word_ids_say(tokenizer):
    words = ["Tokenization", "isn't", "unbelievably", "hard", "."]
    record = {"tokens": words, "tags": [1, 2, 3, 4, 0]}
    row = {k: v[0] for k, v in tag.tokenize([record], tokenizer, ner_task(), 64).items()}
    reference = tokenizer(words, is_split_into_words=True)        # the tokenizer's own alignment
    assert row["input_ids"] == reference["input_ids"]
    expected, seen = [], set()
    for word in reference.word_ids():
        expected.append(-100 if word is None or word in seen else record["tags"][word])
        seen.add(word)
    assert row["tags"] == expected and row["words"] == row["tagged_words"] == 5
    assert len([t for t in row["tags"] if t != -100]) == 5 and len(row["input_ids"]) > 7   # words split


def test_words_cut_off_by_max_length_are_counted(tokenizer):
    records = [{"tokens": ["one", "two", "three", "four", "five", "six"], "tags": [0] * 6}]
    columns = tag.tokenize(records, tokenizer, ner_task(), 5)               # [CLS] + 3 words + [SEP]
    assert columns["input_ids"][0][0] == tokenizer.cls_token_id and len(columns["input_ids"][0]) == 5
    assert columns["tagged_words"] == [3] and columns["words"] == [6]
    table = pa.Table.from_pydict(columns, schema=tag.shard_schema("token_type_ids" in columns))
    stats = tag.split_stats(table, ner_task())
    assert stats == {"tag_counts": [3, 0, 0, 0, 0], "words": 6, "words_truncated": 3}


def test_loss_is_cross_entropy_over_the_tagged_tokens_only():
    logits = torch.randn(2, 4, 5)
    labels = torch.tensor([[-100, 1, -100, 3], [-100, 0, 4, -100]])
    chosen = labels != -100
    expected = F.cross_entropy(logits[chosen], labels[chosen])
    assert float(tag.loss(logits, {"labels": labels})) == pytest.approx(float(expected), rel=1e-6)
    family = get_family("tagging")
    assert family.num_predictions(ner_task(), {"labels": labels}, logits) == 5
    assert float(family.sym_kl(logits, logits, {"labels": labels})) == 0.0


def test_chunk_f1_equals_a_hand_count_and_accuracy_counts_words():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-PER"], ["B-LOC", "B-LOC"]]
    # gold chunks: PER(0-1), LOC(3), LOC(0); predicted: PER(0-1), PER(3), LOC(0), LOC(1): 2 right
    precision, recall = 2 / 4, 2 / 3
    got = tag.word_metrics(pred, gold)
    assert got["precision"] == pytest.approx(precision) and got["recall"] == pytest.approx(recall)
    assert got["f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert set(tag.word_metrics([["NOUN", "VERB"]], [["NOUN", "NOUN"]])) == {"accuracy"}   # not BIO


def test_evaluate_scores_the_models_own_predictions(tokenizer):
    task = ner_task()
    model = MultiTaskModel(tiny_bert(seed=0), [TaskSpec("ner", "tagging", 5)], head_dropout=0.0).eval()
    records = [{"tokens": ["Ann", "lives", "in", "Rome"], "tags": [1, 0, 0, 3]},
               {"tokens": ["Bob", "Smith"], "tags": [1, 2]}, {"tokens": ["hi"], "tags": [0]}]
    columns = tag.tokenize(records, tokenizer, task, 16)
    columns["input_ids"] = [[i % 60 for i in ids] for ids in columns["input_ids"]]   # tiny vocab
    split = table_split(pa.Table.from_pydict(columns), "tagging")
    result = get_family("tagging").evaluate(model, 0, task, split, pad_id=0, batch_size=2, max_rows=None,
                                            device=torch.device("cpu"))
    batch = tag.collate(split.take([0, 1, 2]), 0, task)
    with torch.no_grad():
        best = model(0, batch)["outputs"].argmax(-1)
    tagged = batch["labels"] != -100
    assert result["rows"] == 3
    assert result["accuracy"] == pytest.approx(float((best[tagged] == batch["labels"][tagged]).float().mean()))


def test_entropy_is_the_mean_over_tagged_tokens():
    from scipy.stats import entropy

    logits = torch.randn(2, 3, 4)
    labels = torch.tensor([[-100, 1, 2], [-100, 0, -100]])
    got = get_family("tagging").entropy(logits, {"labels": labels})
    probs = torch.softmax(logits, -1).numpy()
    want = [np.mean([entropy(probs[0, 1]), entropy(probs[0, 2])]), entropy(probs[1, 1])]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)
