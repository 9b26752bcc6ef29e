"""The Muppet pre-finetuning datasets (Aghajanyan et al. 2021) as Hugging Face hub TaskConfig dicts.

Data, not code: `MUPPET_CATALOG` maps a task name to the TaskConfig dict of one dataset (format "hub":
a `datasets.load_dataset` path, config and revision, the split names, the columns each family role reads,
the label conventions). `UNSUPPORTED` names the paper's datasets our schema or readers cannot read yet,
with the reason; `NOTES` says,
per dataset, every conversion that is not a plain copy of the hub columns. `PAPER_DATASETS` lists the
paper's datasets by their paper name, each either in the catalog or in UNSUPPORTED.

    python -c "from prefinetune.catalog.muppet import muppet_task; print(muppet_task('cola'))"
    python data_prep/write_muppet_recipes.py        # recipes/muppet_*.yaml, generated from this module

Conventions
- Hub ids are the canonical current ones (namespaced where the dataset moved: nyu-mll/glue,
  aps/super_glue, stanfordnlp/snli, ...). `datasets` 4+ no longer runs loading scripts; a dataset whose
  main branch still holds only a script is read from the hub's automatic Parquet export,
  `revision: refs/convert/parquet`, whose single config is then the default one (`name` unset): HANS,
  ERASER MultiRC, TREC, XSum, Multi-News, Cosmos QA. (Hub layouts were checked against the dataset cards
  as far as they could be read offline; a hub-only mistake shows up as a TaskSourceError naming the task.)
- Every task has a `train` and a `dev` split. Where the hub has no validation split (AG News, IMDB, Yelp
  Polarity, TREC, BillSum), `dev` reads the hub's `test` split: fine for monitoring pre-finetuning, not a
  held-out score.
- Label names follow the hub ClassLabel order, so the hub's int labels are the ids. Metrics follow each
  dataset's convention: CoLA [mcc]; MRPC, QQP [accuracy, f1]; CB [accuracy, f1] (macro F1, SuperGLUE);
  accuracy elsewhere. Multiple choice scores accuracy, span EM/F1, summarization ROUGE (family-fixed).
- Dotted columns walk into nested objects and lists (readers.py): "choices.text", "answers.0".

Conversions (details in NOTES)
- WiC -> a sentence pair; the target word is not a separate input (it is the word the sentences share).
- ReCoRD -> MULTIPLE CHOICE over the passage's entities, not span: the hub gives answers as strings
  without character offsets, which the span family does not take, while `entities` is exactly the
  candidate list and the MC family resolves a label given as a choice's text. Context = passage,
  question = the @placeholder query, choices = entities (variable K, ~14 on average), label = the first
  gold answer; a row whose answer is not among its entities is a bad row.
- SciQ -> MC with the correct answer as a fourth choice and the label given as its text.
- MultiRC (SuperGLUE) -> pairs: text = paragraph + question (two columns joined by a space), text_pair =
  the candidate answer, label True/False. ERASER MultiRC (same passages; question and answer pre-joined in
  `query_and_answer`) is in the catalog.
- DROP, Natural Questions, TriviaQA, HotpotQA -> span. DROP's `answers_spans.spans` and the MRQA 2019
  copies of NQ / TriviaQA / HotpotQA (lucadiliello/*, SQuAD-like contexts: one passage per question)
  hold answer strings without offsets; the span family places each at its first exact occurrence in the
  context. DROP's number and date answers that do not occur in the passage are bad rows, quarantined
  (data.on_bad_row: quarantine) and counted, never dropped silently.
- WSC -> pairs: the sentence vs. its pronoun and candidate mention (span2_text + span1_text joined), True
  if they corefer. The word indices are not used: a pronoun or mention whose words occur twice in the
  sentence is ambiguous in this form (SuperGLUE baselines mark the spans in the text instead).
- MathQA -> multiple choice over the five options parsed from its one string 'a ) 38 , b ) 27.675 , ...'
  (markers only in the sequence a, b, c, d, e, so ' , ' inside an option does not split it).
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

__all__ = [
    "MUPPET_CATALOG", "UNSUPPORTED", "STRING_ANSWER_SPANS", "NOTES", "PAPER_DATASETS", "PARQUET_EXPORT",
    "muppet_task", "muppet_tasks", "muppet_names",
]

PARQUET_EXPORT = "refs/convert/parquet"  # the hub's automatic Parquet conversion of script-only datasets


def _hub(path: str, name: Optional[str] = None, revision: Optional[str] = None) -> dict[str, Any]:
    return {"path": path, "name": name, "revision": revision}


_TRAIN_DEV = {"train": "train", "dev": "validation"}
_TRAIN_TEST = {"train": "train", "dev": "test"}  # no validation split on the hub


def _glue(name: str, columns: dict, label_names: list[str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "family": "classification", "format": "hub", "hub": _hub("nyu-mll/glue", name),
            "splits": dict(_TRAIN_DEV), "columns": columns, "label_names": label_names, **extra}


def _super_glue(name: str, family: str, columns: dict, **extra: Any) -> dict[str, Any]:
    return {"name": name, "family": family, "format": "hub", "hub": _hub("aps/super_glue", name),
            "splits": dict(_TRAIN_DEV), "columns": columns, **extra}


_PAIR = {"text": "sentence1", "text_pair": "sentence2", "label": "label"}
_NLI = {"text": "premise", "text_pair": "hypothesis", "label": "label"}
_NLI3 = ["entailment", "neutral", "contradiction"]

MUPPET_CATALOG: dict[str, dict[str, Any]] = {
    # ------------------------------------------------------------ classification: GLUE
    "cola": _glue("cola", {"text": "sentence", "label": "label"}, ["unacceptable", "acceptable"], metrics=["mcc"]),
    "sst2": _glue("sst2", {"text": "sentence", "label": "label"}, ["negative", "positive"]),
    "mrpc": _glue("mrpc", _PAIR, ["not_equivalent", "equivalent"], metrics=["accuracy", "f1"]),
    "qqp": _glue("qqp", {"text": "question1", "text_pair": "question2", "label": "label"},
                 ["not_duplicate", "duplicate"], metrics=["accuracy", "f1"]),
    "mnli": {**_glue("mnli", _NLI, _NLI3),
             "splits": {"train": "train", "dev": "validation_matched", "dev_mismatched": "validation_mismatched"}},
    "qnli": _glue("qnli", {"text": "question", "text_pair": "sentence", "label": "label"},
                  ["entailment", "not_entailment"]),
    "rte": _glue("rte", _PAIR, ["entailment", "not_entailment"]),
    "wnli": _glue("wnli", _PAIR, ["not_entailment", "entailment"]),
    # ------------------------------------------------------------ classification: SuperGLUE
    "boolq": _super_glue("boolq", "classification", {"text": "question", "text_pair": "passage", "label": "label"},
                         label_names=["false", "true"]),
    "wic": _super_glue("wic", "classification", _PAIR, label_names=["false", "true"]),
    "cb": _super_glue("cb", "classification", _NLI, label_names=["entailment", "contradiction", "neutral"],
                      metrics=["accuracy", "f1"]),
    # ------------------------------------------------------------ classification: other
    "ag_news": {"name": "ag_news", "family": "classification", "format": "hub", "hub": _hub("fancyzhx/ag_news"),
                "splits": dict(_TRAIN_TEST), "columns": {"text": "text", "label": "label"},
                "label_names": ["World", "Sports", "Business", "Sci/Tech"]},
    "imdb": {"name": "imdb", "family": "classification", "format": "hub", "hub": _hub("stanfordnlp/imdb"),
             "splits": dict(_TRAIN_TEST), "columns": {"text": "text", "label": "label"},
             "label_names": ["negative", "positive"]},
    "snli": {"name": "snli", "family": "classification", "format": "hub", "hub": _hub("stanfordnlp/snli"),
             "splits": dict(_TRAIN_DEV), "columns": dict(_NLI), "label_names": _NLI3},
    "hans": {"name": "hans", "family": "classification", "format": "hub",
             "hub": _hub("jhu-cogsci/hans", revision=PARQUET_EXPORT),
             "splits": dict(_TRAIN_DEV), "columns": dict(_NLI), "label_names": ["entailment", "non-entailment"]},
    "rotten_tomatoes": {"name": "rotten_tomatoes", "family": "classification", "format": "hub",
                        "hub": _hub("cornell-movie-review-data/rotten_tomatoes"), "splits": dict(_TRAIN_DEV),
                        "columns": {"text": "text", "label": "label"}, "label_names": ["negative", "positive"]},
    "yelp_polarity": {"name": "yelp_polarity", "family": "classification", "format": "hub",
                      "hub": _hub("fancyzhx/yelp_polarity"), "splits": dict(_TRAIN_TEST),
                      "columns": {"text": "text", "label": "label"}, "label_names": ["negative", "positive"]},
    "wsc": {"name": "wsc", "family": "classification", "format": "hub", "hub": _hub("aps/super_glue", "wsc.fixed"),
            "splits": dict(_TRAIN_DEV), "label_names": ["false", "true"],
            "columns": {"text": "text", "text_pair": ["span2_text", "span1_text"], "label": "label"}},
    "multirc": _super_glue("multirc", "classification",
                           {"text": ["paragraph", "question"], "text_pair": "answer", "label": "label"},
                           label_names=["false", "true"]),
    "eraser_multirc": {"name": "eraser_multirc", "family": "classification", "format": "hub",
                       "hub": _hub("CogComp/eraser_multi_rc", revision=PARQUET_EXPORT), "splits": dict(_TRAIN_DEV),
                       "columns": {"text": "passage", "text_pair": "query_and_answer", "label": "label"},
                       "label_names": ["false", "true"]},
    "wikiqa": {"name": "wikiqa", "family": "classification", "format": "hub", "hub": _hub("microsoft/wiki_qa"),
               "splits": dict(_TRAIN_DEV), "columns": {"text": "question", "text_pair": "answer", "label": "label"},
               "label_names": ["not_answer", "answer"]},
    "trec": {"name": "trec", "family": "classification", "format": "hub",
             "hub": _hub("CogComp/trec", revision=PARQUET_EXPORT), "splits": dict(_TRAIN_TEST),
             "columns": {"text": "text", "label": "coarse_label"},
             "label_names": ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]},
    "scitail": {"name": "scitail", "family": "classification", "format": "hub",
                "hub": _hub("allenai/scitail", "tsv_format"), "splits": dict(_TRAIN_DEV),
                "columns": dict(_NLI), "label_names": ["entails", "neutral"]},
    # ------------------------------------------------------------ multiple choice
    "copa": _super_glue("copa", "multiple_choice",
                        {"text": "premise", "text_pair": "question", "choices": ["choice1", "choice2"],
                         "label": "label"}, num_choices=2),
    "record": _super_glue("record", "multiple_choice",
                          {"text": "passage", "text_pair": "query", "choices": "entities", "label": "answers.0"}),
    "math_qa": {"name": "math_qa", "family": "multiple_choice", "format": "hub",
                "hub": _hub("allenai/math_qa", revision=PARQUET_EXPORT), "splits": dict(_TRAIN_DEV),
                "columns": {"text": "Problem", "choices": "options", "label": "correct"}, "num_choices": 5},
    "openbookqa": {"name": "openbookqa", "family": "multiple_choice", "format": "hub",
                   "hub": _hub("allenai/openbookqa", "main"), "splits": dict(_TRAIN_DEV),
                   "columns": {"text": "question_stem", "choices": "choices", "label": "answerKey"},
                   "num_choices": 4},
    "swag": {"name": "swag", "family": "multiple_choice", "format": "hub", "hub": _hub("allenai/swag", "regular"),
             "splits": dict(_TRAIN_DEV),
             "columns": {"text": "sent1", "text_pair": "sent2",
                         "choices": ["ending0", "ending1", "ending2", "ending3"], "label": "label"},
             "num_choices": 4},
    "hellaswag": {"name": "hellaswag", "family": "multiple_choice", "format": "hub", "hub": _hub("Rowan/hellaswag"),
                  "splits": dict(_TRAIN_DEV), "columns": {"text": "ctx", "choices": "endings", "label": "label"},
                  "num_choices": 4},
    "race": {"name": "race", "family": "multiple_choice", "format": "hub", "hub": _hub("ehovy/race", "all"),
             "splits": dict(_TRAIN_DEV),
             "columns": {"text": "article", "text_pair": "question", "choices": "options", "label": "answer"},
             "label_names": ["A", "B", "C", "D"], "num_choices": 4},
    "commonsense_qa": {"name": "commonsense_qa", "family": "multiple_choice", "format": "hub",
                       "hub": _hub("tau/commonsense_qa"), "splits": dict(_TRAIN_DEV),
                       "columns": {"text": "question", "choices": "choices", "label": "answerKey"},
                       "num_choices": 5},
    "cosmos_qa": {"name": "cosmos_qa", "family": "multiple_choice", "format": "hub",
                  "hub": _hub("allenai/cosmos_qa", revision=PARQUET_EXPORT), "splits": dict(_TRAIN_DEV),
                  "columns": {"text": "context", "text_pair": "question",
                              "choices": ["answer0", "answer1", "answer2", "answer3"], "label": "label"},
                  "num_choices": 4},
    "arc_easy": {"name": "arc_easy", "family": "multiple_choice", "format": "hub",
                 "hub": _hub("allenai/ai2_arc", "ARC-Easy"), "splits": dict(_TRAIN_DEV),
                 "columns": {"text": "question", "choices": "choices", "label": "answerKey"}},
    "arc_challenge": {"name": "arc_challenge", "family": "multiple_choice", "format": "hub",
                      "hub": _hub("allenai/ai2_arc", "ARC-Challenge"), "splits": dict(_TRAIN_DEV),
                      "columns": {"text": "question", "choices": "choices", "label": "answerKey"}},
    "sciq": {"name": "sciq", "family": "multiple_choice", "format": "hub", "hub": _hub("allenai/sciq"),
             "splits": dict(_TRAIN_DEV),
             "columns": {"text": "question", "text_pair": "support",
                         "choices": ["distractor1", "distractor2", "distractor3", "correct_answer"],
                         "label": "correct_answer"},
             "num_choices": 4},
    # ------------------------------------------------------------ span extraction
    "squad": {"name": "squad", "family": "span", "format": "hub", "hub": _hub("rajpurkar/squad", "plain_text"),
              "splits": dict(_TRAIN_DEV),
              "columns": {"context": "context", "question": "question", "answers": "answers", "id": "id"}},
    # ------------------------------------------------------------ summarization (BART only)
    "cnn_dailymail": {"name": "cnn_dailymail", "family": "summarization", "format": "hub",
                      "hub": _hub("abisee/cnn_dailymail", "3.0.0"), "splits": dict(_TRAIN_DEV),
                      "columns": {"text": "article", "target": "highlights"}, "max_target_length": 142},
    "billsum": {"name": "billsum", "family": "summarization", "format": "hub", "hub": _hub("FiscalNote/billsum"),
                "splits": dict(_TRAIN_TEST), "columns": {"text": "text", "target": "summary"},
                "max_target_length": 256},
    "xsum": {"name": "xsum", "family": "summarization", "format": "hub",
             "hub": _hub("EdinburghNLP/xsum", revision=PARQUET_EXPORT), "splits": dict(_TRAIN_DEV),
             "columns": {"text": "document", "target": "summary"}, "max_target_length": 64},
    "aeslc": {"name": "aeslc", "family": "summarization", "format": "hub", "hub": _hub("Yale-LILY/aeslc"),
              "splits": dict(_TRAIN_DEV), "columns": {"text": "email_body", "target": "subject_line"},
              "max_target_length": 32},
    "multi_news": {"name": "multi_news", "family": "summarization", "format": "hub",
                   "hub": _hub("alexfabbri/multi_news", revision=PARQUET_EXPORT), "splits": dict(_TRAIN_DEV),
                   "columns": {"text": "document", "target": "summary"}, "max_target_length": 256},
}


UNSUPPORTED: dict[str, str] = {}

# Span tasks whose answers come as strings without offsets (placed at their first occurrence).
STRING_ANSWER_SPANS: dict[str, dict[str, Any]] = {
    "drop": {"name": "drop", "family": "span", "format": "hub", "hub": _hub("ucinlp/drop"),
             "splits": dict(_TRAIN_DEV),
             "columns": {"context": "passage", "question": "question", "answers": "answers_spans.spans",
                         "id": "query_id"}},
    "natural_questions": {"name": "natural_questions", "family": "span", "format": "hub",
                          "hub": _hub("lucadiliello/naturalquestionsshortqa"), "splits": dict(_TRAIN_DEV),
                          "columns": {"context": "context", "question": "question", "answers": "answers",
                                      "id": "key"}},
    "triviaqa": {"name": "triviaqa", "family": "span", "format": "hub", "hub": _hub("lucadiliello/triviaqa"),
                 "splits": dict(_TRAIN_DEV),
                 "columns": {"context": "context", "question": "question", "answers": "answers", "id": "key"}},
    "hotpotqa": {"name": "hotpotqa", "family": "span", "format": "hub", "hub": _hub("lucadiliello/hotpotqa"),
                 "splits": dict(_TRAIN_DEV),
                 "columns": {"context": "context", "question": "question", "answers": "answers", "id": "key"}},
}

MUPPET_CATALOG.update(STRING_ANSWER_SPANS)

NOTES: dict[str, str] = {
    "mnli": "dev = validation_matched; dev_mismatched is prepared too.",
    "wic": "Read as a sentence pair (sentence1, sentence2): the target word `word` is not a separate input "
           "(two text roles); it is the word both sentences share. Same reading as catalog.py.",
    "boolq": "text = question, text_pair = passage (catalog.py order).",
    "cb": "f1 is macro F1 over the 3 classes (SuperGLUE reports accuracy and macro F1).",
    "snli": "Rows without a gold label (label -1, ~0.1%) are bad rows: quarantined.",
    "hans": "Script-only on the main branch: read from the Parquet export. Labels entailment / non-entailment.",
    "eraser_multirc": "ERASER's MultiRC: passage vs `query_and_answer` (question || answer), True/False. "
                      "Script-only on the main branch: Parquet export. The evidence sentences are not used.",
    "trec": "Coarse labels (6 classes). No validation split: dev = test. Script-only: Parquet export.",
    "scitail": "tsv_format config; the labels are the strings 'entails' / 'neutral'.",
    "wikiqa": "All questions, including those with no correct sentence (the usual filtered eval sets drop them).",
    "ag_news": "No validation split: dev = test.",
    "imdb": "No validation split: dev = test (the `unsupervised` split is not used).",
    "yelp_polarity": "No validation split: dev = test. Hub labels '1' (negative) / '2' (positive) are ids 0 / 1.",
    "copa": "text = premise, text_pair = the question word ('cause' / 'effect'), two choices.",
    "record": "Multiple choice over the passage's candidate entities (aps/super_glue `entities`, unique texts), "
              "label = the first gold answer, resolved by its text; context = passage + @placeholder query. "
              "Chosen over span because the hub answers carry no character offsets. A row whose answer is not "
              "among its entities, or with fewer than 2 entities, is a bad row (quarantine). K varies per row "
              "(~14 on average, long tail): the heaviest slot in memory; lower train.batch_size or drop the "
              "task if a worker runs out of memory. The test split has no answers and is not used.",
    "openbookqa": "`main` config: question_stem only (the supporting fact is in the `additional` config, unused).",
    "swag": "`regular` config; context = sent1 + sent2, the four endings as choices. Test labels are hidden.",
    "hellaswag": "context = ctx (ctx_a + ctx_b); label is a digit string. Test labels are hidden.",
    "race": "`all` config (middle + high); answers A-D name the options by position (label_names).",
    "commonsense_qa": "Five choices keyed A-E. Test answer keys are hidden.",
    "cosmos_qa": "Script-only on the main branch: Parquet export.",
    "arc_easy": "num_choices unset: a few questions have 3 or 5 choices (padded per batch); answer keys are "
                "letters or, in some rows, '1'-'4', resolved by the choice keys.",
    "arc_challenge": "As arc_easy.",
    "sciq": "The correct answer is the fourth choice and the label is its text (the shared MC head scores each "
            "choice independently, so the position teaches nothing). `support` is optional context. Rows "
            "where a distractor repeats the answer, or whose answer is a digit string naming another "
            "position, are ambiguous: bad rows (quarantine).",
    "squad": "SQuAD v1.1 (rajpurkar/squad, plain_text): answers with character offsets.",
    "cnn_dailymail": "Config 3.0.0 (non-anonymised). Target length 142 tokens (BART's CNN/DM setting).",
    "billsum": "No validation split: dev = test (ca_test unused). Bills are long: model.max_length truncates.",
    "xsum": "Script-only on the main branch: Parquet export.",
    "aeslc": "Email body -> subject line.",
    "multi_news": "Source documents joined by '|||||' in one string, truncated to model.max_length. Parquet export.",
    "drop": "Span over the passage; answers_spans.spans are answer strings (number, date or span), each "
            "placed at its first occurrence. An answer string that does not occur in the passage (most numbers and dates) is a bad "
            "row, quarantined; a multi-span answer trains on its first span; a number that happens to occur "
            "in the passage trains as a span (the schema cannot filter on answers_spans.types).",
    "natural_questions": "MRQA 2019 NaturalQuestionsShort: the long-answer paragraph as context, short answers "
                         "as strings (+ offsets in `labels`, which no role can read).",
    "triviaqa": "MRQA 2019 TriviaQA-web: evidence excerpt as context, answer strings.",
    "hotpotqa": "MRQA 2019 HotpotQA: the gold + distractor paragraphs concatenated as context, answer strings.",
    "multirc": "Pairs: (paragraph + question, candidate answer) -> True/False; the paragraph and question columns "
               "are joined by a space into the first text. Scored as accuracy per answer (SuperGLUE's EM/F1a "
               "over questions are not computed).",
}

# The paper's pre-finetuning datasets (paper name -> task name); each is in MUPPET_CATALOG or UNSUPPORTED.
PAPER_DATASETS: dict[str, str] = {
    "CoLA": "cola", "SST-2": "sst2", "MRPC": "mrpc", "QQP": "qqp", "MNLI": "mnli", "QNLI": "qnli", "RTE": "rte",
    "WNLI": "wnli", "BoolQ": "boolq", "MultiRC": "multirc", "WiC": "wic", "WSC": "wsc", "CB": "cb", "COPA": "copa",
    "AG News": "ag_news", "IMDB": "imdb", "SNLI": "snli", "HANS": "hans", "Rotten Tomatoes": "rotten_tomatoes",
    "Yelp Polarity": "yelp_polarity", "ERASER MultiRC": "eraser_multirc", "WikiQA": "wikiqa", "TREC": "trec",
    "SciTail": "scitail", "CNN/DailyMail": "cnn_dailymail", "BillSum": "billsum", "XSum": "xsum",
    "AESLC": "aeslc", "Multi-News": "multi_news", "MathQA": "math_qa", "OpenBookQA": "openbookqa",
    "SWAG": "swag", "HellaSwag": "hellaswag", "RACE": "race", "CommonsenseQA": "commonsense_qa",
    "Cosmos QA": "cosmos_qa", "ARC-Easy": "arc_easy", "ARC-Challenge": "arc_challenge", "SciQ": "sciq",
    "SQuAD": "squad", "NQ": "natural_questions", "DROP": "drop", "ReCoRD": "record", "HotpotQA": "hotpotqa",
    "TriviaQA": "triviaqa",
}


def muppet_names(families: Optional[Iterable[str]] = None) -> list[str]:
    """Catalogued task names in catalog order, optionally only those of `families`."""
    wanted = _families(families)
    return [name for name, entry in MUPPET_CATALOG.items() if wanted is None or entry["family"] in wanted]


def muppet_task(name: str, **overrides: Any) -> dict[str, Any]:
    """The full, validated TaskConfig dict of catalog task `name`; overrides replace top-level keys."""
    from prefinetune.recipe.config import TaskConfig

    base = MUPPET_CATALOG.get(name)
    if base is None:
        if name in UNSUPPORTED:
            raise ValueError(f"Muppet dataset {name!r} is not supported yet: {UNSUPPORTED[name]}")
        raise KeyError(f"unknown Muppet task {name!r}; known: {list(MUPPET_CATALOG)}")
    return TaskConfig.model_validate({**base, **overrides}).model_dump(mode="json")


def muppet_tasks(families: Optional[Iterable[str]] = None) -> list[dict[str, Any]]:
    """Validated TaskConfig dicts of every catalogued task (of `families`, if given), in catalog order."""
    return [muppet_task(name) for name in muppet_names(families)]


def _families(families: Optional[Iterable[str]]) -> Optional[set[str]]:
    if families is None:
        return None
    from prefinetune.families.family import family_names

    wanted = {families} if isinstance(families, str) else set(families)
    unknown = sorted(wanted - set(family_names()))
    if unknown:
        raise ValueError(f"unknown task families {unknown}; known: {sorted(family_names())}")
    return wanted
