"""The span family: records, windows, targets, loss, post-processing, SQuAD metrics and evaluation."""
from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from prefinetune.data.shards import TaskSplit
from prefinetune.families import FieldError, family_module, span
from prefinetune.recipe.config import TaskConfig


def make_task(doc_stride: int = 128) -> TaskConfig:
    return TaskConfig(name="qa", family="span", format="squad", splits={"train": "train.json"},
                      columns={"context": "context", "question": "question", "answers": "answers"},
                      doc_stride=doc_stride)


def record(context: str, question: str, answer: str, id=None, occurrence: int = 0) -> dict:
    start = -1
    for _ in range(occurrence + 1):
        start = context.index(answer, start + 1)
    return span.to_record({"context": context, "question": question, "id": id,
                           "answers": [{"text": answer, "answer_start": start}]}, make_task())


LONG_CONTEXT = " ".join(
    f"Sentence number {i} talks about the river {name} and its long valley." for i, name in enumerate(
        ["Amber", "Birch", "Cedar", "Delta", "Ember", "Flint", "Grove", "Heath", "Inlet", "Juniper", "Kestrel",
         "Laurel", "Meadow", "Nectar", "Orchid", "Pebble"])) + " The old lighthouse keeper was Tobias Marlow."


def as_table(columns: dict) -> pa.Table:
    return pa.table(columns, schema=span.shard_schema("token_type_ids" in columns))


def pairs(flat) -> np.ndarray:
    return np.asarray(flat).reshape(-1, 2)


# ---------------------------------------------------------------- SQuAD metrics

def test_normalize_answer_follows_squad_v1():
    assert span.normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert span.normalize_answer("An apple, a pear & the fig.") == "apple pear fig"
    assert span.normalize_answer("theatre anthem") == "theatre anthem"   # articles only as whole words


def test_exact_match_and_f1_on_known_strings():
    assert span.exact_match("Eiffel tower!", "the Eiffel Tower") == 1.0
    assert span.f1_score("Eiffel tower!", "the Eiffel Tower") == 1.0
    assert span.exact_match("Eiffel", "the Eiffel Tower") == 0.0
    # pred {big, eiffel, tower, in, paris}, gold {eiffel, tower}: P = 2/5, R = 1, F1 = 2PR/(P+R) = 4/7
    assert span.f1_score("the big Eiffel Tower in Paris", "Eiffel Tower") == pytest.approx(4 / 7)
    # tokens are a bag: pred {cat:2, dog:1}, gold {cat:1, dog:2} share 2 of 3 each way -> F1 = 2/3
    assert span.f1_score("cat cat dog", "cat dog dog") == pytest.approx(2 / 3)
    assert span.f1_score("nothing shared", "Eiffel Tower") == 0.0
    assert span.f1_score("", "Eiffel Tower") == 0.0


def test_metrics_take_the_best_gold_answer():
    golds = ["Denver Broncos", "the Broncos", "Broncos"]
    assert span.exact_match("broncos", golds) == 1.0
    # pred {broncos, of, denver}: vs "Broncos" P = 1/3, R = 1 -> 0.5; vs "Denver Broncos" P = 2/3, R = 1 -> 0.8
    assert span.f1_score("Broncos of Denver", ["Broncos"]) == pytest.approx(0.5)
    assert span.f1_score("Broncos of Denver", golds) == pytest.approx(0.8)
    assert span.exact_match("Broncos of Denver", golds) == 0.0
    scores = span.squad_metrics(["broncos", "Broncos of Denver"], [golds, golds])
    assert scores == {"exact_match": pytest.approx(0.5), "f1": pytest.approx(0.9)}


# ---------------------------------------------------------------- records

def test_to_record_accepts_squad_and_hugging_face_answers():
    task = make_task()
    ctx = "Paris is the capital of France."
    squad = span.to_record({"context": ctx, "question": "  Capital? ", "answers": [
        {"text": "Paris", "answer_start": 0}, {"text": "France", "answer_start": 24}]}, task)
    assert squad == {"id": None, "context": ctx, "question": "Capital?", "answers": [
        {"text": "Paris", "answer_start": 0}, {"text": "France", "answer_start": 24}]}
    hf = span.to_record({"context": ctx, "question": "Capital?", "id": 7,
                         "answers": {"text": ["Paris", "France"], "answer_start": np.array([0, 24])}}, task)
    assert hf["answers"] == squad["answers"] and hf["id"] == "7"
    as_json = span.to_record({"context": ctx, "question": "Q?", "answers": json.dumps(squad["answers"])}, task)
    assert as_json["answers"] == squad["answers"]
    # whitespace around an answer is trimmed, its offset moved with it
    padded = span.to_record({"context": ctx, "question": "Q?", "answers": [{"text": " is the ", "answer_start": 5}]},
                            task)
    assert padded["answers"] == [{"text": "is the", "answer_start": 6}]


def test_to_record_errors_name_the_field_and_the_offset():
    task = make_task()
    ctx = "Paris is the capital of France. Paris is big."
    with pytest.raises(FieldError) as err:
        span.to_record({"context": ctx, "question": "Q?", "answers": [{"text": "Paris", "answer_start": 3}]}, task)
    assert err.value.role == "answers"
    assert "answer 'Paris' not found at offset 3 in context" in str(err.value)
    assert "occurs at offset(s) [0, 32]" in str(err.value)
    with pytest.raises(FieldError, match=r"answer 'Berlin' not found at offset 0 .*occurs nowhere in the context"):
        span.to_record({"context": ctx, "question": "Q?", "answers": [{"text": "Berlin", "answer_start": 0}]}, task)
    with pytest.raises(FieldError, match=r"not found at offset 999 .*context has 45 characters"):
        span.to_record({"context": ctx, "question": "Q?", "answers": [{"text": "Paris", "answer_start": 999}]}, task)
    with pytest.raises(FieldError, match="at least one answer"):
        span.to_record({"context": ctx, "question": "Q?", "answers": []}, task)
    with pytest.raises(FieldError, match="^context: empty text"):
        span.to_record({"context": "  ", "question": "Q?", "answers": []}, task)
    with pytest.raises(FieldError, match="^question: missing"):
        span.to_record({"context": ctx, "question": None, "answers": []}, task)
    with pytest.raises(FieldError, match="same length"):
        span.to_record({"context": ctx, "question": "Q?", "answers": {"text": ["Paris"], "answer_start": []}}, task)
    with pytest.raises(FieldError, match="answer_start must be an integer"):
        span.to_record({"context": ctx, "question": "Q?", "answers": [{"text": "Paris", "answer_start": "0"}]}, task)


def test_span_is_a_registered_family():
    module = family_module("span")
    assert module is span and module.TARGETS == ("start_positions", "end_positions")


# ---------------------------------------------------------------- windows

def test_windows_of_a_long_context_hold_the_answer_or_point_at_cls(tokenizer):
    rec = record(LONG_CONTEXT, "Who kept the lighthouse?", "Tobias Marlow", id="lighthouse")
    rec2 = record(LONG_CONTEXT, "Which river is in sentence seven?", "Heath", id="heath")
    max_length, stride = 40, 8
    cols = span.tokenize([rec, rec2], tokenizer, make_task(doc_stride=stride), max_length)
    table = as_table(cols)                                       # the columns fit the shard schema
    assert table.schema == span.shard_schema(True)
    n = table.num_rows
    assert n > 4 and all(len(v) == n for v in cols.values())
    holding = {"lighthouse": 0, "heath": 0}
    for i in range(n):
        ids, offsets = cols["input_ids"][i], pairs(cols["offsets"][i])
        assert cols["length"][i] == len(ids) <= max_length and len(offsets) == len(ids)
        assert len(cols["token_type_ids"][i]) == len(ids)
        gold = json.loads(cols["answers_json"][i])[0]
        start, end = cols["start_position"][i], cols["end_position"][i]
        in_context = np.flatnonzero(offsets[:, 0] >= 0)
        window_chars = (offsets[in_context[0], 0], offsets[in_context[-1], 1])
        inside = window_chars[0] <= gold["answer_start"] and gold["answer_start"] + len(gold["text"]) <= window_chars[1]
        if (start, end) == (0, 0):
            assert not inside
        else:
            assert inside and in_context[0] <= start <= end <= in_context[-1]
            assert cols["context"][i][offsets[start, 0]:offsets[end, 1]] == gold["text"]
            holding[cols["example_id"][i]] += 1
    assert holding["lighthouse"] >= 1 and holding["heath"] >= 1
    assert span.split_stats(table, make_task()) == {
        "windows": n, "examples": 2, "answer_outside_window": n - sum(holding.values()), "answer_in_no_window": 0}


def test_offsets_map_tokens_back_to_the_context(tokenizer):
    rec = record(LONG_CONTEXT, "Who kept the lighthouse?", "Tobias Marlow")
    cols = span.tokenize([rec], tokenizer, make_task(doc_stride=8), 40)
    covered = set()
    for ids, flat, types in zip(cols["input_ids"], cols["offsets"], cols["token_type_ids"]):
        tokens = tokenizer.convert_ids_to_tokens(ids)
        for token, (s, e), kind in zip(tokens, pairs(flat), types):
            if s < 0:          # question and special tokens
                assert kind == 0 or token == "[SEP]"
                continue
            assert kind == 1 and token.removeprefix("##") == LONG_CONTEXT[s:e].lower()
            covered.update(range(s, e))
    # the windows together cover every non-space character of the context
    assert covered == {i for i, ch in enumerate(LONG_CONTEXT) if not ch.isspace()}


def test_neighbouring_windows_overlap_by_the_stride(tokenizer):
    rec = record(LONG_CONTEXT, "Who kept the lighthouse?", "Tobias Marlow")
    cols = span.tokenize([rec], tokenizer, make_task(doc_stride=8), 40)
    contexts = [[i for i, t in zip(ids, types) if t == 1][:-1] for ids, types in
                zip(cols["input_ids"], cols["token_type_ids"])]     # context ids, final [SEP] dropped
    for a, b in zip(contexts, contexts[1:]):
        assert a[-8:] == b[:8]


def test_stride_is_capped_at_half_the_room(tokenizer):
    assert span.effective_stride(128, 300) == 128
    assert span.effective_stride(128, 30) == 15
    assert span.effective_stride(5, 1) == 0
    rec = record(LONG_CONTEXT, "Who kept the lighthouse?", "Tobias Marlow")
    # the default doc_stride of 128 with 40-token windows: the tokenizer would refuse it; capped it works
    cols = span.tokenize([rec], tokenizer, make_task(doc_stride=128), 40)
    q_tokens = len(tokenizer("Who kept the lighthouse?", add_special_tokens=False)["input_ids"])
    room = 40 - q_tokens - 3
    context_tokens = len(tokenizer(LONG_CONTEXT, add_special_tokens=False)["input_ids"])
    assert len(cols["input_ids"]) == math.ceil((context_tokens - room) / (room - room // 2)) + 1


def test_question_that_fills_the_window_is_an_error(tokenizer):
    rec = record("Short context.", " ".join(["why"] * 50) + "?", "Short")
    with pytest.raises(FieldError, match=r"^question: example sha256:\w+: the question takes 51 tokens; with 3 "
                                         r"special tokens that leaves no room for the context in "
                                         r"model.max_length=40"):
        span.tokenize([rec], tokenizer, make_task(), 40)


def test_example_ids_are_stable_across_tokenize_calls(tokenizer):
    a = record("Paris is the capital of France.", "Capital?", "Paris")
    b = record("Rome is the capital of Italy.", "Capital?", "Rome")
    task = make_task()
    together = span.tokenize([a, b], tokenizer, task, 64)["example_id"]
    alone = span.tokenize([b], tokenizer, task, 64)["example_id"]
    assert together[1] == alone[0] != together[0] and together[0].startswith("sha256:")
    named = record("Paris is the capital of France.", "Capital?", "Paris", id="q-17")
    assert span.tokenize([named], tokenizer, task, 64)["example_id"] == ["q-17"]
    assert span.tokenize([], tokenizer, task, 64) == {name: [] for name in span.shard_schema(True).names}


def test_answer_positions_on_hand_built_offsets():
    #            CLS     q        SEP       "ab"    "cd"    "ef"   SEP
    flat = [-1, -1, -1, -1, -1, -1, 0, 2, 3, 5, 6, 8, -1, -1]
    assert span.answer_positions(flat, {"text": "cd", "answer_start": 3}) == (4, 4)
    assert span.answer_positions(flat, {"text": "ab cd ef", "answer_start": 0}) == (3, 5)
    assert span.answer_positions(flat, {"text": "d e", "answer_start": 4}) == (4, 5)   # inside tokens
    assert span.answer_positions(flat, {"text": "gh", "answer_start": 9}) == (0, 0)    # past the window
    assert span.answer_positions(flat, None) == (0, 0)


# ---------------------------------------------------------------- training

def test_collate_pads_and_keeps_the_targets():
    rows = {"input_ids": [[101, 5, 6, 102], [101, 7, 102]], "token_type_ids": [[0, 0, 1, 1], [0, 1, 1]],
            "start_position": [2, 0], "end_position": [2, 0]}
    batch = span.collate(rows, pad_id=0, task=make_task())
    assert batch["input_ids"].tolist() == [[101, 5, 6, 102], [101, 7, 102, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 1, 1], [0, 1, 1, 0]]
    assert batch["start_positions"].tolist() == [2, 0] and batch["end_positions"].tolist() == [2, 0]
    assert batch["start_positions"].dtype == torch.long


def test_loss_is_the_mean_of_start_and_end_cross_entropy():
    start = torch.tensor([[0.0, 2.0, 1.0, -1e4], [1.0, 0.0, 3.0, 0.5]], dtype=torch.bfloat16)
    end = torch.tensor([[0.5, 0.0, 2.0, -1e4], [0.0, 0.0, 0.0, 0.0]], dtype=torch.bfloat16)
    batch = {"start_positions": torch.tensor([1, 2]), "end_positions": torch.tensor([2, 0])}

    def ce(logits, target):   # -log softmax(logits)[target], by hand
        logits = [float(x) for x in logits]
        return -(logits[target] - math.log(sum(math.exp(x) for x in logits)))

    expected = ((ce(start[0], 1) + ce(start[1], 2)) / 2 + (ce(end[0], 2) + ce(end[1], 0)) / 2) / 2
    got = span.loss((start, end), batch, make_task())
    assert got.dtype == torch.float32 and got.item() == pytest.approx(expected, rel=1e-5)
    assert span.num_predictions(make_task(), batch, (start, end)) == 4


# ---------------------------------------------------------------- post-processing

CONTEXT = "ab cd ef gh"
#            CLS     q       SEP     ab    cd    ef    gh     SEP
OFFSETS = [-1, -1, -1, -1, -1, -1, 0, 2, 3, 5, 6, 8, 9, 11, -1, -1]


def logits(**peaks) -> np.ndarray:
    out = np.zeros(8)
    for position, value in peaks.items():
        out[int(position[1:])] = value
    return out


def test_postprocess_picks_the_best_context_span():
    text, score = span.postprocess(logits(p4=5.0), logits(p5=4.0), OFFSETS, CONTEXT)
    assert (text, score) == ("cd ef", 9.0)
    # the question token and CLS score higher but are not context
    text, _ = span.postprocess(logits(p1=9.0, p0=8.0, p3=2.0), logits(p1=9.0, p0=8.0, p3=3.0), OFFSETS, CONTEXT)
    assert text == "ab"


def test_postprocess_respects_end_after_start_and_max_length():
    # best start after best end: the best valid pair is chosen instead
    text, score = span.postprocess(logits(p5=5.0, p3=1.0), logits(p4=5.0, p6=2.0), OFFSETS, CONTEXT)
    assert (text, score) == ("ef gh", 7.0)
    # 3..6 would score 10 but is four tokens; of the spans of at most two, 5..6 scores 1 + 5
    text, score = span.postprocess(logits(p3=5.0, p5=1.0), logits(p6=5.0, p5=1.0), OFFSETS, CONTEXT,
                                   max_answer_tokens=2)
    assert (text, score) == ("ef gh", 6.0)
    text, score = span.postprocess(logits(p3=5.0, p4=4.0), logits(p6=5.0, p4=1.0), OFFSETS, CONTEXT,
                                   max_answer_tokens=2)
    assert (text, score) == ("ab cd", 6.0)
    assert span.postprocess(logits(p3=5.0), logits(p6=5.0), OFFSETS, CONTEXT, max_answer_tokens=4)[0] == "ab cd ef gh"


def test_postprocess_ignores_batch_padding_and_handles_no_context():
    padded_start = np.concatenate([logits(p4=1.0), [50.0, 50.0]])      # padding past the offsets
    padded_end = np.concatenate([logits(p4=1.0), [50.0, 50.0]])
    assert span.postprocess(padded_start, padded_end, OFFSETS, CONTEXT) == ("cd", 2.0)
    assert span.postprocess(np.zeros(3), np.zeros(3), [-1] * 6, "x") == ("", float("-inf"))
    assert span.postprocess(logits(), logits(), pairs(OFFSETS), CONTEXT, max_answer_tokens=0)[0] == ""


def test_best_answer_combines_windows_by_score():
    assert span.best_answer([("ab", 2.0), ("cd", 7.5), ("ef", 7.0)]) == "cd"
    assert span.best_answer([("", float("-inf"))]) == ""
    assert span.best_answer([]) == ""


# ---------------------------------------------------------------- evaluation

class GoldModel(torch.nn.Module):
    """A test double of the model protocol: `model(task_id, batch) -> {"outputs": (start, end)}` with
    logits that peak at the positions `targets` gives for each window (looked up by its token ids)."""

    def __init__(self, targets: dict[tuple, tuple[int, int]]):
        super().__init__()
        self.targets, self.seen = targets, []

    def forward(self, task_id, batch):
        self.seen.append((task_id, sorted(batch), self.training))
        ids, mask = batch["input_ids"], batch["attention_mask"].bool()
        start = torch.zeros(ids.shape).masked_fill(~mask, -1e4)
        end = start.clone()
        for i in range(ids.shape[0]):
            s, e = self.targets[tuple(ids[i][mask[i]].tolist())]
            start[i, s] += 10.0
            end[i, e] += 10.0
        return {"outputs": (start, end), "inactive": torch.zeros(())}


def gold_targets(cols: dict) -> dict[tuple, tuple[int, int]]:
    return {tuple(ids): (s, e) for ids, s, e in zip(cols["input_ids"], cols["start_position"], cols["end_position"])}


def task_split(cols: dict) -> TaskSplit:
    return TaskSplit("qa", "dev", as_table(cols), {"family": "span", "label_names": None, "splits": {"dev": {}}})


def test_evaluate_scores_examples_over_their_windows(tokenizer):
    recs = [record(LONG_CONTEXT, "Who kept the lighthouse?", "Tobias Marlow", id="a"),
            record(LONG_CONTEXT, "Which river is in sentence seven?", "Heath", id="b"),
            record("Paris is the capital of France.", "Capital?", "Paris", id="c")]
    cols = span.tokenize(recs, tokenizer, make_task(doc_stride=8), 40)
    split = task_split(cols)
    assert len(split) > 3
    targets = gold_targets(cols)
    model = GoldModel(targets).train()
    result = span.evaluate(model, 3, make_task(), split, tokenizer.pad_token_id, 4, None, torch.device("cpu"))
    assert result == {"exact_match": 1.0, "f1": 1.0, "rows": 3}
    assert model.training                                          # mode restored
    task_ids, keys, modes = zip(*model.seen)
    assert set(task_ids) == {3} and not any(modes)                # run in eval mode
    assert all("start_positions" not in k and "end_positions" not in k for k in keys)   # no targets fed

    # max_rows counts examples: all windows of the first two
    model.seen.clear()
    result = span.evaluate(model, 3, make_task(), split, tokenizer.pad_token_id, 64, 2, torch.device("cpu"))
    assert result["rows"] == 2 and result["exact_match"] == 1.0
    assert len(model.seen) == 1 and sum(1 for x in cols["example_id"] if x in ("a", "b")) > 2

    # a wrong prediction for "c" ("capital" instead of "Paris") costs a third of EM and F1
    c_window = next(i for i, x in enumerate(cols["example_id"]) if x == "c")
    wrong = dict(targets)
    off = pairs(cols["offsets"][c_window])
    capital = next(i for i, (s, e) in enumerate(off) if s >= 0 and cols["context"][c_window][s:e] == "capital")
    wrong[tuple(cols["input_ids"][c_window])] = (capital, capital)
    result = span.evaluate(GoldModel(wrong), 0, make_task(), split, tokenizer.pad_token_id, 4, None, "cpu")
    assert result == {"exact_match": pytest.approx(2 / 3), "f1": pytest.approx(2 / 3), "rows": 3}


def test_evaluate_on_real_xquad_rows(tokenizer, data_root):
    """SQuAD v1.1 json (XQuAD English) -> records -> windows; gold-peaked logits give EM 100."""
    data = json.loads((data_root / "xquad_en" / "xquad.en.json").read_text(encoding="utf-8"))
    task = make_task(doc_stride=32)
    recs = [span.to_record({"id": qa["id"], "context": p["context"], "question": qa["question"],
                            "answers": qa["answers"]}, task)
            for article in data["data"][:2] for p in article["paragraphs"][:3] for qa in p["qas"][:3]]
    cols = span.tokenize(recs, tokenizer, task, 96)
    split = task_split(cols)
    stats = span.split_stats(split.table, task)
    assert stats["examples"] == len(recs) and stats["windows"] > len(recs)   # long paragraphs: several windows
    assert stats["answer_in_no_window"] == 0
    result = span.evaluate(GoldModel(gold_targets(cols)), 0, task, split, tokenizer.pad_token_id, 8, None, "cpu")
    assert result == {"exact_match": 1.0, "f1": 1.0, "rows": len(recs)}


def test_answers_given_as_strings_are_placed_at_their_first_occurrence():
    from prefinetune.families import FieldError
    from prefinetune.families.span import to_record

    context = "The Bears kicked a field goal, then the Bears scored again."
    record = to_record({"context": context, "question": "Who scored?", "answers": ["the Bears", "field goal"]}, None)
    assert record["answers"] == [{"text": "the Bears", "answer_start": context.index("the Bears")},
                                 {"text": "field goal", "answer_start": 19}]
    for a in record["answers"]:
        assert context[a["answer_start"]:a["answer_start"] + len(a["text"])] == a["text"]
    with pytest.raises(FieldError, match=r"answers: answer '17' \(given without an offset\) occurs nowhere"):
        to_record({"context": context, "question": "How many points?", "answers": ["17"]}, None)
