"""Catalog of the tasks in the shared data folder, every family, as TaskConfig dicts.

Paths are relative to the data root laid out like /work/shared/data (see its README.md and
MANIFEST.json); split names follow MANIFEST.json ("dev" for SuperGLUE's val.jsonl). A recipe lists
tasks in full TaskConfig form; this catalog is where those dicts come from:

    python -c "from prefinetune.catalog.shared_data import catalog_task; print(catalog_task('arc_easy'))"

- `CATALOG`: tasks with a train split, ready for a recipe.
    classification: cola, sst2, mrpc, rte, wnli, trec, trec_fine, cb, wic
    regression: stsb
    multiple_choice: copa, arc_easy, arc_challenge, openbookqa, commonsense_qa, race
    span: xquad_en (see below)
    summarization: aeslc, dialogsum
    tagging: ud_en_ewt (UPOS), ud_en_ewt_xpos (Penn Treebank tags), conll2003 (NER)
- `EVAL_ONLY`: sets present without a train split. A TaskConfig must name a train split, so
  `catalog_task` refuses them unless `splits=` (with a "train" entry) is overridden.
    classification: qnli, boolq, ag_news, wikiqa, snli (official dev/test), snli_textfooler and mnli
      samples, imdb/yelp samples, SuperGLUE AX-b/g
    regression: stsb_test (the original STS-benchmark test file; its layout differs from train/dev)
    multiple_choice: sciq, cosmos_qa
    summarization: dialogsum_test (3 references per dialogue; the first, summary1, is the target)
- Left out: wsc and multirc (nested spans / answers per passage: no family reads them as they are),
  rotten_tomatoes (the file name is the label, no splits).

Per dataset:
- Metrics follow GLUE (CoLA Matthews correlation, MRPC F1), with accuracy reported for every task.
- Label ids follow the Hugging Face ClassLabel order (GLUE, SuperGLUE, trec coarse). TREC is latin-1
  (one train line holds byte 0xf0) and comes as `<COARSE>:<fine> <question>` lines, hence format txt.
  WiC is read as a sentence pair: the target word (field `word`) is not part of the input.
- stsb_test: the file has 7 tab-separated fields, and 284 lines carry 2 more (StackExchange
  attributions), so it is read as txt with a line pattern that allows exactly that.
- COPA: the context is the premise and the pair its question word ("cause" / "effect"), so the
  model sees e.g. "My body cast a shadow over the grass. cause" + choice.
- ARC: nested JSON (question.stem, question.choices = [{text, label}], answerKey naming a label).
  A few questions have 3 or 5 choices, so num_choices is not fixed; some use labels 1-4 for A-D.
- OpenBookQA: the choices are one tsv field "(A) .. (B) .. (C) .. (D) .."; Answer Key names a letter.
  One train row (data row 3333, id 12-1145) holds a fifth "(D) ..." option: the multiple-choice
  reader takes markers only in sequence, so its choice D reads "baby birds chewing worms (D) mother
  dogs nursing their pups" (the answer is B, unaffected).
- SciQ: choices = [correct_answer, distractor1..3], label = correct_answer (matched against the
  choice texts), text_pair = support (often empty). The correct answer is always choice 0: harmless
  for a model that scores every (context, choice) sequence on its own with one shared head (it cannot
  see positions), but see multiple_choice's label rules: a correct answer that is a string of digits
  ("3") is read as an index first. SciQ is eval-only here (its train file was not retrievable).
- CommonsenseQA: `choices` is an object {label: [A-E], text: [...]}; answerKey names a label. Train is
  the official random-split train file (9,741), dev the official dev_rand_split (1,221) as Hugging
  Face exports it: train nests the stem and choices under `question` (as ARC does), dev keeps them
  flat, hence `split_columns` for train.
- RACE: one JSON object per passage (train gzip-compressed) with parallel lists questions, options
  (4 each) and answers (A-D); `explode` makes one record per question (87,866 / 4,887 / 4,934), the
  passage (`article`) the context and the question the pair of every option. Questions are cloze-style
  ("... _ .") as often as not; they are read as they are. Research / non-commercial licence.
- SNLI: the official 1.0 dev and test files (10,000 each). gold_label '-' (no annotator consensus: 158
  dev, 176 test rows) is `unlabeled`: skipped and counted, as the GLUE/HF versions drop them (HF marks
  them -1). The TextFooler 1,000-row sample is `snli_textfooler`. No SNLI train file is available.
- CoNLL-2003 NER: dev = eng.testa, test = eng.testb; 4 space-separated columns (token, POS, chunk, NER),
  the NER tags IOB2 (9 tags, Hugging Face's order), so its metrics include seqeval's chunk F1.
  -DOCSTART- lines separate documents and are not sentences.
- xquad_en: the English XQuAD file (SQuAD v1.1 format, 48 articles, 1,190 questions, all from the
  SQuAD v1.1 dev set) is the only span data. It is split by ARTICLE, deterministically: train =
  articles 0-39 (1,013 questions), dev = articles 40-47 (177 questions), so no paragraph is in both.
  Its scores are therefore not comparable with published SQuAD / XQuAD numbers.
- DialogSum: train is a Python-dict-literal file, dev a JSONL file; format pydict reads both.
- UD English-EWT (CoNLL-U): its train file was not retrievable, so, as the data's README suggests,
  "train" is the EWT dev file (2,001 sentences) and "dev" its test file (2,077): scores are not
  comparable with published EWT numbers. UPOS: the 17 universal tags; XPOS: the 49 Penn Treebank tags
  found in those two files plus XX (EWT's tag for tokens that cannot be analysed).
"""
from __future__ import annotations

from typing import Any, Optional

__all__ = ["CATALOG", "EVAL_ONLY", "catalog_task", "catalog_names"]

_UPOS = ["ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT",
         "SCONJ", "SYM", "VERB", "X"]
_XPOS = ["$", "''", ",", "-LRB-", "-RRB-", ".", ":", "ADD", "AFX", "CC", "CD", "DT", "EX", "FW", "GW",
         "HYPH", "IN", "JJ", "JJR", "JJS", "LS", "MD", "NFP", "NN", "NNP", "NNPS", "NNS", "PDT", "POS",
         "PRP", "PRP$", "RB", "RBR", "RBS", "RP", "SYM", "TO", "UH", "VB", "VBD", "VBG", "VBN", "VBP", "VBZ",
         "WDT", "WP", "WP$", "WRB", "XX", "``"]

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
        "label_names": ["unacceptable", "acceptable"], "metrics": ["accuracy", "mcc"],
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
        "label_names": ["not_equivalent", "equivalent"], "metrics": ["accuracy", "f1"],
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
    # ------------------------------------------------------------ regression
    "stsb": {
        "name": "stsb", "family": "regression", "format": "tsv",
        "splits": {"train": "stsb/train.tsv", "dev": "stsb/dev.tsv"},
        "columns": {"text": "sentence1", "text_pair": "sentence2", "label": "score"},
    },
    # ------------------------------------------------------------ multiple choice
    "copa": {
        "name": "copa", "family": "multiple_choice", "format": "jsonl", "num_choices": 2,
        "splits": {"train": "copa/train.jsonl", "dev": "copa/val.jsonl"},
        "columns": {"text": "premise", "text_pair": "question", "choices": ["choice1", "choice2"],
                    "label": "label"},
    },
    "arc_easy": {
        "name": "arc_easy", "family": "multiple_choice", "format": "jsonl",
        "splits": {"train": "arc_easy/ARC-Easy-Train.jsonl", "dev": "arc_easy/ARC-Easy-Dev.jsonl",
                   "test": "arc_easy/ARC-Easy-Test.jsonl"},
        "columns": {"text": "question.stem", "choices": "question.choices", "label": "answerKey"},
    },
    "arc_challenge": {
        "name": "arc_challenge", "family": "multiple_choice", "format": "jsonl",
        "splits": {"train": "arc_challenge/ARC-Challenge-Train.jsonl", "dev": "arc_challenge/ARC-Challenge-Dev.jsonl",
                   "test": "arc_challenge/ARC-Challenge-Test.jsonl"},
        "columns": {"text": "question.stem", "choices": "question.choices", "label": "answerKey"},
    },
    "openbookqa": {
        "name": "openbookqa", "family": "multiple_choice", "format": "tsv", "num_choices": 4,
        "splits": {"train": "openbookqa/train.tsv", "dev": "openbookqa/dev.tsv", "test": "openbookqa/test.tsv"},
        "columns": {"text": "Question Stem", "choices": "Choices", "label": "Answer Key"},
    },
    "commonsense_qa": {
        "name": "commonsense_qa", "family": "multiple_choice", "format": "jsonl", "num_choices": 5,
        "splits": {"train": "commonsense_qa/train_rand_split.jsonl", "dev": "commonsense_qa/dev.jsonl"},
        "columns": {"text": "question", "choices": "choices", "label": "answerKey"},
        "split_columns": {"train": {"text": "question.stem", "choices": "question.choices", "label": "answerKey"}},
    },
    "race": {
        "name": "race", "family": "multiple_choice", "format": "jsonl", "num_choices": 4,
        "explode": ["questions", "options", "answers"],
        "splits": {"train": "race/train.jsonl.gz", "dev": "race/dev.jsonl", "test": "race/test.jsonl"},
        "columns": {"text": "article", "text_pair": "questions", "choices": "options", "label": "answers"},
        "label_names": ["A", "B", "C", "D"],
    },
    # ------------------------------------------------------------ span
    "xquad_en": {
        "name": "xquad_en", "family": "span", "format": "squad",
        "splits": {"train": "xquad_en/xquad.en.json#articles=0:40", "dev": "xquad_en/xquad.en.json#articles=40:"},
        "columns": {"context": "context", "question": "question", "answers": "answers", "id": "id"},
    },
    # ------------------------------------------------------------ summarization
    "aeslc": {
        "name": "aeslc", "family": "summarization", "format": "jsonl",
        "max_target_length": 32,  # subject lines: 99% of train targets take <= 21 tokens (BERT wordpieces)
        "splits": {"train": "aeslc/train.jsonl", "dev": "aeslc/dev.jsonl", "test": "aeslc/test.jsonl"},
        "columns": {"text": "email_body", "target": "subject_line"},
    },
    "dialogsum": {
        "name": "dialogsum", "family": "summarization", "format": "pydict",
        "splits": {"train": "dialogsum/train.first5000.pydict.txt", "dev": "dialogsum/dev.jsonl"},
        "columns": {"text": "dialogue", "target": "summary"},
    },
    # ------------------------------------------------------------ tagging
    "ud_en_ewt": {
        "name": "ud_en_ewt", "family": "tagging", "format": "conllu",
        "splits": {"train": "ud_en_ewt/en_ewt-ud-dev.conllu", "dev": "ud_en_ewt/en_ewt-ud-test.conllu"},
        "columns": {"tokens": "FORM", "tags": "UPOS"},
        "label_names": _UPOS,
    },
    "ud_en_ewt_xpos": {
        "name": "ud_en_ewt_xpos", "family": "tagging", "format": "conllu",
        "splits": {"train": "ud_en_ewt/en_ewt-ud-dev.conllu", "dev": "ud_en_ewt/en_ewt-ud-test.conllu"},
        "columns": {"tokens": "FORM", "tags": "XPOS"},
        "label_names": _XPOS,
    },
    "conll2003": {
        "name": "conll2003", "family": "tagging", "format": "conll",
        "splits": {"train": "conll2003/train.txt", "dev": "conll2003/dev.txt", "test": "conll2003/test.txt"},
        "columns": {"tokens": 0, "tags": -1},
        "label_names": ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"],
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
        "name": "snli", "format": "jsonl", "unlabeled": ["-"],
        "splits": {"dev": "snli/snli_1.0_dev.jsonl", "test": "snli/snli_1.0_test.jsonl"},
        "columns": {"text": "sentence1", "text_pair": "sentence2", "label": "gold_label"},
        "label_names": ["entailment", "neutral", "contradiction"],
    },
    "snli_textfooler": {
        "name": "snli_textfooler", "format": "tsv", "header": False,
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
    # ------------------------------------------------------------ regression
    "stsb_test": {
        "name": "stsb_test", "family": "regression", "format": "txt", "header": False,
        "line_pattern": r"(?P<genre>[^\t]*)\t(?P<filename>[^\t]*)\t(?P<year>[^\t]*)\t(?P<old_index>[^\t]*)"
                        r"\t(?P<score>[^\t]*)\t(?P<sentence1>[^\t]*)\t(?P<sentence2>[^\t]*)"
                        r"(?:\t(?P<source1>[^\t]*)\t(?P<source2>[^\t]*))?",
        "splits": {"test": "stsb/sts-test.tsv"},
        "columns": {"text": "sentence1", "text_pair": "sentence2", "label": "score"},
    },
    # ------------------------------------------------------------ multiple choice
    "sciq": {
        "name": "sciq", "family": "multiple_choice", "format": "json", "num_choices": 4,
        "splits": {"dev": "sciq/valid.json", "test": "sciq/test.json"},
        "columns": {"text": "question", "text_pair": "support",
                    "choices": ["correct_answer", "distractor1", "distractor2", "distractor3"],
                    "label": "correct_answer"},
    },
    "cosmos_qa": {
        "name": "cosmos_qa", "family": "multiple_choice", "format": "csv", "num_choices": 4,
        "splits": {"dev": "cosmos_qa/valid.csv"},
        "columns": {"text": "context", "text_pair": "question",
                    "choices": ["answer0", "answer1", "answer2", "answer3"], "label": "label"},
    },
    # ------------------------------------------------------------ summarization
    "dialogsum_test": {
        "name": "dialogsum_test", "family": "summarization", "format": "jsonl",
        "splits": {"test": "dialogsum/test.jsonl"},
        "columns": {"text": "dialogue", "target": "summary1"},
    },
}


def catalog_names(family: Optional[str] = None) -> list[str]:
    """Every catalogued task (of `family`, if given): trainable ones first, then the eval-only ones."""
    entries = {**CATALOG, **EVAL_ONLY}
    return [name for name, d in entries.items() if family is None or d.get("family", "classification") == family]


def catalog_task(name: str, **overrides: Any) -> dict[str, Any]:
    """The full, validated TaskConfig dict of catalog task `name`; overrides replace top-level keys."""
    from prefinetune.recipe.config import TaskConfig

    base = CATALOG.get(name) or EVAL_ONLY.get(name)
    if base is None:
        raise KeyError(f"unknown catalog task {name!r}; known: {catalog_names()}")
    merged = {**base, **overrides}
    if "train" not in merged["splits"]:
        raise ValueError(
            f"catalog task {name!r} has no train split in the shared data (splits: {sorted(merged['splits'])}); "
            "pass splits={'train': ..., ...} to use it")
    return TaskConfig.model_validate(merged).model_dump(mode="json")
