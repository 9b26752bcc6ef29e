"""The regression family (STS-B style): records, tokenization, MSE by hand, Pearson/Spearman against
numpy arithmetic, and evaluation through a stand-in of the model protocol."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from scipy import stats

from prefinetune.families import FieldError, family_module
from prefinetune.families import regression as reg
from prefinetune.recipe.config import TaskConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny import table_split  # noqa: E402


def reg_task(pair: bool = True) -> TaskConfig:
    columns = {"text": "sentence1", "label": "score"}
    if pair:
        columns["text_pair"] = "sentence2"
    return TaskConfig(name="sts", family="regression", format="tsv", splits={"train": "x.tsv"}, columns=columns)


class LengthRegressor(torch.nn.Module):
    """Follows the model protocol: the value of a row is its number of attended tokens."""

    def __init__(self):
        super().__init__()
        self.modes = []

    def forward(self, task_id, batch):
        self.modes.append(self.training)
        return {"outputs": batch["attention_mask"].sum(dim=1).float()}


# ---------------------------------------------------------------- to_record

def test_family_module_is_this_module():
    assert family_module("regression") is reg
    assert reg.TARGETS == ("labels",)
    assert reg.num_predictions(reg_task(), {}, None) is None  # no log(n) scaling


@pytest.mark.parametrize("raw, value", [("4.750", 4.75), (" 3 ", 3.0), (2, 2.0), (0.5, 0.5), ("-1e-2", -0.01),
                                        (np.float32(1.5), 1.5)])
def test_record_labels_are_floats(raw, value):
    rec = reg.to_record({"text": "A man.", "text_pair": "A person.", "label": raw}, reg_task())
    assert rec == {"text": "A man.", "text_pair": "A person.", "label": value}
    assert isinstance(rec["label"], float)


def test_single_sentence_task_has_no_pair():
    rec = reg.to_record({"text": "Fine.", "label": "1"}, reg_task(pair=False))
    assert rec == {"text": "Fine.", "text_pair": None, "label": 1.0}


@pytest.mark.parametrize("values, role, needle", [
    ({"text": "a", "text_pair": "b", "label": "nan"}, "label", "not a finite number"),
    ({"text": "a", "text_pair": "b", "label": float("inf")}, "label", "not a finite number"),
    ({"text": "a", "text_pair": "b", "label": "high"}, "label", "not a number"),
    ({"text": "a", "text_pair": "b", "label": ""}, "label", "not a number"),
    ({"text": "a", "text_pair": "b", "label": None}, "label", "missing"),
    ({"text": "a", "text_pair": "b", "label": True}, "label", "bool"),
    ({"text": "a", "text_pair": "b", "label": [1.0]}, "label", "list"),
    ({"text": " ", "text_pair": "b", "label": 1}, "text", "empty text"),
    ({"text": "a", "text_pair": None, "label": 1}, "text_pair", "missing"),
    ({"text": "a", "text_pair": 3, "label": 1}, "text_pair", "expected a string"),
])
def test_bad_rows_name_role_and_reason(values, role, needle):
    with pytest.raises(FieldError) as err:
        reg.to_record(values, reg_task())
    assert err.value.role == role and needle in err.value.reason


# ---------------------------------------------------------------- tokenize, schema, stats

RECORDS = [
    {"text": "A plane is taking off.", "text_pair": "An air plane is taking off.", "label": 5.0},
    {"text": "A man is playing a flute.", "text_pair": "A man is playing a large flute.", "label": 3.8},
    {"text": "Three men play chess.", "text_pair": "Two men play chess.", "label": 2.6},
    {"text": "A cat sleeps.", "text_pair": "The stock market fell today.", "label": 0.0},
]


def test_tokenize_encodes_pairs(tokenizer):
    cols = reg.tokenize(RECORDS, tokenizer, reg_task(), max_length=64)
    assert list(cols) == ["input_ids", "token_type_ids", "label", "length"]
    for rec, ids, types, length in zip(RECORDS, cols["input_ids"], cols["token_type_ids"], cols["length"]):
        assert length == len(ids) == len(types)
        first = [t for t, s in zip(ids, types) if s == 0]
        second = [t for t, s in zip(ids, types) if s == 1]
        assert tokenizer.decode(first, skip_special_tokens=True) == rec["text"].lower()
        assert tokenizer.decode(second, skip_special_tokens=True) == rec["text_pair"].lower()
    assert cols["label"] == [5.0, 3.8, 2.6, 0.0]
    short = reg.tokenize(RECORDS, tokenizer, reg_task(), max_length=8)
    assert max(short["length"]) == 8


def test_table_schema_and_split_stats(tokenizer):
    table = pa.Table.from_pydict(reg.tokenize(RECORDS, tokenizer, reg_task(), 64), schema=reg.shard_schema(True))
    assert table.schema.field("label").type == pa.float32()
    assert reg.shard_schema(False).names == ["input_ids", "label", "length"]
    labels = np.array([5.0, 3.8, 2.6, 0.0], dtype=np.float32).astype(np.float64)
    got = reg.split_stats(table, reg_task())["label_stats"]
    assert got["mean"] == pytest.approx(labels.sum() / 4)
    assert got["std"] == pytest.approx(math.sqrt(((labels - labels.sum() / 4) ** 2).sum() / 4))
    assert (got["min"], got["max"]) == (0.0, 5.0)
    empty = reg.split_stats(reg.shard_schema(True).empty_table(), reg_task())
    assert empty == {"label_stats": {"mean": None, "std": None, "min": None, "max": None}}


def test_single_sentence_tokenize(tokenizer):
    cols = reg.tokenize([{"text": "Good film.", "text_pair": None, "label": 1.0}], tokenizer, reg_task(False), 16)
    assert set(cols["token_type_ids"][0]) == {0}
    assert tokenizer.decode(cols["input_ids"][0], skip_special_tokens=True) == "good film."


def test_tokenize_refuses_mixed_pairs(tokenizer):
    with pytest.raises(ValueError, match="mix"):
        reg.tokenize([RECORDS[0], {"text": "x", "text_pair": None, "label": 1.0}], tokenizer, reg_task(), 16)


# ---------------------------------------------------------------- collate and loss

def test_collate_pads_and_keeps_float_labels():
    rows = {"input_ids": [[101, 5, 102], [101, 102]], "token_type_ids": [[0, 0, 1], [0, 1]], "label": [2.5, 0.25]}
    batch = reg.collate(rows, pad_id=0, task=reg_task())
    assert batch["input_ids"].tolist() == [[101, 5, 102], [101, 102, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 1], [0, 1, 0]]
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [2.5, 0.25]


def test_loss_is_mean_squared_error_by_hand():
    batch = {"labels": torch.tensor([1.5, 2.0, 1.0])}
    expected = ((1.0 - 1.5) ** 2 + (2.0 - 2.0) ** 2 + (4.0 - 1.0) ** 2) / 3  # 3.0833...
    got = reg.loss(torch.tensor([1.0, 2.0, 4.0]), batch, reg_task())
    assert got.dtype == torch.float32 and got.item() == pytest.approx(expected)
    assert reg.loss(torch.tensor([[1.0], [2.0], [4.0]]), batch, reg_task()).item() == pytest.approx(expected)
    half = reg.loss(torch.tensor([1.0, 2.0, 4.0], dtype=torch.bfloat16), batch, reg_task())
    assert half.dtype == torch.float32 and half.item() == pytest.approx(expected)


# ---------------------------------------------------------------- metrics

def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    dx, dy = x - x.mean(), y - y.mean()
    return float((dx * dy).sum() / math.sqrt((dx ** 2).sum() * (dy ** 2).sum()))


def _ranks(x: np.ndarray) -> np.ndarray:  # no ties in these arrays
    return np.argsort(np.argsort(x)).astype(np.float64)


def test_monotone_non_linear_gives_spearman_one_and_pearson_below_one():
    labels = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    predictions = labels ** 3
    got = reg.metrics(predictions, labels)
    assert got["spearman"] == pytest.approx(1.0)
    assert got["pearson"] < 0.99
    assert got["pearson"] == pytest.approx(_pearson(predictions, labels))
    assert got["pearson"] == pytest.approx(np.corrcoef(predictions, labels)[0, 1])


def test_metrics_match_numpy_on_a_shuffled_array():
    labels = np.array([0.2, 4.1, 2.2, 3.3, 1.0, 5.0, 2.9])
    predictions = np.array([0.5, 3.0, 2.9, 2.5, 1.7, 4.4, 3.1])
    got = reg.metrics(predictions, labels)
    assert got["pearson"] == pytest.approx(_pearson(predictions, labels))
    assert got["spearman"] == pytest.approx(_pearson(_ranks(predictions), _ranks(labels)))
    assert got["spearman"] == pytest.approx(stats.spearmanr(predictions, labels)[0])
    reverse = reg.metrics(-labels, labels)
    assert reverse["pearson"] == pytest.approx(-1.0) and reverse["spearman"] == pytest.approx(-1.0)


def test_undefined_correlations_are_nan():
    assert all(math.isnan(v) for v in reg.metrics(np.ones(4), np.arange(4.0)).values())
    assert all(math.isnan(v) for v in reg.metrics(np.array([1.0]), np.array([2.0])).values())


# ---------------------------------------------------------------- evaluate

@pytest.mark.parametrize("max_rows", [None, 3])
def test_evaluate_with_a_protocol_stand_in(tokenizer, max_rows):
    table = pa.Table.from_pydict(reg.tokenize(RECORDS, tokenizer, reg_task(), 64), schema=reg.shard_schema(True))
    model = LengthRegressor().train()
    got = reg.evaluate(model, 0, reg_task(), table_split(table, "regression"), pad_id=0, batch_size=2,
                       max_rows=max_rows,
                       device=torch.device("cpu"))
    rows = max_rows or len(RECORDS)
    data = table.slice(0, rows).to_pydict()
    lengths = np.array([len(ids) for ids in data["input_ids"]], dtype=np.float64)
    labels = np.array(data["label"], dtype=np.float64)
    assert got["rows"] == rows
    assert got["pearson"] == pytest.approx(_pearson(lengths, labels), rel=1e-5)
    assert got["spearman"] == pytest.approx(stats.spearmanr(lengths, labels)[0], rel=1e-5)
    assert model.training and model.modes and not any(model.modes)
