"""Row parsers, one per source format: a file (or hub split) -> numbered raw rows, before any column is
picked or any record checked (rules in prefinetune/data/readers.py, which drives them).

    for header, raw in raw_rows(task, path, articles):    # header: tsv/csv only; raw: a Raw row
        ...
"""
from __future__ import annotations

import ast
import csv
import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

from prefinetune.recipe.config import TaskConfig

__all__ = ["Raw", "raw_rows", "has_undecodable", "holds_undecodable", "printable", "TaskSourceError", "CONLLU_FIELDS"]


class TaskSourceError(ValueError):
    """The task's source cannot be read at all (missing file, bad column spec, unreadable JSON file)."""


@dataclass(frozen=True)
class Raw:
    """One parsed row before validation: `fields` is a list (tsv/csv) or a mapping."""
    row: int
    line: Optional[int]
    fields: Union[Sequence[Any], dict, None]
    raw: str
    error: Optional[tuple[str, str]] = None  # (field, reason) found while parsing


# ---------------------------------------------------------------- decoding

_UNDECODABLE = re.compile("[\udc80-\udcff]")    # what surrogateescape turns bytes that did not decode into


def has_undecodable(text: str) -> bool:
    return _UNDECODABLE.search(text) is not None


def holds_undecodable(value: Any) -> bool:
    """A string, or any string nested in lists / objects, with bytes that did not decode."""
    if isinstance(value, str):
        return has_undecodable(value)
    if isinstance(value, dict):
        return any(holds_undecodable(k) or holds_undecodable(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(holds_undecodable(v) for v in value)
    return False


def printable(text: str, encoding: str) -> str:
    """Text with undecodable bytes shown as \\xNN, for messages and the quarantine file."""
    if not has_undecodable(text):
        return text
    return text.encode(encoding, "surrogateescape").decode(encoding, "backslashreplace")


def _opened(path: Path):
    """The file's bytes: a `.gz` file is read through gzip (RACE's train file)."""
    return gzip.open(path, "rb") if Path(path).suffix == ".gz" else open(path, "rb")


def _decoded_lines(path: Path, encoding: str) -> Iterator[str]:
    """Physical lines (ends kept); undecodable bytes become lone surrogates, flagged per row later."""
    with _opened(path) as f:
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


def _delimited_rows(path: Path, task: TaskConfig) -> Iterator[tuple[Optional[list[str]], Raw]]:
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
        yield header, Raw(row, start, fields, raw, error)


def _txt_rows(path: Path, task: TaskConfig) -> Iterator[Raw]:
    pattern = re.compile(task.line_pattern)
    for no, line in enumerate(_decoded_lines(path, task.encoding), 1):
        text = line.rstrip("\r\n")
        match = pattern.fullmatch(text)
        if match is None:
            reason = f"line does not match line_pattern {task.line_pattern!r}"
            yield Raw(no, no, None, text, ("(line)", reason))
        else:
            yield Raw(no, no, match.groupdict(), text)


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON: {err}") from None


def _parse_python_dict(text: str) -> Any:
    """A line as JSON, or else as a Python literal (single-quoted strings, True/None...)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
        raise ValueError(f"neither JSON nor a Python literal ({type(err).__name__}: {err})") from None


def _object_lines(path: Path, task: TaskConfig, parse: Callable[[str], Any], what: str) -> Iterator[Raw]:
    """One object per line, parsed by `parse`; blank lines, parse errors and non-objects are bad rows."""
    for no, line in enumerate(_decoded_lines(path, task.encoding), 1):
        text = line.rstrip("\r\n")
        if not text.strip():
            yield Raw(no, no, None, text, ("(line)", "blank line"))
            continue
        try:
            obj = parse(text)
        except ValueError as err:
            yield Raw(no, no, None, text, (f"({what})", str(err)))
            continue
        if not isinstance(obj, dict):
            yield Raw(no, no, None, text, (f"({what})", f"a {type(obj).__name__}, not an object"))
        else:
            yield Raw(no, no, obj, text)


def _jsonl_rows(path: Path, task: TaskConfig) -> Iterator[Raw]:
    return _object_lines(path, task, _parse_json, "json")


def _pydict_rows(path: Path, task: TaskConfig) -> Iterator[Raw]:
    return _object_lines(path, task, _parse_python_dict, "pydict")


def _mapping_rows(rows: Iterable[Any]) -> Iterator[Raw]:
    for i, obj in enumerate(rows, 1):
        raw = json.dumps(obj, ensure_ascii=False, default=str)
        if isinstance(obj, dict):
            yield Raw(i, None, obj, raw)
        else:
            yield Raw(i, None, None, raw, ("(json)", f"a {type(obj).__name__}, not an object"))


def _json_document(path: Path, task: TaskConfig) -> Any:
    try:
        with _opened(path) as f:
            return json.loads(f.read().decode(task.encoding))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TaskSourceError(f"{path}: cannot read as one JSON document ({task.encoding}): {err}") from None


def _json_rows(path: Path, task: TaskConfig) -> Iterator[Raw]:
    data = _json_document(path, task)
    if not isinstance(data, list):
        raise TaskSourceError(
            f"{path}: format json needs a top-level list of objects, got {type(data).__name__}")
    return _mapping_rows(data)


def _listed(value: Any, what: str, path: Path) -> list:
    if not isinstance(value, list):
        raise TaskSourceError(f"{path}: SQuAD {what} must be a list, got {type(value).__name__}")
    return value


def _squad_rows(path: Path, task: TaskConfig, articles: Optional[slice] = None) -> Iterator[Raw]:
    """One row per question of a SQuAD v1.1 document, numbered over the whole file."""
    data = _json_document(path, task)
    if not isinstance(data, dict):
        raise TaskSourceError(f"{path}: format squad needs an object with a 'data' list")
    all_articles = _listed(data.get("data"), "'data'", path)
    chosen = set(range(len(all_articles))[articles or slice(None)])
    row = 0
    for index, article in enumerate(all_articles):
        if not isinstance(article, dict):
            raise TaskSourceError(f"{path}: SQuAD data[{index}] is a {type(article).__name__}, not an object")
        for p_index, paragraph in enumerate(_listed(article.get("paragraphs"), f"data[{index}].paragraphs", path)):
            if not isinstance(paragraph, dict):
                raise TaskSourceError(f"{path}: SQuAD data[{index}].paragraphs[{p_index}] is not an object")
            for qa in _listed(paragraph.get("qas"), f"data[{index}].paragraphs[{p_index}].qas", path):
                row += 1
                if index in chosen:
                    yield _squad_row(row, qa, paragraph.get("context"), article.get("title"))


def _squad_row(row: int, qa: Any, context: Any, title: Any) -> Raw:
    raw = json.dumps(qa, ensure_ascii=False, default=str)
    if not isinstance(qa, dict):
        return Raw(row, None, None, raw, ("(json)", f"a question that is a {type(qa).__name__}, not an object"))
    return Raw(row, None, {**qa, "context": context, "title": title}, raw)


def _parquet_rows(path: Path, task: TaskConfig) -> Iterator[Raw]:
    import pyarrow.parquet as pq

    return _mapping_rows(pq.read_table(path).to_pylist())


def _hub_rows(split_name: str, task: TaskConfig) -> Iterator[Raw]:
    import datasets

    hub = task.hub
    ds = datasets.load_dataset(hub.path, hub.name, split=split_name, revision=hub.revision)
    return _mapping_rows(iter(ds))


# ---------------------------------------------------------------- sentence formats (tagging)

CONLLU_FIELDS = ("ID", "FORM", "LEMMA", "UPOS", "XPOS", "FEATS", "HEAD", "DEPREL", "DEPS", "MISC")


def _sentences(path: Path, task: TaskConfig) -> Iterator[tuple[int, list[tuple[int, str]]]]:
    """(first line number, [(line number, line)]) per blank-line separated block of a file."""
    block: list[tuple[int, str]] = []
    for no, line in enumerate(_decoded_lines(path, task.encoding), 1):
        text = line.rstrip("\r\n")
        if text.strip():
            block.append((no, text))
        elif block:
            yield block[0][0], block
            block = []
    if block:
        yield block[0][0], block


def _columns_of(words: list[list[str]], keys: Sequence) -> dict:
    """{key: [word's value, ...]} for the given column keys (names or indices) of a sentence."""
    return {key: [w[i] for w in words] for i, key in enumerate(keys)}


def _conllu_rows(path: Path, task: TaskConfig) -> Iterator[Raw]:
    """CoNLL-U: one row per sentence, {FIELD: [value per word]}. Comment lines (#), multiword-token
    lines (ID 3-4) and empty nodes (ID 8.1) are not words and are left out; a word line without 10
    tab-separated fields is a bad row."""
    for row, (first, block) in enumerate(_sentences(path, task), 1):
        words, error = [], None
        for no, text in block:
            if text.startswith("#"):
                continue
            fields = text.split("\t")
            if len(fields) != len(CONLLU_FIELDS):
                error = ("(line)", f"line {no}: {len(fields)} tab-separated fields, expected {len(CONLLU_FIELDS)}")
                break
            if "-" in fields[0] or "." in fields[0]:
                continue
            words.append(fields)
        raw = "\n".join(text for _, text in block)
        yield Raw(row, first, None if error else _columns_of(words, CONLLU_FIELDS), raw, error)


def _conll_rows(path: Path, task: TaskConfig) -> Iterator[Raw]:
    """Whitespace-column CoNLL (CoNLL-2000 chunking, CoNLL-2003 NER): a word per line, columns by 0-based
    index (negative from the end), a blank line between sentences. -DOCSTART- lines separate documents
    and are not words. Every word line of a sentence must have as many columns as its first."""
    row = 0
    for first, block in _sentences(path, task):
        lines = [(no, text.split()) for no, text in block if not text.startswith("-DOCSTART-")]
        if not lines:
            continue
        row += 1
        width, error = len(lines[0][1]), None
        for no, fields in lines:
            if len(fields) != width:
                error = ("(line)", f"line {no}: {len(fields)} columns, expected {width} (as the sentence's first)")
                break
        keys = list(range(width)) + list(range(-width, 0))
        words = [f + f for _, f in lines]              # the values again under their negative indices
        raw = "\n".join(text for _, text in block)
        yield Raw(row, first, None if error else _columns_of(words, keys), raw, error)


def _exploded(rows: Iterable[Raw], keys: list[str]) -> Iterator[Raw]:
    """One row per index of the parallel lists under `keys` (the other keys shared), numbered 1-based over
    all items of the file; `line` stays the source row's line. A source row whose lists are missing or of
    different lengths is one bad row."""
    item = 0
    for raw in rows:
        if raw.error is not None:
            item += 1
            yield Raw(item, raw.line, None, raw.raw, raw.error)
            continue
        lists = [raw.fields.get(k) for k in keys]
        if not all(isinstance(v, list) for v in lists) or len({len(v) for v in lists}) != 1:
            found = {k: (len(v) if isinstance(v, list) else type(v).__name__) for k, v in zip(keys, lists)}
            item += 1
            yield Raw(item, raw.line, None, raw.raw, ("(explode)", f"keys {keys} must hold lists of one length; "
                                                                   f"found {found}"))
            continue
        for i in range(len(lists[0])):
            item += 1
            yield Raw(item, raw.line, {**raw.fields, **{k: v[i] for k, v in zip(keys, lists)}}, raw.raw)


def raw_rows(task: TaskConfig, source: Union[Path, str],
              articles: Optional[slice]) -> Iterator[tuple[Optional[list[str]], Raw]]:
    if task.format in ("tsv", "csv"):
        yield from _delimited_rows(source, task)
        return
    if task.format == "squad":
        rows = _squad_rows(source, task, articles)
    else:
        parsers = {"txt": _txt_rows, "jsonl": _jsonl_rows, "pydict": _pydict_rows, "json": _json_rows,
                   "parquet": _parquet_rows, "hub": _hub_rows, "conllu": _conllu_rows, "conll": _conll_rows}
        rows = parsers[task.format](source, task)
    if task.explode:
        rows = _exploded(rows, task.explode)
    for raw in rows:
        yield None, raw


