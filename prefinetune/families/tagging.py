"""Tagging (token classification: POS tags, chunks, named entities): one tag per word, a head per
dataset, cross-entropy over the words, n = the size of the tag set.

Records: {"tokens": [word, ...], "tags": [tag id, ...]}, one tag per word. Words are non-empty strings;
a tag is a name in `label_names` (the tag set, in its order) or an int id into it (the hub's
`ner_tags`); anything else is a bad row naming the word. Sentences come from CoNLL-U files (columns
FORM and UPOS or XPOS), whitespace-column CoNLL files (CoNLL-2000 / 2003: columns by index) or rows
holding lists (jsonl, hub).

Tokens: each word is encoded on its own, with a leading space (as `add_prefix_space=True` does, so
byte-level BPE tokenizers see in-sentence words; WordPiece ignores the space), its sub-tokens joined
and framed by the tokenizer's special tokens, cut to model.max_length. A word's tag sits on its FIRST
sub-token; other sub-tokens and special tokens hold -100 and take no part in loss or metrics. Words cut
off by max_length (or, rarely, encoding to no token at all) have no tag position: shard rows count
`words` and `tagged_words`, and the manifest reports `words_truncated` (words without a tag position)
per split, so nothing is dropped unseen.

Shard rows: input_ids, token_type_ids (when the tokenizer makes them), tags (one per token: a tag id
or -100), words, tagged_words, length. Head: dropout -> linear [tags, H] on every token's state, one
per dataset, stacked (the same graph on every rank), as transformers' *ForTokenClassification.
Metrics: word accuracy; for tag sets in the BIO/IOB scheme (tags "B-X", "I-X", "O"), also chunk/entity
F1, precision and recall (seqeval, the conlleval definition).
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from prefinetune.families import FieldError
from prefinetune.families.eval_loop import eval_mode, to_device
from prefinetune.families.family import Family, register_family, softmax_entropy
from prefinetune.families.padding import pad, sequence_batch
from prefinetune.families.records import has_token_types, text_value
from prefinetune.losses.r3f import sym_kl
from prefinetune.model.heads import spectrally_normalised

__all__ = ["IGNORE", "to_record", "special_frame", "tokenize", "shard_schema", "split_stats", "collate", "loss",
           "is_bio", "word_metrics", "TokenHeadBank", "TaggingFamily", "FAMILY"]

IGNORE = -100     # tag of a sub-token that is not a word's first, and of special tokens


# ---------------------------------------------------------------- records

def _tag_id(raw: Any, task, word: int) -> int:
    names = task.label_names
    if isinstance(raw, bool) or raw is None:
        raise FieldError("tags", f"word {word}: tag {raw!r} is not a tag name or id")
    if isinstance(raw, numbers.Integral):
        if not 0 <= int(raw) < len(names):
            raise FieldError("tags", f"word {word}: tag id {raw} is outside 0..{len(names) - 1}")
        return int(raw)
    if raw not in names:
        raise FieldError("tags", f"word {word}: tag {raw!r} is not in label_names ({len(names)} tags)")
    return names.index(raw)


def to_record(values: dict[str, Any], task) -> dict:
    """{"tokens", "tags"} of one sentence; FieldError names the bad word."""
    tokens, tags = values.get("tokens"), values.get("tags")
    if not isinstance(tokens, list) or not tokens:
        raise FieldError("tokens", f"expected a non-empty list of words, got {tokens!r:.80}")
    if not isinstance(tags, list) or len(tags) != len(tokens):
        got = len(tags) if isinstance(tags, list) else repr(tags)[:40]
        raise FieldError("tags", f"expected one tag per word ({len(tokens)} words), got {got}")
    words = [text_value(t, f"tokens[{i}]").strip() for i, t in enumerate(tokens)]
    return {"tokens": words, "tags": [_tag_id(t, task, i + 1) for i, t in enumerate(tags)]}


# ---------------------------------------------------------------- tokens

def special_frame(tokenizer) -> tuple[list[int], list[int]]:
    """(special ids before, special ids after) a single sequence, as the tokenizer frames one:
    [CLS] ... [SEP] for BERT, <s> ... </s> for RoBERTa and BART."""
    inner = tokenizer("a", add_special_tokens=False)["input_ids"]
    whole = tokenizer("a")["input_ids"]
    for at in range(len(whole) - len(inner) + 1):
        if whole[at:at + len(inner)] == inner:
            return whole[:at], whole[at + len(inner):]
    raise ValueError(f"cannot find where {type(tokenizer).__name__} puts a sequence between its special tokens")


def _frame(pieces: list[list[int]], tags: list[int], room: int, frame) -> tuple[list[int], list[int], int]:
    """(input_ids, tag per token, tagged words) of one sentence under `room` non-special tokens. A word
    that encodes to no token (a lone control character) keeps no tag and ends nothing."""
    ids, token_tags, tagged = [], [], 0
    for word_pieces, tag in zip(pieces, tags):
        if len(ids) + len(word_pieces) > room:
            break
        ids += word_pieces
        token_tags += [tag] + [IGNORE] * (len(word_pieces) - 1) if word_pieces else []
        tagged += bool(word_pieces)
    before, after = frame
    return before + ids + after, [IGNORE] * len(before) + token_tags + [IGNORE] * len(after), tagged


def tokenize(records: list[dict], tokenizer, task, max_length: int) -> dict[str, list]:
    """One shard row per sentence (see the module docstring)."""
    words = [" " + w for r in records for w in r["tokens"]]
    encoded = tokenizer(words, add_special_tokens=False)["input_ids"] if words else []
    frame = special_frame(tokenizer)
    room = max_length - len(frame[0]) - len(frame[1])
    with_types = has_token_types(tokenizer)
    out: dict[str, list] = {"input_ids": [], "tags": [], "words": [], "tagged_words": [], "length": []}
    if with_types:
        out["token_type_ids"] = []
    at = 0
    for r in records:
        pieces = encoded[at:at + len(r["tokens"])]
        at += len(r["tokens"])
        ids, tags, tagged = _frame(pieces, r["tags"], room, frame)
        out["input_ids"].append(ids)
        out["tags"].append(tags)
        out["words"].append(len(r["tokens"]))
        out["tagged_words"].append(tagged)
        out["length"].append(len(ids))
        if with_types:
            out["token_type_ids"].append([0] * len(ids))
    return out


def shard_schema(with_token_types: bool) -> pa.Schema:
    fields = [pa.field("input_ids", pa.list_(pa.int32()))]
    if with_token_types:
        fields.append(pa.field("token_type_ids", pa.list_(pa.int8())))
    return pa.schema(fields + [pa.field("tags", pa.list_(pa.int32())), pa.field("words", pa.int32()),
                               pa.field("tagged_words", pa.int32()), pa.field("length", pa.int32())])


def split_stats(table: pa.Table, task) -> dict:
    """tag_counts[i] = tagged words with tag i; words, and words_truncated: those without a tag position."""
    tags = np.concatenate([np.asarray(t) for t in table.column("tags").to_pylist()] or [np.zeros(0)])
    tags = tags[tags != IGNORE].astype(np.int64)
    words, tagged = (int(np.sum(table.column(c).to_numpy())) for c in ("words", "tagged_words"))
    return {"tag_counts": [int(c) for c in np.bincount(tags, minlength=task.num_labels)],
            "words": words, "words_truncated": words - tagged}


# ---------------------------------------------------------------- batches, head, loss

def collate(rows: dict[str, list], pad_id: int, task=None) -> dict[str, torch.Tensor]:
    """Rows padded to the longest; `labels` [B, L] the tag of each token (-100: none)."""
    labels, _ = pad(rows["tags"], IGNORE)
    return {**sequence_batch(rows, pad_id), "labels": labels}


class TokenHeadBank(nn.Module):
    """A dropout + linear tag classifier per dataset on every token's state, stacked [T, C, H]."""

    def __init__(self, hidden_size: int, num_labels: list[int], dropout: float, spectral_norm: bool = False,
                 init_std: float = 0.02):
        super().__init__()
        self.num_labels, self.spectral_norm = list(num_labels), spectral_norm
        self.weight = nn.Parameter(torch.randn(len(num_labels), max(num_labels), hidden_size) * init_std)
        self.bias = nn.Parameter(torch.zeros(len(num_labels), max(num_labels)))
        self.dropout = nn.Dropout(dropout)

    def head_state(self, task_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight [C, H], bias [C]) of one dataset's classifier, R4F's normalisation baked in."""
        n = self.num_labels[task_index]
        weight = self.weight[task_index, :n]
        return (spectrally_normalised(weight) if self.spectral_norm else weight), self.bias[task_index, :n]

    def forward(self, states: torch.Tensor, task_index: int) -> torch.Tensor:
        weight, bias = self.head_state(task_index)
        return self.dropout(states) @ weight.T + bias


def loss(outputs: torch.Tensor, batch: dict, task=None) -> torch.Tensor:
    """Mean cross-entropy over the tagged tokens (a word's first sub-token), in fp32."""
    return F.cross_entropy(outputs.float().flatten(0, 1), batch["labels"].to(outputs.device).flatten(),
                           ignore_index=IGNORE)


# ---------------------------------------------------------------- metrics

def is_bio(names: list[str]) -> bool:
    """Whether a tag set is in the BIO/IOB scheme: every tag is "O" or starts "B-" / "I-"."""
    return all(n == "O" or n[:2] in ("B-", "I-") for n in names) and any(n != "O" for n in names)


def word_metrics(predicted: list[list[str]], gold: list[list[str]]) -> dict[str, float]:
    """Word accuracy; with BIO tags also chunk F1 / precision / recall (seqeval: conlleval's definition)."""
    flat_p = [t for s in predicted for t in s]
    flat_g = [t for s in gold for t in s]
    out = {"accuracy": float(np.mean([p == g for p, g in zip(flat_p, flat_g)])) if flat_g else float("nan")}
    if is_bio(sorted({t for s in gold for t in s} | {t for s in predicted for t in s})):
        from seqeval.metrics import f1_score, precision_score, recall_score

        out.update(f1=float(f1_score(gold, predicted)), precision=float(precision_score(gold, predicted)),
                   recall=float(recall_score(gold, predicted)))
    return out


def evaluate(model, task_id: int, task, split, pad_id: int, batch_size: int, max_rows, device,
             tokenizer=None) -> dict:
    """Word-level metrics on (the first `max_rows` sentences of) a split; "rows" = sentences scored."""
    count = min(len(split), max_rows or len(split))
    names, predicted, gold = task.label_names, [], []
    with eval_mode(model), torch.no_grad():
        for start in range(0, count, batch_size):
            batch = collate(split.take(list(range(start, min(start + batch_size, count)))), pad_id, task)
            best = model(task_id, to_device(batch, device))["outputs"].argmax(-1).cpu()
            for row_best, row_gold in zip(best, batch["labels"]):
                tagged = row_gold != IGNORE
                predicted.append([names[i] for i in row_best[tagged].tolist()])
                gold.append([names[i] for i in row_gold[tagged].tolist()])
    return {**word_metrics(predicted, gold), "rows": count}


@torch.no_grad()
def predictions(model, task_id: int, task, split, pad_id: int, batch_size: int, device, tokenizer=None) -> list[dict]:
    """Per sentence: the predicted tag of each word that has a tag position (in order), its softmax
    probability per word as score, the gold tags, and `untagged`: the sentence's words without a tag
    position (cut off by max_length at its end, or, rarely, a word that encodes to no token), for which
    the lists hold nothing."""
    names, out = task.label_names, []
    with eval_mode(model):
        for start in range(0, len(split), batch_size):
            rows = split.take(list(range(start, min(start + batch_size, len(split)))))
            batch = collate(rows, pad_id, task)
            probs = torch.softmax(model(task_id, to_device(batch, device))["outputs"].float(), dim=-1).cpu()
            for i, (row_probs, row_gold) in enumerate(zip(probs, batch["labels"])):
                best = row_probs[row_gold != IGNORE].max(dim=-1)
                out.append({"prediction": [names[t] for t in best.indices.tolist()],
                            "score": [round(p, 6) for p in best.values.tolist()],
                            "gold": [names[t] for t in row_gold[row_gold != IGNORE].tolist()],
                            "untagged": rows["words"][i] - rows["tagged_words"][i]})
    return out


# ---------------------------------------------------------------- the family

class TaggingFamily(Family):
    """A token-classification head per dataset; cross-entropy over words / log(tag set)."""

    name = "tagging"
    auto_class = "AutoModelForTokenClassification"          # the stock class of its per-task folders
    head_summary = "its own tag classifier (dropout, linear) on every token; a word's tag on its first sub-token"
    loss_summary = 'cross-entropy over words / log(number of tags)'
    roles = (("tokens", "tags"), ("id",))
    target_roles = ("tags",)

    # the module's functions above, one signature for every family (prefinetune/families/family.py)
    # data
    to_record = staticmethod(to_record)
    tokenize = staticmethod(tokenize)
    shard_schema = staticmethod(shard_schema)
    split_stats = staticmethod(split_stats)
    # training
    collate = staticmethod(collate)
    loss = staticmethod(loss)
    # evaluation
    evaluate = staticmethod(evaluate)
    predictions = staticmethod(predictions)

    def unlabeled_values(self, values, task) -> dict:
        """The first tag for every word (stand-ins: an unlabeled sentence is only predicted)."""
        tokens = values.get("tokens")
        return {"tags": [0] * len(tokens) if isinstance(tokens, list) else None}

    def check_task(self, task) -> None:
        if not task.label_names:
            raise ValueError("tagging needs label_names: the tag set (e.g. the 17 UPOS tags)")
        if task.metrics is not None or task.num_choices is not None:
            raise ValueError("tagging reports word accuracy (and chunk F1 for BIO tags); metrics and "
                             "num_choices are not for it")

    def num_labels(self, task) -> int:
        return len(task.label_names)

    def num_predictions(self, task, batch, outputs) -> int:
        """n for log(n) scaling: the size of the tag set."""
        return task.num_labels

    def build_head(self, tasks, hidden_size, dropout, spectral_norm):
        return TokenHeadBank(hidden_size, [t.num_labels for t in tasks], dropout, spectral_norm)

    def head_outputs(self, head, task, batch, features):
        if task is None:
            return head(features.states[:, :1], 0)
        return head(features.states, task.family_index)

    def sym_kl(self, clean, noisy, batch):
        """Tag distributions, averaged over the tagged tokens."""
        return sym_kl(clean, noisy, batch["labels"] != IGNORE)

    def entropy(self, outputs, batch):
        """Mean tag entropy over each sentence's tagged tokens."""
        tagged = (batch["labels"] != IGNORE).to(outputs.device).float()
        return (softmax_entropy(outputs) * tagged).sum(dim=1) / tagged.sum(dim=1).clamp(min=1.0)


    def task_folder_skipped(self, model_type: str):
        from prefinetune.export.task_models import token_task_model_support

        return token_task_model_support(model_type)

    def task_model(self, model, task: dict, head_dropout: float):
        from prefinetune.export.task_models import token_task_model

        weight, bias = model.tagging.head_state(task["family_index"])
        return token_task_model(model.backbone, weight, bias, task["label_names"], head_dropout)


FAMILY = register_family(TaggingFamily())
