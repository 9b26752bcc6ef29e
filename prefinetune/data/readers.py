"""Read one task split into normalised records: {"text", "text_pair" (or None), "label" (int id)}.

Sources: local tsv / csv / txt / jsonl / json / parquet files (paths relative to data.root) or a
`datasets.load_dataset` source (format: hub; a hub id, or a local folder of data files).

Conventions, strict on purpose (nothing is dropped silently):

- Rows are numbered 1-based over *data* rows: a header line is not counted. Messages also give the
  physical line for line-based files (csv quoting can make one row span several lines).
- tsv is read with the csv module, tab-delimited and QUOTE_NONE (GLUE tsv holds bare `"` in text);
  csv with standard double-quote quoting. Every row must have as many fields as the header (or, with
  no header, as data row 1). txt lines must match `line_pattern` whole; its named groups are columns.
- Bytes are decoded line by line, so a line that is not valid in `encoding` is one bad row, not a
  crashed file. `utf-8-sig` strips a leading BOM.
- Labels: with `label_map`, the raw value (as a string; JSON booleans read as "true"/"false") must be
  one of its keys. Without it, a raw string equal to a label name is that name; otherwise an int, or
  a string of digits, is a label id in 0..num_labels-1. Anything else is a bad row.
- A bad row (missing field, wrong field count, empty text, unknown label, undecodable bytes, bad
  JSON) raises `BadRowError` naming file, row and field; with on_bad_row="quarantine" it goes to a
  JSONL file {file, row, line, field, reason, raw} and is counted instead.

    python -c "from prefinetune.data.readers import read_split; ..."   # see tests/data/test_readers.py
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

from prefinetune.config import TaskConfig

__all__ = [
    "BadRow", "BadRowError", "TaskSourceError", "SplitRead",
    "read_split", "split_source", "label_id",
]

_DIGITS = re.compile(r"[0-9]+")


class TaskSourceError(ValueError):
    """The task's source cannot be read at all (missing file, bad column spec, unreadable JSON file)."""


@dataclass(frozen=True)
class BadRow:
    """One row that could not become a record; `row` is the 1-based data row (header not counted)."""
    file: str
    row: int
    field: str
    reason: str
    raw: str
    line: Optional[int] = None

    def message(self) -> str:
        where = f"data row {self.row} (1-based, header not counted"
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
    quarantine_file: Optional[str] = None


@dataclass(frozen=True)
class _Raw:
    """One parsed row before validation: `fields` is a list (tsv/csv) or a mapping."""
    row: int
    line: Optional[int]
    fields: Union[Sequence[Any], dict, None]
    raw: str
    error: Optional[tuple[str, str]] = None  # (field, reason) found while parsing


class _FieldError(ValueError):
    def __init__(self, field_name: str, reason: str):
        super().__init__(reason)
        self.field_name = field_name
        self.reason = reason


# ---------------------------------------------------------------- sources

def split_source(task: TaskConfig, split: str, data_root: Union[str, Path, None] = None) -> Union[Path, str]:
    """The file (a Path under data_root) or hub split name (a str) that holds `split` of `task`."""
    if split not in task.splits:
        raise TaskSourceError(f"task {task.name!r} has no split {split!r}; it has {sorted(task.splits)}")
    target = task.splits[split]
    if task.format == "hub":
        return target
    path = Path(target)
    if not path.is_absolute() and data_root is not None:
        path = Path(data_root) / path
    if not path.is_file():
        raise TaskSourceError(
            f"task {task.name!r} split {split!r}: file {path} does not exist (data.root={data_root})")
    return path


# ---------------------------------------------------------------- labels

def _label_key(raw: Any) -> Union[str, int]:
    if raw is None:
        raise _FieldError("label", "missing")
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, (int, str)):
        return raw
    raise _FieldError("label", f"label {raw!r} is a {type(raw).__name__}, not a name or an int id")


def label_id(raw: Any, task: TaskConfig) -> int:
    """The label id of a raw label value under the rules in the module docstring."""
    names = task.label_names
    key = _label_key(raw)
    if task.label_map is not None:
        if str(key) not in task.label_map:
            raise _FieldError(
                "label", f"raw label {str(key)!r} is not a key of label_map {sorted(task.label_map)}")
        return names.index(task.label_map[str(key)])
    if isinstance(key, str):
        if key in names:
            return names.index(key)
        if not _DIGITS.fullmatch(key):
            raise _FieldError("label", f"raw label {key!r} is neither a label name {names} nor an int id")
        key = int(key)
    if not 0 <= key < len(names):
        raise _FieldError("label", f"label id {key} is outside 0..{len(names) - 1} (label_names {names})")
    return key


# ---------------------------------------------------------------- decoding

def _has_undecodable(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _printable(text: str, encoding: str) -> str:
    """Text with undecodable bytes shown as \\xNN, for messages and the quarantine file."""
    if not _has_undecodable(text):
        return text
    return text.encode(encoding, "surrogateescape").decode(encoding, "backslashreplace")


def _decoded_lines(path: Path, encoding: str) -> Iterator[str]:
    """Physical lines (ends kept); undecodable bytes become lone surrogates, flagged per row later."""
    with open(path, "rb") as f:
        for raw in f:
            yield raw.decode(encoding, "surrogateescape")


# ---------------------------------------------------------------- row parsers (one per format)

class _LineTap:
    """Iterator over lines that remembers the ones consumed since the last `take()`."""

    def __init__(self, lines: Iterator[str]):
        self._lines, self._taken = lines, []

    def __iter__(self) -> "_LineTap":
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self._taken.append(line)
        return line

    def take(self) -> str:
        text, self._taken = "".join(self._taken), []
        return text.rstrip("\r\n")


def _delimited_rows(path: Path, task: TaskConfig) -> Iterator[tuple[Optional[list[str]], _Raw]]:
    """tsv/csv rows; yields (header, raw row). The header is None for header-less files."""
    tap = _LineTap(_decoded_lines(path, task.encoding))
    dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if task.format == "tsv" else {}
    reader = csv.reader(tap, strict=True, **dialect)
    header, last_line, row = None, 0, 0
    while True:
        try:
            fields = next(reader)
            error = None
        except StopIteration:
            return
        except csv.Error as err:
            fields, error = None, ("(row)", f"csv parse error: {err}")
        start, last_line = last_line + 1, reader.line_num
        raw = tap.take()
        if task.header and header is None and error is None:
            header = fields
            continue
        row += 1
        yield header, _Raw(row, start, fields, raw, error)


def _txt_rows(path: Path, task: TaskConfig) -> Iterator[_Raw]:
    pattern = re.compile(task.line_pattern)
    for no, line in enumerate(_decoded_lines(path, task.encoding), 1):
        text = line.rstrip("\r\n")
        match = pattern.fullmatch(text)
        if match is None:
            reason = f"line does not match line_pattern {task.line_pattern!r}"
            yield _Raw(no, no, None, text, ("(line)", reason))
        else:
            yield _Raw(no, no, match.groupdict(), text)


def _jsonl_rows(path: Path, task: TaskConfig) -> Iterator[_Raw]:
    for no, line in enumerate(_decoded_lines(path, task.encoding), 1):
        text = line.rstrip("\r\n")
        if not text.strip():
            yield _Raw(no, no, None, text, ("(line)", "blank line"))
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            yield _Raw(no, no, None, text, ("(json)", f"not valid JSON: {err}"))
            continue
        if not isinstance(obj, dict):
            yield _Raw(no, no, None, text, ("(json)", f"a JSON {type(obj).__name__}, not an object"))
        else:
            yield _Raw(no, no, obj, text)


def _mapping_rows(rows: Iterable[Any]) -> Iterator[_Raw]:
    for i, obj in enumerate(rows, 1):
        raw = json.dumps(obj, ensure_ascii=False, default=str)
        if isinstance(obj, dict):
            yield _Raw(i, None, obj, raw)
        else:
            yield _Raw(i, None, None, raw, ("(json)", f"a {type(obj).__name__}, not an object"))


def _json_rows(path: Path, task: TaskConfig) -> Iterator[_Raw]:
    try:
        data = json.loads(path.read_bytes().decode(task.encoding))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TaskSourceError(f"{path}: cannot read as one JSON document ({task.encoding}): {err}") from None
    if not isinstance(data, list):
        raise TaskSourceError(
            f"{path}: format json needs a top-level list of objects, got {type(data).__name__}")
    return _mapping_rows(data)


def _parquet_rows(path: Path, task: TaskConfig) -> Iterator[_Raw]:
    import pyarrow.parquet as pq

    return _mapping_rows(pq.read_table(path).to_pylist())


def _hub_rows(split_name: str, task: TaskConfig) -> Iterator[_Raw]:
    import datasets

    hub = task.hub
    ds = datasets.load_dataset(hub.path, hub.name, split=split_name, revision=hub.revision)
    return _mapping_rows(iter(ds))


# ---------------------------------------------------------------- validation

def _column_label(column: Union[str, int], header: Optional[list[str]]) -> str:
    if isinstance(column, int):
        name = f" {header[column]!r}" if header and column < len(header) else ""
        return f"column {column}{name}"
    return f"column {column!r}"


def _pick_sequence(fields: Sequence[str], column: Union[str, int], header: Optional[list[str]]) -> Any:
    return fields[column if isinstance(column, int) else header.index(column)]


def _check_columns(task: TaskConfig, header: Optional[list[str]], path: Path) -> None:
    """Fail early on a column spec that cannot work for this file (not a bad row: a bad config)."""
    cols = [c for c in (task.columns.text, task.columns.text_pair, task.columns.label) if c is not None]
    for col in cols:
        if task.format in ("tsv", "csv"):
            if isinstance(col, str) and header is None:
                raise TaskSourceError(
                    f"task {task.name!r}: {path} has no header (header: false), so column {col!r} "
                    "must be an int index")
            if isinstance(col, str) and col not in header:
                bom = header[0].startswith("\ufeff")
                hint = " (the header starts with a BOM: use encoding utf-8-sig)" if bom else ""
                raise TaskSourceError(
                    f"task {task.name!r}: {path} header {header} has no column {col!r}{hint}")
            if isinstance(col, int) and header is not None and col >= len(header):
                raise TaskSourceError(f"task {task.name!r}: {path} has {len(header)} columns, no index {col}")
        elif isinstance(col, int):
            raise TaskSourceError(
                f"task {task.name!r}: format {task.format} rows are objects; name column {col} by its key")


def _text_value(value: Any, role: str) -> str:
    if value is None:
        raise _FieldError(role, "missing")
    if not isinstance(value, str):
        raise _FieldError(role, f"expected a string, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise _FieldError(role, "empty text")
    return value


def _role_of(column: Union[str, int], task: TaskConfig, header: Optional[list[str]]) -> Optional[str]:
    """'text' / 'text_pair' / 'label' when `column` (key or index) is the one configured for it."""
    for role in ("text", "text_pair", "label"):
        col = getattr(task.columns, role)
        if col is None:
            continue
        if col == column or (isinstance(column, int) and header and isinstance(col, str)
                             and col in header and header.index(col) == column):
            return role
    return None


def _undecodable_field(raw: _Raw, task: TaskConfig, header: Optional[list[str]]) -> Optional[str]:
    """The field (role, or column) holding bytes that did not decode; None when all decoded."""
    items: Iterable[tuple[Union[str, int], Any]] = ()
    if isinstance(raw.fields, dict):
        items = raw.fields.items()
    elif raw.fields is not None:
        items = enumerate(raw.fields)
    for key, value in items:
        if isinstance(value, str) and _has_undecodable(value):
            return _role_of(key, task, header) or (
                _column_label(key, header) if isinstance(key, int) else f"column {key!r}")
    return "(line)" if _has_undecodable(raw.raw) else None


def _to_record(raw: _Raw, task: TaskConfig, header: Optional[list[str]], width: Optional[int]) -> dict:
    """Validate one parsed row into a record, or raise _FieldError naming the field."""
    if raw.error is not None:
        raise _FieldError(*raw.error)
    bad_bytes = _undecodable_field(raw, task, header)
    if bad_bytes is not None:
        raise _FieldError(bad_bytes, f"bytes that are not valid {task.encoding}")
    cols = task.columns
    roles = [("text", cols.text), ("text_pair", cols.text_pair), ("label", cols.label)]
    values: dict[str, Any] = {}
    if isinstance(raw.fields, dict):
        for role, col in roles:
            if col is not None:
                values[role] = raw.fields.get(col)
    else:
        if len(raw.fields) != width:
            what = "the header" if header is not None else "data row 1"
            if not raw.fields:
                raise _FieldError("(row)", "blank line")
            raise _FieldError("(row)", f"{len(raw.fields)} fields, expected {width} (as {what})")
        for role, col in roles:
            if col is not None:
                values[role] = _pick_sequence(raw.fields, col, header)
    record = {"text": _text_value(values["text"], "text"), "text_pair": None}
    if cols.text_pair is not None:
        record["text_pair"] = _text_value(values["text_pair"], "text_pair")
    record["label"] = label_id(values["label"], task)
    return record


def _field_name(role_or_field: str, task: TaskConfig, header: Optional[list[str]]) -> str:
    roles = ("text", "text_pair", "label")
    col = getattr(task.columns, role_or_field) if role_or_field in roles else None
    if col is None:
        return role_or_field
    return f"{role_or_field} ({_column_label(col, header)})"


# ---------------------------------------------------------------- driver

def _raw_rows(task: TaskConfig, source: Union[Path, str]) -> Iterator[tuple[Optional[list[str]], _Raw]]:
    if task.format in ("tsv", "csv"):
        yield from _delimited_rows(source, task)
        return
    parsers = {"txt": _txt_rows, "jsonl": _jsonl_rows, "json": _json_rows, "parquet": _parquet_rows,
               "hub": _hub_rows}
    for raw in parsers[task.format](source, task):
        yield None, raw


def _source_label(task: TaskConfig, source: Union[Path, str]) -> str:
    if task.format == "hub":
        hub = task.hub
        return f"hub:{hub.path}" + (f"/{hub.name}" if hub.name else "") + f"[{source}]" + (
            f"@{hub.revision}" if hub.revision else "")
    return str(source)


def read_split(
    task: TaskConfig,
    split: str,
    data_root: Union[str, Path, None] = None,
    on_bad_row: str = "error",
    quarantine_path: Union[str, Path, None] = None,
) -> SplitRead:
    """Read `split` of `task` into records; bad rows raise BadRowError or go to `quarantine_path`."""
    if on_bad_row not in ("error", "quarantine"):
        raise ValueError(f"on_bad_row must be 'error' or 'quarantine', not {on_bad_row!r}")
    if on_bad_row == "quarantine" and quarantine_path is None:
        raise ValueError("on_bad_row='quarantine' needs a quarantine_path")
    source = split_source(task, split, data_root)
    result = SplitRead(source=_source_label(task, source))
    bad_rows: list[BadRow] = []
    checked, width = False, None
    for header, raw in _raw_rows(task, source):
        if not checked and (header is not None or not task.header or task.format not in ("tsv", "csv")):
            _check_columns(task, header, Path(str(source)))
            checked = True
        if width is None and isinstance(raw.fields, list):
            width = len(header) if header is not None else len(raw.fields)
        try:
            result.records.append(_to_record(raw, task, header, width))
        except _FieldError as err:
            bad = BadRow(result.source, raw.row, _field_name(err.field_name, task, header), err.reason,
                         _printable(raw.raw, task.encoding), raw.line)
            if on_bad_row == "error":
                raise BadRowError(bad) from None
            bad_rows.append(bad)
    if on_bad_row == "quarantine":
        result.quarantined = len(bad_rows)
        result.quarantine_file = str(quarantine_path)
        _write_quarantine(Path(quarantine_path), bad_rows)
    return result


def _write_quarantine(path: Path, bad_rows: list[BadRow]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for bad in bad_rows:
            f.write(json.dumps(asdict(bad), ensure_ascii=False) + "\n")
