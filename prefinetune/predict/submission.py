"""Predictions laid out as the GLUE and SuperGLUE servers take them, for the tasks of those benchmarks,
from unlabeled splits only (a benchmark's test file: `unlabeled_splits`); a labelled split is not what a
benchmark scores, so it gets its JSONL predictions alone.

GLUE: one `<Task>.tsv` per task, header `index<TAB>prediction`, index the test row's 0-based position;
the prediction a class id (CoLA, SST-2, MRPC, QQP, WNLI), a label name (MNLI-m/-mm, QNLI, RTE, AX) or
the score rounded to 3 places (STS-B). SuperGLUE: one `<Task>.jsonl` per task, a line {"idx", "label"},
idx the test file's own idx; labels "true"/"false" (BoolQ, WiC), "True"/"False" (WSC), label names
(CB, RTE, AX-b, AX-g) or the choice index (COPA). The layouts are jiant's and T5's submission writers'
(nyu-mll/jiant jiant/scripts/postproc/glue_submission_formatter.py and jiant/evaluate.py,
google-research/text-to-text-transfer-transformer t5/scripts/prepare_glue_submission.py). MultiRC and
ReCoRD (nested answers) get their JSONL predictions only.

A task is matched by its name (the catalog's: cola, sst2, ..., superglue_ax_b); the row index is the
split's `id` column where the recipe names one (GLUE `index`, SuperGLUE `idx`), else the row number - 1.

    files = write_submissions([done_rte, done_cola], "runs/X/predictions/test")  # [glue/RTE.tsv, ...]
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable

__all__ = ["GLUE", "SUPERGLUE", "submission_value", "submission_files", "write_submissions"]

NLI3 = ("entailment", "neutral", "contradiction")
NLI2 = ("entailment", "not_entailment")

# task name -> (file, how a prediction is written: "class_id", "value", a tuple of allowed label names,
# "bool_lower", "bool_title" or "choice")
GLUE: dict[str, tuple[str, Any]] = {
    "cola": ("CoLA.tsv", "class_id"), "sst2": ("SST-2.tsv", "class_id"), "mrpc": ("MRPC.tsv", "class_id"),
    "qqp": ("QQP.tsv", "class_id"), "wnli": ("WNLI.tsv", "class_id"), "stsb": ("STS-B.tsv", "value"),
    "mnli": ("MNLI-m.tsv", NLI3), "mnli_matched": ("MNLI-m.tsv", NLI3), "mnli_mismatched": ("MNLI-mm.tsv", NLI3),
    "qnli": ("QNLI.tsv", NLI2), "rte": ("RTE.tsv", NLI2),
}
SUPERGLUE: dict[str, tuple[str, Any]] = {
    "boolq": ("BoolQ.jsonl", "bool_lower"), "wic": ("WiC.jsonl", "bool_lower"), "wsc": ("WSC.jsonl", "bool_title"),
    "cb": ("CB.jsonl", NLI3), "rte": ("RTE.jsonl", NLI2), "copa": ("COPA.jsonl", "choice"),
}
_BOOLS = {"true": True, "false": False, "1": True, "0": False}


def submission_value(prediction: Any, how: Any, label_names: list[str] | None, task: str) -> Any:
    """One prediction as the benchmark writes it; ValueError naming the task where it cannot be."""
    if how == "class_id":
        return label_names.index(prediction)
    if how == "value":
        return round(float(prediction), 3)
    if how == "choice":
        return int(prediction) if not label_names else label_names.index(prediction)
    if how in ("bool_lower", "bool_title"):
        truth = _BOOLS.get(str(prediction).lower())
        if truth is None:
            raise ValueError(f"task {task!r}: label {prediction!r} is not true/false, as the benchmark wants")
        return str(truth).lower() if how == "bool_lower" else str(truth)
    if prediction not in how:
        raise ValueError(f"task {task!r}: label {prediction!r} is not one of the benchmark's labels {list(how)}")
    return prediction


def _index(done, line: dict) -> int:
    """The row's index in the benchmark's file: its id column, else its 1-based row number - 1."""
    try:
        value = int(line["id"])
    except (TypeError, ValueError):
        raise ValueError(f"task {done.task.name!r}: row id {line['id']!r} is not an integer index; the "
                         "benchmark's file needs one (columns.id: the test file's index or idx)") from None
    return value if done.id_column else value - 1


def _glue(done, path: Path, how: Any) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        out = csv.writer(f, delimiter="\t", lineterminator="\n")
        out.writerow(["index", "prediction"])
        for line in done.rows:
            out.writerow([_index(done, line), submission_value(line["prediction"], how, done.task.label_names,
                                                               done.task.name)])


def _superglue(done, path: Path, how: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for line in done.rows:
            value = submission_value(line["prediction"], how, done.task.label_names, done.task.name)
            f.write(json.dumps({"idx": _index(done, line), "label": value}) + "\n")


BENCHMARKS: dict[str, tuple[dict, Callable]] = {"glue": (GLUE, _glue), "superglue": (SUPERGLUE, _superglue)}


def submission_files(done_tasks: list) -> dict[Path, tuple]:
    """{benchmark/file: (TaskPredictions, benchmark, how)} for every unlabeled split of a task a benchmark
    knows; two tasks for one file is an error naming both."""
    files: dict[Path, tuple] = {}
    for done in (d for d in done_tasks if not d.labeled):
        for benchmark, (known, _) in BENCHMARKS.items():
            if done.task.name not in known:
                continue
            name, how = known[done.task.name]
            if name == "MNLI-m.tsv" and "mismatched" in done.split:
                name = "MNLI-mm.tsv"
            path = Path(benchmark) / name
            if path in files:
                raise ValueError(f"tasks {files[path][0].task.name!r} and {done.task.name!r} would both write "
                                 f"{path}: predict one of them (--tasks)")
            files[path] = (done, benchmark, how)
    return files


def write_submissions(done_tasks: list, out_dir: str | Path) -> list[Path]:
    """The submission files (submission_files) written under out_dir; returns their paths, relative."""
    files = submission_files(done_tasks)
    for path, (done, benchmark, how) in files.items():
        (Path(out_dir) / path).parent.mkdir(parents=True, exist_ok=True)
        BENCHMARKS[benchmark][1](done, Path(out_dir) / path, how)
    return list(files)
