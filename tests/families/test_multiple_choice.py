"""The multiple-choice family: records, tokenization with the real tokenizer, padding of choices, the
choice cross-entropy (checked against explicit log-softmax arithmetic) and evaluation."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from prefinetune.families import FieldError, family_module
from prefinetune.families import multiple_choice as mc
from prefinetune.recipe.config import TaskConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny import table_split  # noqa: E402


def mc_task(**kw) -> TaskConfig:
    columns = {"text": "context", "choices": "choices", "label": "label"}
    if kw.pop("pair", False):
        columns["text_pair"] = "question"
    return TaskConfig(name="mc", family="multiple_choice", splits={"train": "x.jsonl"}, columns=columns, **kw)


class SumScorer(torch.nn.Module):
    """Follows the model protocol: the score of a (context, choice) sequence is the sum of its
    attended token ids, so the expected predictions can be worked out from the shard rows directly."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, task_id, batch):
        self.calls.append((task_id, batch["num_choices"], self.training))
        sums = (batch["input_ids"] * batch["attention_mask"]).sum(dim=1).float()
        return {"outputs": sums.view(-1, batch["num_choices"])}


# ---------------------------------------------------------------- to_record

def test_family_module_is_this_module():
    assert family_module("multiple_choice") is mc
    assert mc.TARGETS == ("labels",)


def test_record_from_list_of_strings_and_int_label():
    rec = mc.to_record({"text": "It rained.", "text_pair": "What happened?", "choices": ["wet", "dry"],
                        "label": 0}, mc_task(pair=True))
    assert rec == {"text": "It rained.", "text_pair": "What happened?", "choices": ["wet", "dry"], "label": 0}


@pytest.mark.parametrize("key, index", [("A", 0), ("B", 1), ("C", 2), ("D", 3)])
def test_label_keys_a_to_d_through_label_names(key, index):
    task = mc_task(label_names=["A", "B", "C", "D"], num_choices=4)
    rec = mc.to_record({"text": "Q?", "choices": ["w", "x", "y", "z"], "label": key}, task)
    assert rec["label"] == index


def test_choice_objects_with_their_own_keys_win_over_digit_indices():
    # ARC rows keyed "1".."4": answerKey "1" is the first choice, not index 1
    choices = [{"text": t, "label": str(i + 1)} for i, t in enumerate(["w", "x", "y", "z"])]
    rec = mc.to_record({"text": "Q?", "choices": choices, "label": "1"}, mc_task())
    assert rec["choices"] == ["w", "x", "y", "z"] and rec["label"] == 0
    lettered = [{"text": t, "label": k} for t, k in zip(["w", "x", "y"], "ABC")]
    assert mc.to_record({"text": "Q?", "choices": lettered, "label": "C"}, mc_task())["label"] == 2


def test_columnar_choices_object_as_in_commonsense_qa():
    value = {"label": ["A", "B", "C", "D", "E"], "text": ["bank", "library", "store", "mall", "new york"]}
    rec = mc.to_record({"text": "Where?", "choices": value, "label": "D"}, mc_task(num_choices=5))
    assert rec["choices"][3] == "mall" and rec["label"] == 3


def test_marked_string_as_in_openbookqa():
    value = "(A) Deep sea animals (B) fish (C) Long (b) Sea Fish (D) Far Sea Animals"
    rec = mc.to_record({"text": "They are known as", "choices": value, "label": "C"}, mc_task(num_choices=4))
    # "(b)" is out of sequence, so it is text of choice C
    assert rec["choices"] == ["Deep sea animals", "fish", "Long (b) Sea Fish", "Far Sea Animals"]
    assert rec["label"] == 2


def test_label_as_choice_text_as_in_sciq():
    rec = mc.to_record({"text": "Who?", "text_pair": "", "choices": ["darwin", "linnaeus", "scopes", "shaw"],
                        "label": "darwin"}, mc_task(pair=True))
    assert rec["label"] == 0 and rec["text_pair"] is None  # an empty pair is no pair
    rec = mc.to_record({"text": "When?", "choices": ["1935", "1901", "1850", "2000"], "label": "1935"}, mc_task())
    assert rec["label"] == 0  # not a valid index, but the text of choice 0


def test_digit_label_that_is_an_index_and_another_choice_text_is_refused():
    with pytest.raises(FieldError, match="ambiguous") as err:
        mc.to_record({"text": "How many?", "choices": ["3", "2", "1"], "label": "1"}, mc_task())
    assert err.value.role == "label"
    # index 1 whose text is "1" is not ambiguous
    assert mc.to_record({"text": "How many?", "choices": ["0", "1"], "label": "1"}, mc_task())["label"] == 1


def test_label_map_applies_to_every_raw_label():
    task = mc_task(label_names=["first", "second"], label_map={"1": "first", "2": "second"})
    assert mc.to_record({"text": "Q", "choices": ["a", "b"], "label": 2}, task)["label"] == 1
    with pytest.raises(FieldError, match="not a key of label_map"):
        mc.to_record({"text": "Q", "choices": ["a", "b"], "label": 0}, task)


def test_wrong_choice_count_names_expected_and_got():
    with pytest.raises(FieldError) as err:
        mc.to_record({"text": "Q?", "choices": ["a", "b", "c"], "label": 0}, mc_task(num_choices=4))
    assert err.value.role == "choices"
    assert "expected 4" in err.value.reason and "got 3" in err.value.reason


@pytest.mark.parametrize("values, role, needle", [
    ({"text": "Q?", "choices": ["a", "b", "c", "d"], "label": "E"}, "label", "not among the choices"),
    ({"text": "Q?", "choices": ["a", "b", "c", "d"], "label": 4}, "label", "not among the 4 choices"),
    ({"text": "Q?", "choices": ["a", "b", "c", "d"], "label": "7"}, "label", "not among the 4 choices"),
    ({"text": "Q?", "choices": [{"text": "a", "label": "A"}, {"text": "b", "label": "B"}], "label": "C"},
     "label", "keys ['A', 'B']"),
    ({"text": "Q?", "choices": ["a", "b"], "label": None}, "label", "missing"),
    ({"text": "Q?", "choices": ["a", "b"], "label": True}, "label", "bool"),
    ({"text": "Q?", "choices": ["a", "  "], "label": 0}, "choices", "choice 1 is empty"),
    ({"text": "Q?", "choices": ["a", 3], "label": 0}, "choices", "choice 1 is a int"),
    ({"text": "Q?", "choices": ["only"], "label": 0}, "choices", "at least 2"),
    ({"text": "Q?", "choices": "no markers here", "label": 0}, "choices", "markers"),
    ({"text": "Q?", "choices": None, "label": 0}, "choices", "missing"),
    ({"text": "", "choices": ["a", "b"], "label": 0}, "text", "empty text"),
    ({"text": 5, "choices": ["a", "b"], "label": 0}, "text", "expected a string"),
])
def test_bad_rows_name_role_and_reason(values, role, needle):
    with pytest.raises(FieldError) as err:
        mc.to_record(values, mc_task())
    assert err.value.role == role and needle in err.value.reason


# ---------------------------------------------------------------- tokenize, schema, stats

RECORDS = [
    {"text": "The man turned on the faucet.", "text_pair": "effect", "choices": ["The toilet filled.",
     "Water flowed from the spout."], "label": 1},
    {"text": "Which planet is red?", "text_pair": None, "choices": ["mars", "venus", "earth"], "label": 0},
    {"text": "Pick a colour.", "text_pair": None, "choices": ["blue", "green", "red", "white"], "label": 3},
]


def test_tokenize_puts_context_and_choice_in_their_segments(tokenizer):
    cols = mc.tokenize(RECORDS, tokenizer, mc_task(), max_length=64)
    assert list(cols) == ["input_ids", "token_type_ids", "label", "num_choices", "length"]
    assert cols["num_choices"] == [2, 3, 4] and cols["label"] == [1, 0, 3]
    for rec, ids, types, length in zip(RECORDS, cols["input_ids"], cols["token_type_ids"], cols["length"]):
        assert len(ids) == len(types) == len(rec["choices"])
        assert length == max(len(s) for s in ids)
        context = rec["text"] + ("" if rec["text_pair"] is None else " " + rec["text_pair"])
        for choice, seq, seg in zip(rec["choices"], ids, types):
            first = [t for t, s in zip(seq, seg) if s == 0]
            second = [t for t, s in zip(seq, seg) if s == 1]
            assert tokenizer.decode(first, skip_special_tokens=True) == context.lower()
            assert tokenizer.decode(second, skip_special_tokens=True) == choice.lower()
            assert seq[0] == tokenizer.cls_token_id and seq[-1] == tokenizer.sep_token_id


def test_truncation_cuts_the_context_and_keeps_the_choice(tokenizer):
    long = {"text": "word " * 100, "text_pair": None, "choices": ["the right answer", "a wrong one"], "label": 0}
    cols = mc.tokenize([long], tokenizer, mc_task(), max_length=16)
    for choice, seq, seg in zip(long["choices"], cols["input_ids"][0], cols["token_type_ids"][0]):
        assert len(seq) == 16
        second = [t for t, s in zip(seq, seg) if s == 1]
        assert tokenizer.decode(second, skip_special_tokens=True) == choice


def test_a_choice_too_long_for_only_first_falls_back_to_longest_first(tokenizer):
    rec = {"text": "short question", "text_pair": None, "choices": ["yes", "very " * 40], "label": 0}
    cols = mc.tokenize([rec], tokenizer, mc_task(), max_length=12)
    assert [len(s) for s in cols["input_ids"][0]] == [len(tokenizer("short question", "yes")["input_ids"]), 12]
    assert cols["length"] == [12]


def test_table_in_the_shard_schema_and_split_stats(tokenizer):
    cols = mc.tokenize(RECORDS + RECORDS[1:2], tokenizer, mc_task(), max_length=64)
    table = pa.Table.from_pydict(cols, schema=mc.shard_schema(True))
    assert table.schema.field("input_ids").type == pa.list_(pa.list_(pa.int32()))
    assert table.schema.field("token_type_ids").type == pa.list_(pa.list_(pa.int8()))
    assert mc.shard_schema(False).names == ["input_ids", "label", "num_choices", "length"]
    stats = mc.split_stats(table, mc_task())
    assert stats == {"label_counts": [2, 1, 0, 1], "choices": {"2": 1, "3": 2, "4": 1}}
    empty = mc.split_stats(mc.shard_schema(True).empty_table(), mc_task(num_choices=4))
    assert empty == {"label_counts": [0, 0, 0, 0], "choices": {}}


def test_tokenize_no_records(tokenizer):
    cols = mc.tokenize([], tokenizer, mc_task(), max_length=16)
    assert pa.Table.from_pydict(cols, schema=mc.shard_schema(True)).num_rows == 0


# ---------------------------------------------------------------- collate

ROWS = {
    "input_ids": [[[101, 7, 102], [101, 8, 9, 102]], [[101, 5, 102], [101, 6, 102], [101, 4, 4, 4, 102]]],
    "token_type_ids": [[[0, 0, 0], [0, 0, 1, 1]], [[0, 0, 1], [0, 1, 1], [0, 0, 1, 1, 1]]],
    "label": [1, 2],
}


def test_collate_flattens_and_pads_choices():
    batch = mc.collate(ROWS, pad_id=0, task=mc_task())
    assert batch["num_choices"] == 3 and isinstance(batch["num_choices"], int)
    assert batch["input_ids"].shape == (6, 5) and batch["attention_mask"].shape == (6, 5)
    assert batch["choice_mask"].tolist() == [[True, True, False], [True, True, True]]
    assert batch["labels"].tolist() == [1, 2] and batch["labels"].dtype == torch.long
    assert batch["input_ids"][1].tolist() == [101, 8, 9, 102, 0]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 1, 0]
    assert batch["token_type_ids"][4].tolist() == [0, 1, 1, 0, 0]
    # row 0's dummy third choice: all pad, attending to its first token only
    assert batch["input_ids"][2].tolist() == [0] * 5 and batch["attention_mask"][2].tolist() == [1, 0, 0, 0, 0]
    assert batch["input_ids"][5].tolist() == [101, 4, 4, 4, 102]
    assert mc.num_predictions(mc_task(), batch, None) == 3


def test_collate_refuses_rows_off_num_choices():
    with pytest.raises(ValueError, match="num_choices is 3"):
        mc.collate(ROWS, pad_id=0, task=mc_task(num_choices=3))


def test_collate_without_token_types():
    rows = {"input_ids": ROWS["input_ids"], "label": ROWS["label"]}
    assert "token_type_ids" not in mc.collate(rows, pad_id=0, task=mc_task())


# ---------------------------------------------------------------- loss

def test_loss_is_cross_entropy_over_choices_by_hand():
    scores = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    labels = [1, 2]
    batch = {"choice_mask": torch.ones(2, 3, dtype=torch.bool), "labels": torch.tensor(labels)}
    got = mc.loss(torch.tensor(scores), batch, mc_task())
    # -log softmax: log(sum exp) - score of the answer
    row0 = math.log(math.exp(1.0) + math.exp(2.0) + math.exp(0.5)) - 2.0
    row1 = math.log(math.exp(0.0) + math.exp(-1.0) + math.exp(3.0)) - 3.0
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert mc.loss(torch.tensor(scores, dtype=torch.bfloat16), batch, mc_task()).dtype == torch.float32


def test_padded_choices_change_nothing():
    # row 0 really has 2 choices; its padded third slot holds a huge score that must be ignored
    padded = torch.tensor([[0.3, -0.2, 50.0], [1.0, 0.4, -0.7]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    labels = torch.tensor([0, 2])
    got = mc.loss(padded, {"choice_mask": mask, "labels": labels}, mc_task())
    row0 = math.log(math.exp(0.3) + math.exp(-0.2)) - 0.3           # 2-way, unpadded
    row1 = math.log(math.exp(1.0) + math.exp(0.4) + math.exp(-0.7)) + 0.7
    assert got.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    got.backward()
    assert padded.grad[0, 2].item() == 0.0 and torch.isfinite(padded.grad).all()
    # masking twice (the model may mask too) changes nothing
    once = mc.mask_scores(padded.detach(), mask)
    assert torch.equal(mc.mask_scores(once, mask), once)
    assert mc.predict(padded.detach(), mask).tolist() == [0, 0]


def test_padded_batch_equals_unpadded_batches():
    rng = torch.Generator().manual_seed(0)
    two, three = torch.randn(4, 2, generator=rng), torch.randn(4, 3, generator=rng)
    labels_two, labels_three = torch.tensor([0, 1, 1, 0]), torch.tensor([2, 0, 1, 2])
    padded = torch.cat([torch.cat([two, torch.full((4, 1), 7.0)], dim=1), three])
    mask = torch.cat([torch.tensor([[True, True, False]] * 4), torch.ones(4, 3, dtype=torch.bool)])
    joint = mc.loss(padded, {"choice_mask": mask, "labels": torch.cat([labels_two, labels_three])}, mc_task())

    def full(s, y):
        return mc.loss(s, {"choice_mask": torch.ones_like(s, dtype=torch.bool), "labels": y}, mc_task())

    separate = (full(two, labels_two) + full(three, labels_three)) / 2
    assert joint.item() == pytest.approx(separate.item(), rel=1e-6)


# ---------------------------------------------------------------- evaluate

def _expected_accuracy(table: pa.Table, rows: int) -> float:
    data = table.slice(0, rows).to_pydict()
    hits = [int(np.argmax([sum(seq) for seq in choices])) == label
            for choices, label in zip(data["input_ids"], data["label"])]
    return sum(hits) / len(hits)


@pytest.mark.parametrize("max_rows", [None, 5])
def test_evaluate_with_a_protocol_stand_in(tokenizer, max_rows):
    records = [
        {"text": f"question {i}", "text_pair": None, "choices": choices, "label": label}
        for i, (choices, label) in enumerate([
            (["zebra", "a"], 0), (["a", "zebra"], 0), (["cat", "dog", "zebra"], 2), (["x", "y", "z", "a"], 1),
            (["xylophone quartet", "b"], 0), (["no", "yes", "maybe"], 2), (["one", "two"], 1),
        ])]
    table = pa.Table.from_pydict(mc.tokenize(records, tokenizer, mc_task(), 32), schema=mc.shard_schema(True))
    model = SumScorer().train()
    # a pad id above every real token: an unmasked dummy choice would always win
    result = mc.evaluate(model, 3, mc_task(), table_split(table, "multiple_choice"), pad_id=10**6, batch_size=3,
                         max_rows=max_rows,
                         device=torch.device("cpu"))
    rows = max_rows or len(records)
    assert result == {"accuracy": pytest.approx(_expected_accuracy(table, rows)), "rows": rows}
    assert 0 < result["accuracy"] < 1
    assert model.training  # train mode restored
    assert all(task_id == 3 and not training for task_id, _, training in model.calls)
    assert [k for _, k, _ in model.calls] == ([3, 4, 2] if max_rows is None else [3, 4])
    model.eval()
    mc.evaluate(model, 0, mc_task(), table_split(table, "multiple_choice"), 0, 4, None, torch.device("cpu"))
    assert not model.training  # eval mode restored too


# ---------------------------------------------------------------- the real data folder

def _records(rows, task):
    good, bad = [], []
    for values in rows:
        try:
            good.append(mc.to_record(values, task))
        except FieldError as err:
            bad.append(err)
    return good, bad


def test_real_multiple_choice_files_become_records(data_root, tokenizer):
    import csv
    import json

    arc = [json.loads(line) for line in (data_root / "arc_easy/ARC-Easy-Dev.jsonl").open(encoding="utf-8")]
    good, bad = _records([{"text": r["question"]["stem"], "choices": r["question"]["choices"],
                           "label": r["answerKey"]} for r in arc], mc_task())
    assert len(good) == len(arc) == 570 and not bad
    assert {len(r["choices"]) for r in good} >= {4}
    first = arc[0]["question"]
    assert good[0]["choices"][good[0]["label"]] == next(
        c["text"] for c in first["choices"] if c["label"] == arc[0]["answerKey"])

    with (data_root / "openbookqa/dev.tsv").open(encoding="utf-8") as f:
        obqa = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    good, bad = _records([{"text": r["Question Stem"], "choices": r["Choices"], "label": r["Answer Key"]}
                          for r in obqa], mc_task(num_choices=4))
    assert len(good) == 500 and not bad
    assert all(f"({'ABCD'[r['label']]}) {r['choices'][r['label']]}" in row["Choices"] for r, row in zip(good, obqa))

    sciq = json.loads((data_root / "sciq/valid.json").read_text(encoding="utf-8"))
    good, bad = _records([{"text": r["question"], "text_pair": r["support"], "label": r["correct_answer"],
                           "choices": [r["distractor1"], r["correct_answer"], r["distractor2"], r["distractor3"]]}
                          for r in sciq], mc_task(pair=True, num_choices=4))
    assert len(good) + len(bad) == 1000 and len(bad) <= 3  # rows whose answer repeats as a distractor
    assert all(b.role == "label" for b in bad) and sum(r["label"] == 1 for r in good) >= 990

    cols = mc.tokenize(good[:8], tokenizer, mc_task(num_choices=4), max_length=64)
    batch = mc.collate(cols, tokenizer.pad_token_id, mc_task(num_choices=4))
    assert batch["input_ids"].shape[0] == 32 and batch["num_choices"] == 4
    assert torch.isfinite(mc.loss(torch.zeros(8, 4), batch, mc_task())).item()


def test_mathqa_option_strings_split_only_at_markers_in_sequence():
    from prefinetune.families.choices import _split_marked

    texts, keys = _split_marked("a ) rs . 1 , 200 , b ) 27.675 , c ) 30 , d ) none , e ) 47.5")
    assert texts == ["rs . 1 , 200", "27.675", "30", "none", "47.5"] and keys == ["a", "b", "c", "d", "e"]
    texts, keys = _split_marked("a ) x ) y , b ) z")        # an 'x )' inside an option is not a marker
    assert texts == ["x ) y", "z"] and keys == ["a", "b"]
