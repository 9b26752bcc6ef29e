"""Catalog of the classification tasks in the shared data folder, as TaskConfig dicts.

Paths are relative to the data root laid out like /work/shared/data (see its README.md and
MANIFEST.json); split names follow MANIFEST.json ("dev" for SuperGLUE's val.jsonl). A recipe lists
tasks in full TaskConfig form; this catalog is where those dicts come from:

    python -c "from prefinetune.tasks.catalog import catalog_task; print(catalog_task('cola'))"

- `CATALOG`: tasks with a train split, ready for a recipe.
- `EVAL_ONLY`: classification sets present without a train split (qnli, boolq, ag_news, wikiqa,
  snli/mnli samples, imdb/yelp samples, SuperGLUE diagnostics). A TaskConfig must name a train split,
  so `catalog_task` refuses them unless `splits=` (with a "train" entry) is overridden.
- Left out (not single-label text / text-pair classification here): stsb (regression), copa,
  openbookqa, arc_*, sciq, cosmos_qa, commonsense_qa (multiple choice), wsc and multirc (nested
  spans / answers), rotten_tomatoes (the file name is the label, no splits), xquad_en, aeslc,
  dialogsum. WiC is read as a sentence pair: the target word (field `word`) is not part of the input.

Label ids follow the Hugging Face ClassLabel order (GLUE, SuperGLUE, trec coarse). TREC is latin-1 (one
train line holds byte 0xf0) and comes as `<COARSE>:<fine> <question>` lines, hence format txt.
"""
from __future__ import annotations

from typing import Any

__all__ = ["CATALOG", "EVAL_ONLY", "catalog_task", "catalog_names"]

_TREC_FINE = [
    "ABBR:abb", "ABBR:exp", "ENTY:animal", "ENTY:body", "ENTY:color", "ENTY:cremat", "ENTY:currency",
    "ENTY:dismed", "ENTY:event", "ENTY:food", "ENTY:instru", "ENTY:lang", "ENTY:letter", "ENTY:other",
    "ENTY:plant", "ENTY:product", "ENTY:religion", "ENTY:sport", "ENTY:substance", "ENTY:symbol",
    "ENTY:techmeth", "ENTY:termeq", "ENTY:veh", "ENTY:word", "DESC:def", "DESC:desc", "DESC:manner",
    "DESC:reason", "HUM:gr", "HUM:ind", "HUM:title", "HUM:desc", "LOC:city", "LOC:country", "LOC:mount",
    "LOC:other", "LOC:state", "NUM:code", "NUM:count", "NUM:date", "NUM:dist", "NUM:money", "NUM:ord",
    "NUM:other", "NUM:period", "NUM:perc", "NUM:speed", "NUM:temp", "NUM:volsize", "NUM:weight",
]

CATALOG: dict[str, dict[str, Any]] = {
    "cola": {
        "name": "cola", "format": "tsv", "header": False,
        "splits": {"train": "cola/train.tsv", "dev": "cola/dev.tsv"},
        "columns": {"text": 3, "label": 1},
        "label_names": ["unacceptable", "acceptable"],
        "label_map": {"0": "unacceptable", "1": "acceptable"},
    },
    "sst2": {
        "name": "sst2", "format": "tsv",
        "splits": {"train": "sst2/train.tsv", "dev": "sst2/dev.tsv", "test": "sst2/test.tsv"},
        "columns": {"text": "sentence", "label": "label"},
        "label_names": ["negative", "positive"],
        "label_map": {"0": "negative", "1": "positive"},
    },
    "mrpc": {
        "name": "mrpc", "format": "tsv", "encoding": "utf-8-sig",
        "splits": {"train": "mrpc/train.tsv", "dev": "mrpc/dev.tsv", "test": "mrpc/msr_paraphrase_test.txt"},
        "columns": {"text": "#1 String", "text_pair": "#2 String", "label": "Quality"},
        "label_names": ["not_equivalent", "equivalent"],
        "label_map": {"0": "not_equivalent", "1": "equivalent"},
    },
    "rte": {
        "name": "rte", "format": "tsv",
        "splits": {"train": "rte/train.tsv", "dev": "rte/dev.tsv"},
        "columns": {"text": "sentence1", "text_pair": "sentence2", "label": "label"},
        "label_names": ["entailment", "not_entailment"],
    },
    "wnli": {
        "name": "wnli", "format": "tsv",
        "splits": {"train": "wnli/train.tsv", "dev": "wnli/dev.tsv"},
        "columns": {"text": "sentence1", "text_pair": "sentence2", "label": "label"},
        "label_names": ["not_entailment", "entailment"],
        "label_map": {"0": "not_entailment", "1": "entailment"},
    },
    "trec": {
        "name": "trec", "format": "txt", "header": False, "encoding": "latin-1",
        "line_pattern": r"(?P<coarse>[A-Z]+):(?P<fine>\S+) (?P<question>.*)",
        "splits": {"train": "trec/train.txt", "test": "trec/test.txt"},
        "columns": {"text": "question", "label": "coarse"},
        "label_names": ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"],
    },
    "trec_fine": {
        "name": "trec_fine", "format": "txt", "header": False, "encoding": "latin-1",
        "line_pattern": r"(?P<label>[A-Z]+:\S+) (?P<question>.*)",
        "splits": {"train": "trec/train.txt", "test": "trec/test.txt"},
        "columns": {"text": "question", "label": "label"},
        "label_names": _TREC_FINE,
    },
    "cb": {
        "name": "cb", "format": "jsonl",
        "splits": {"train": "cb/train.jsonl", "dev": "cb/val.jsonl"},
        "columns": {"text": "premise", "text_pair": "hypothesis", "label": "label"},
        "label_names": ["entailment", "contradiction", "neutral"],
    },
    "wic": {
        "name": "wic", "format": "jsonl",
        "splits": {"train": "wic/train.jsonl", "dev": "wic/val.jsonl"},
        "columns": {"text": "sentence1", "text_pair": "sentence2", "label": "label"},
        "label_names": ["false", "true"],
    },
}

EVAL_ONLY: dict[str, dict[str, Any]] = {
    "qnli": {
        "name": "qnli", "format": "tsv",
        "splits": {"dev": "qnli/dev.tsv"},
        "columns": {"text": "question", "text_pair": "sentence", "label": "label"},
        "label_names": ["entailment", "not_entailment"],
    },
    "boolq": {
        "name": "boolq", "format": "jsonl",
        "splits": {"dev": "boolq/val.jsonl"},
        "columns": {"text": "question", "text_pair": "passage", "label": "label"},
        "label_names": ["false", "true"],
    },
    "ag_news": {
        "name": "ag_news", "format": "csv",
        "splits": {"test": "ag_news/test.csv"},
        "columns": {"text": "Title", "text_pair": "Description", "label": "Class Index"},
        "label_names": ["World", "Sports", "Business", "Sci/Tech"],
        "label_map": {"1": "World", "2": "Sports", "3": "Business", "4": "Sci/Tech"},
    },
    "wikiqa": {
        "name": "wikiqa", "format": "tsv",
        "splits": {"dev": "wikiqa/WikiQA-dev.tsv", "test": "wikiqa/WikiQA-test.tsv"},
        "columns": {"text": "Question", "text_pair": "Sentence", "label": "Label"},
        "label_names": ["not_answer", "answer"],
        "label_map": {"0": "not_answer", "1": "answer"},
    },
    "snli": {
        "name": "snli", "format": "tsv", "header": False,
        "splits": {"test": "snli/textfooler_test_sample.tsv"},
        "columns": {"text": 1, "text_pair": 2, "label": 0},
        "label_names": ["entailment", "neutral", "contradiction"],
    },
    "mnli": {
        "name": "mnli", "format": "tsv", "header": False,
        "splits": {"dev_matched": "mnli/textfooler_dev_matched_sample.tsv",
                   "dev_mismatched": "mnli/textfooler_dev_mismatched_sample.tsv"},
        "columns": {"text": 1, "text_pair": 2, "label": 0},
        "label_names": ["entailment", "neutral", "contradiction"],
    },
    "imdb": {
        "name": "imdb", "format": "txt", "header": False,
        "line_pattern": r"(?P<label>[01]) (?P<text>.*)",
        "splits": {"test": "imdb/textfooler_test_sample.txt"},
        "columns": {"text": "text", "label": "label"},
        "label_names": ["negative", "positive"],
        "label_map": {"0": "negative", "1": "positive"},
    },
    "yelp_polarity": {
        "name": "yelp_polarity", "format": "txt", "header": False,
        "line_pattern": r"(?P<label>[01]) (?P<text>.*)",
        "splits": {"test": "yelp_polarity/textfooler_test_sample.txt"},
        "columns": {"text": "text", "label": "label"},
        "label_names": ["negative", "positive"],
        "label_map": {"0": "negative", "1": "positive"},
    },
    "superglue_ax_b": {
        "name": "superglue_ax_b", "format": "jsonl",
        "splits": {"test": "superglue_ax_b/AX-b.jsonl"},
        "columns": {"text": "sentence1", "text_pair": "sentence2", "label": "label"},
        "label_names": ["entailment", "not_entailment"],
    },
    "superglue_ax_g": {
        "name": "superglue_ax_g", "format": "jsonl",
        "splits": {"test": "superglue_ax_g/AX-g.jsonl"},
        "columns": {"text": "premise", "text_pair": "hypothesis", "label": "label"},
        "label_names": ["entailment", "not_entailment"],
    },
}


def catalog_names() -> list[str]:
    """Every catalogued task: trainable ones first, then the eval-only ones."""
    return list(CATALOG) + list(EVAL_ONLY)


def catalog_task(name: str, **overrides: Any) -> dict[str, Any]:
    """The full, validated TaskConfig dict of catalog task `name`; overrides replace top-level keys."""
    from prefinetune.config import TaskConfig

    base = CATALOG.get(name) or EVAL_ONLY.get(name)
    if base is None:
        raise KeyError(f"unknown catalog task {name!r}; known: {catalog_names()}")
    merged = {**base, **overrides}
    if "train" not in merged["splits"]:
        raise ValueError(
            f"catalog task {name!r} has no train split in the shared data (splits: {sorted(merged['splits'])}); "
            "pass splits={'train': ..., ...} to use it")
    return TaskConfig.model_validate(merged).model_dump(mode="json")
