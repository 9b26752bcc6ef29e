"""Read one task split into the records of its family (see `prefinetune.families`).

Sources: local tsv / csv / txt / jsonl / json / pydict / squad / parquet files (paths relative to
data.root) or a `datasets.load_dataset` source (format: hub; a hub id, or a local folder of data files).

For every row the reader picks the raw value of each column role of the task's family
(the family's `roles`) and hands them to the family's `to_record(values, task)`, which validates and
normalises them (classification: text non-empty, label -> id; multiple choice: choices and the answer;
...). The reader itself only knows where values are:

- A column is a header name (tsv/csv), an int index (header-less tsv/csv), a regex group (txt), or a
  key of the row object (jsonl / json / pydict / squad / parquet / hub). In objects a DOTTED PATH walks
  into nested objects and lists: "question.stem", "question.choices", "answers.0.text". A key that
  itself holds dots is taken whole first. A key or path that is not there reads as None (`to_record`
  then says "missing").
- `choices` may also be a LIST of columns, one per choice: the value is then the list of their values
  (COPA: [choice1, choice2]; Cosmos QA: [answer0, ..., answer3]). One column may hold the whole list
  instead (strings, or {"text", "label"} objects); the family module interprets its shape.
- Roles the task does not configure are passed as None, except `id` (span), which defaults to the
  row number as a string.

Formats, strict on purpose (nothing is dropped silently):

- Rows are numbered 1-based over *data* rows: a header line is not counted. Messages also give the
  physical line for line-based files (csv quoting can make one row span several lines).
- tsv is read with the csv module, tab-delimited and QUOTE_NONE (GLUE tsv holds bare `"` in text);
  csv with standard double-quote quoting. Every row must have as many fields as the header (or, with
  no header, as data row 1). txt lines must match `line_pattern` whole; its named groups are columns.
- jsonl: one JSON object per line. pydict: one object per line, as JSON or, where a line is not JSON,
  as a Python dict literal (`ast.literal_eval`; DialogSum's train file uses single quotes), so a
  pydict task may also read the JSONL files of the same dataset.
- json: one document holding a list of objects (SciQ).
- squad: a SQuAD v1.1 document {"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]},
  flattened to one row per question: the question's own keys (id, question, answers = [{text,
  answer_start}], ...) plus `context` and `title`. Rows are numbered by question, 1-based, over all
  questions of the file in order (messages say "question N"). A split may select articles with a
  suffix `#articles=START:STOP` (a Python slice of data[], 0-based, stop excluded), e.g.
  "xquad_en/xquad.en.json#articles=0:40"; question numbers still count over the whole file.
- Any file format may select records with `#rows=START:STOP` (a Python slice over the file's records,
  0-based, stop excluded, non-negative bounds), e.g. "qnli/dev.tsv#rows=0:4000" and
  "qnli/dev.tsv#rows=4000:" to cut one file into train and dev; row numbers in messages still count
  over the whole file.
- Bytes are decoded line by line, so a line that is not valid in `encoding` is one bad row, not a
  crashed file. `utf-8-sig` strips a leading BOM.
- `explode: [keys]` turns an object row whose keys hold parallel lists into one record per index
  (RACE: a passage with its questions, options and answers); items are numbered over the file.
- `.gz` files are read through gzip.
- `unlabeled: [values]`: rows whose raw label is one of these (SNLI's '-', no annotator consensus) are
  skipped and counted (`SplitRead.unlabeled`, the manifest's `unlabeled`), not bad rows.
- `split_columns: {split: columns}` reads a split whose file is laid out otherwise with its own columns.
- `unlabeled_splits: [split]`: such a split's target columns (the family's `target_roles`) are not
  read; the family's `unlabeled_values` stand in for them, so its records are only fit for predictions.
- Every record's id (the `id` role, default the row number as a string) is kept in `SplitRead.ids`.
- A bad row (missing field, wrong field count, bad JSON, undecodable bytes, or any `FieldError` from
  the family's `to_record`) raises `BadRowError` naming file, row and field; with
  on_bad_row="quarantine" it goes to a JSONL file {file, row, unit, line, field, reason, raw} and is
  counted instead.

The row parsers, one per format, are in prefinetune/data/formats.py.

    python -c "from prefinetune.data.readers import read_split; ..."   # see tests/data/test_readers.py
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from prefinetune.data.formats import (
    CONLLU_FIELDS,
    Raw,
    TaskSourceError,
    has_undecodable,
    holds_undecodable,
    printable,
    raw_rows,
)
from prefinetune.families import FieldError
from prefinetune.families.family import get_family
from prefinetune.recipe.config import Column, TaskConfig, family_roles

__all__ = [
    "BadRow", "BadRowError", "TaskSourceError", "SplitRead",
    "read_split", "split_source", "split_target", "split_rows", "task_roles",
]

ColumnSpec = Union[Column, list]
_SELECTOR = re.compile(r"(?P<path>.+)#(?P<unit>articles|rows)=(?P<start>-?[0-9]*):(?P<stop>-?[0-9]*)")


@dataclass(frozen=True)
class BadRow:
    """One row that could not become a record; `row` is 1-based over `unit`s (data rows, or questions)."""
    file: str
    row: int
    field: str
    reason: str
    raw: str
    line: Optional[int] = None
    unit: str = "data row"

    def message(self) -> str:
        if self.unit == "question":
            where = f"question {self.row} (1-based, over all questions of the file in order)"
        elif self.unit == "item":
            where = f"item {self.row} (1-based, over the items of every row of the file; row on line {self.line})"
        elif self.unit == "sentence":
            where = f"sentence {self.row} (1-based; starts at line {self.line})"
        else:
            where = f"{self.unit} {self.row} (1-based, header not counted"
            where += f"; line {self.line})" if self.line is not None else ")"
        return f"{self.file}: {where}: field {self.field}: {self.reason}"


class BadRowError(ValueError):
    """A bad row under on_bad_row='error'; `.bad` holds the details."""

    def __init__(self, bad: BadRow):
        super().__init__(bad.message() + " (set data.on_bad_row=quarantine to set such rows aside)")
        self.bad = bad


@dataclass
class SplitRead:
    """The records of one split, plus what was set aside."""
    source: str
    records: list[dict] = field(default_factory=list)
    quarantined: int = 0
    unlabeled: int = 0           # rows skipped for a label value in the task's `unlabeled`
    quarantine_file: Optional[str] = None
    ids: list = field(default_factory=list)     # each record's `id` value (default: its row number)
    labeled: bool = True         # False: an unlabeled split, whose records hold stand-in targets


# ---------------------------------------------------------------- sources

def split_target(task: TaskConfig, split: str) -> tuple[str, Optional[slice]]:
    """(file or hub split, article slice) of `split`: the `#articles=START:STOP` suffix of squad tasks."""
    target, unit, chosen = _selection(task, split)
    return target, chosen if unit == "articles" else None


def split_rows(task: TaskConfig, split: str) -> Optional[slice]:
    """The `#rows=START:STOP` suffix of `split` (any file format): which records, 0-based, are read."""
    _, unit, chosen = _selection(task, split)
    return chosen if unit == "rows" else None


def _selection(task: TaskConfig, split: str) -> tuple[str, Optional[str], Optional[slice]]:
    if split not in task.splits:
        raise TaskSourceError(f"task {task.name!r} has no split {split!r}; it has {sorted(task.splits)}")
    target = task.splits[split]
    match = _SELECTOR.fullmatch(target) if task.format != "hub" else None
    if match is None:
        return target, None, None
    if match["unit"] == "articles" and task.format != "squad":
        raise TaskSourceError(f"task {task.name!r} split {split!r}: #articles= selects articles of a squad "
                              f"file; format {task.format!r} selects records with #rows=START:STOP")
    bound = [int(match[k]) if match[k] else None for k in ("start", "stop")]
    if match["unit"] == "rows" and any(b is not None and b < 0 for b in bound):
        raise TaskSourceError(f"task {task.name!r} split {split!r}: #rows={match['start']}:{match['stop']} "
                              "needs bounds >= 0 (the file's length is not known before it is read)")
    return match["path"], match["unit"], slice(*bound)


def split_source(task: TaskConfig, split: str, data_root: Union[str, Path, None] = None) -> Union[Path, str]:
    """The file (a Path under data_root) or hub split name (a str) that holds `split` of `task`."""
    target, _ = split_target(task, split)
    if task.format == "hub":
        return target
    path = Path(target)
    if not path.is_absolute() and data_root is not None:
        path = Path(data_root) / path
    if not path.is_file():
        raise TaskSourceError(
            f"task {task.name!r} split {split!r}: file {path} does not exist (data.root={data_root})")
    return path


# ---------------------------------------------------------------- column roles

def task_roles(task: TaskConfig) -> list[tuple[str, Optional[ColumnSpec]]]:
    """(role, column spec or None) for every column role of the task's family, required ones first."""
    required, optional = family_roles(task.family)
    return [(role, getattr(task.columns, role)) for role in required + optional]


def _flat(spec: Optional[ColumnSpec]) -> list[Column]:
    if spec is None:
        return []
    return list(spec) if isinstance(spec, list) else [spec]


def _lookup(obj: dict, path: str) -> Any:
    """obj[path], or the value at a dotted path through objects and lists; None where it is not there."""
    if path in obj:
        return obj[path]
    if not isinstance(path, str):
        return None
    node: Any = obj
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _pick(fields: Union[Sequence[Any], dict], spec: ColumnSpec, header: Optional[list[str]]) -> Any:
    if isinstance(spec, list):
        return [_pick(fields, one, header) for one in spec]
    if isinstance(fields, dict):
        return _lookup(fields, spec)
    return fields[spec if isinstance(spec, int) else header.index(spec)]


def _column_label(spec: ColumnSpec, header: Optional[list[str]]) -> str:
    if isinstance(spec, list):
        return "columns " + ", ".join(_column_label(one, header).removeprefix("column ") for one in spec)
    if isinstance(spec, int):
        name = f" {header[spec]!r}" if header and spec < len(header) else ""
        return f"column {spec}{name}"
    return f"column {spec!r}"


# ---------------------------------------------------------------- checks before the rows

def _check_delimited_column(task: TaskConfig, col: Column, header: Optional[list[str]], path: Path) -> None:
    if isinstance(col, str) and header is None:
        raise TaskSourceError(
            f"task {task.name!r}: {path} has no header (header: false), so column {col!r} must be an int index")
    if isinstance(col, str) and col not in header:
        bom = header[0].startswith("\ufeff")
        hint = " (the header starts with a BOM: use encoding utf-8-sig)" if bom else ""
        raise TaskSourceError(f"task {task.name!r}: {path} header {header} has no column {col!r}{hint}")
    if isinstance(col, int) and header is not None and col >= len(header):
        raise TaskSourceError(f"task {task.name!r}: {path} has {len(header)} columns, no index {col}")


def _check_columns(task: TaskConfig, header: Optional[list[str]], path: Path) -> None:
    """Fail early on a column spec that cannot work for this file (not a bad row: a bad config)."""
    groups = set(re.compile(task.line_pattern).groupindex) if task.format == "txt" else set()
    for role, spec in task_roles(task):
        for col in _flat(spec):
            if task.format in ("tsv", "csv"):
                _check_delimited_column(task, col, header, path)
            elif task.format == "conllu" and col not in CONLLU_FIELDS:
                raise TaskSourceError(f"task {task.name!r}: CoNLL-U has no field {col!r}; "
                                      f"fields: {list(CONLLU_FIELDS)}")
            elif task.format == "conll" and not isinstance(col, int):
                raise TaskSourceError(f"task {task.name!r}: CoNLL columns have no names: give {role} as an index "
                                      f"(0-based, negative from the end), not {col!r}")
            elif isinstance(col, int) and task.format != "conll":
                raise TaskSourceError(
                    f"task {task.name!r}: format {task.format} rows are objects; name column {col} by its key")
            elif task.format == "txt" and col not in groups:
                raise TaskSourceError(
                    f"task {task.name!r}: {role} column {col!r} is not a named group of line_pattern "
                    f"(groups: {sorted(groups)})")


# ---------------------------------------------------------------- one row -> values -> record

def _role_of(column: Union[str, int], task: TaskConfig, header: Optional[list[str]]) -> Optional[str]:
    """The role whose column (key, index, or first step of a dotted path) is `column`, if any."""
    for role, spec in task_roles(task):
        for col in _flat(spec):
            if col == column or (isinstance(col, str) and isinstance(column, str)
                                 and col.split(".", 1)[0] == column):
                return role
            if (isinstance(column, int) and header and isinstance(col, str) and col in header
                    and header.index(col) == column):
                return role
    return None


_LINE_FORMATS = ("tsv", "csv", "txt", "jsonl", "pydict", "conllu", "conll")   # Raw.raw: the row's own lines


def _undecodable_field(raw: Raw, task: TaskConfig, header: Optional[list[str]]) -> Optional[str]:
    """The field (role, or column) holding bytes that did not decode; None when all decoded. A row of a
    line format is clean when its lines are: its fields are cut from them, or parsed from them, and only
    an escape (\\u, \\U) could make a surrogate that the lines do not hold."""
    line = raw.raw if task.format in _LINE_FORMATS else None
    if line is not None and not has_undecodable(line) and "\\u" not in line and "\\U" not in line:
        return None
    items: Iterable[tuple[Union[str, int], Any]] = ()
    if isinstance(raw.fields, dict):
        items = raw.fields.items()
    elif raw.fields is not None:
        items = enumerate(raw.fields)
    for key, value in items:
        if holds_undecodable(value):
            return _role_of(key, task, header) or (
                _column_label(key, header) if isinstance(key, int) else f"column {key!r}")
    return "(line)" if has_undecodable(raw.raw) else None


def _row_values(raw: Raw, task: TaskConfig, header: Optional[list[str]], width: Optional[int],
                roles: Optional[list] = None) -> dict:
    """The raw value of every column role of the family (`roles`: task_roles(task), computed once per
    split), or FieldError for a row that cannot be read."""
    if raw.error is not None:
        raise FieldError(*raw.error)
    bad_bytes = _undecodable_field(raw, task, header)
    if bad_bytes is not None:
        raise FieldError(bad_bytes, f"bytes that are not valid {task.encoding}")
    if not isinstance(raw.fields, dict) and len(raw.fields) != width:
        what = "the header" if header is not None else "data row 1"
        if not raw.fields:
            raise FieldError("(row)", "blank line")
        raise FieldError("(row)", f"{len(raw.fields)} fields, expected {width} (as {what})")
    values = {}
    for role, spec in roles if roles is not None else task_roles(task):
        if spec is not None:
            values[role] = _pick(raw.fields, spec, header)
        else:
            values[role] = str(raw.row) if role == "id" else None
    return values


_ROLE_PREFIX = re.compile(r"[a-z_]+")


def _field_name(name: str, task: TaskConfig, header: Optional[list[str]]) -> str:
    """A role named by a FieldError ("choices", or "choices[2]") with its column: "choices (column 'x')"."""
    match = _ROLE_PREFIX.match(name)
    spec = dict(task_roles(task)).get(match.group(0)) if match else None
    return name if spec is None else f"{name} ({_column_label(spec, header)})"


# ---------------------------------------------------------------- driver

def _source_label(task: TaskConfig, split: str, source: Union[Path, str]) -> str:
    if task.format == "hub":
        hub = task.hub
        return f"hub:{hub.path}" + (f"/{hub.name}" if hub.name else "") + f"[{source}]" + (
            f"@{hub.revision}" if hub.revision else "")
    _, unit, chosen = _selection(task, split)
    if chosen is not None:
        stop = "" if chosen.stop is None else chosen.stop
        return f"{source} ({unit} {chosen.start or 0}:{stop})"
    return str(source)


def read_split(
    task: TaskConfig,
    split: str,
    data_root: Union[str, Path, None] = None,
    on_bad_row: str = "error",
    quarantine_path: Union[str, Path, None] = None,
) -> SplitRead:
    """Read `split` of `task` into family records; bad rows raise BadRowError or go to `quarantine_path`."""
    if on_bad_row not in ("error", "quarantine"):
        raise ValueError(f"on_bad_row must be 'error' or 'quarantine', not {on_bad_row!r}")
    if on_bad_row == "quarantine" and quarantine_path is None:
        raise ValueError("on_bad_row='quarantine' needs a quarantine_path")
    family = get_family(task.family)
    task = task.for_split(split)
    source = split_source(task, split, data_root)
    _, articles = split_target(task, split)
    result = SplitRead(source=_source_label(task, split, source), labeled=split not in task.unlabeled_splits)
    unit = "item" if task.explode else {"squad": "question", "conllu": "sentence",
                                         "conll": "sentence"}.get(task.format, "data row")
    unlabeled = set(task.unlabeled)
    bad_rows: list[BadRow] = []
    checked, width, roles = False, None, task_roles(task)
    for header, raw in _selected(raw_rows(task, source, articles), split_rows(task, split)):
        if not checked and (header is not None or not task.header or task.format not in ("tsv", "csv")):
            _check_columns(task, header, Path(str(source)))
            checked = True
        if width is None and isinstance(raw.fields, list):
            width = len(header) if header is not None else len(raw.fields)
        try:
            values = _row_values(raw, task, header, width, roles)
            if unlabeled and isinstance(values.get("label"), str) and values["label"] in unlabeled:
                result.unlabeled += 1
                continue
            if not result.labeled:
                values.update(family.unlabeled_values(values, task))
            result.records.append(family.to_record(values, task))
            result.ids.append(values.get("id", str(raw.row)))
        except FieldError as err:
            bad = BadRow(result.source, raw.row, _field_name(err.role, task, header), err.reason,
                         printable(raw.raw, task.encoding), raw.line, unit)
            if on_bad_row == "error":
                raise BadRowError(bad) from None
            bad_rows.append(bad)
    if on_bad_row == "quarantine":
        result.quarantined = len(bad_rows)
        result.quarantine_file = str(quarantine_path)
        _write_quarantine(Path(quarantine_path), bad_rows)
    return result


def _selected(rows, chosen: Optional[slice]):
    """The (header, raw) pairs whose 0-based record index is in `chosen` (all when None); the rest are
    not parsed, so a bad row outside the selection is not this split's."""
    start, stop = (0, None) if chosen is None else (chosen.start or 0, chosen.stop)
    for index, pair in enumerate(rows):
        if stop is not None and index >= stop:
            return
        if index >= start:
            yield pair


def _write_quarantine(path: Path, bad_rows: list[BadRow]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for bad in bad_rows:
            f.write(json.dumps(asdict(bad), ensure_ascii=False) + "\n")
