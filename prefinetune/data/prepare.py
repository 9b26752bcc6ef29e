"""Prepare a recipe's tasks: read and validate each split, tokenize, write Arrow shards and a manifest.

Layout under recipe.shards_path (data.shards_dir, or output_dir/name/shards):

    manifest.json                                  tasks, splits, shards (+ sha256), tokenizer fingerprint
    <task>/<split>/shard-00000.arrow               Arrow IPC *file* format, at most `shard_rows` rows each
    <task>/<split>/quarantine.jsonl                bad rows, with data.on_bad_row=quarantine

Shard columns are the family's (`prefinetune.families.<family>.shard_schema`): every family has
input_ids and length (tokens of the row's longest sequence after truncation to model.max_length);
classification adds token_type_ids (when the tokenizer makes them) and label; see each family module.
Records are tokenized by the family: classification and regression, with a fast tokenizer, in this
process with data.num_proc threads running the Rust tokenizer (`tokenize_encoded`, through
prefinetune.data.threaded_encode); the others by their `tokenize`, through
datasets.Dataset.map(batched=True, num_proc) worker processes. A record may become several rows (span:
one per window of a long context), so a split's "rows" (shard rows) may differ from its "records"
(rows read). Each split entry of the manifest also holds the
family's `split_stats` (classification: label_counts). Each task entry holds its family, label_names
(null where the family has none) and its shard columns.

A task is keyed by a fingerprint of its source bytes (file sha256s, or hub id + revision), its
TaskConfig, the tokenizer fingerprint, max_length, on_bad_row and shard_rows. A re-run skips a task
whose manifest entry has the same fingerprint and whose shard files still hash as recorded.
With data.synthetic, the offline suite (prefinetune.data.synthetic) is first written into the run folder
(output_dir/name/synthetic_data), never into data.root; files whose bytes would not change are left untouched.

    python data_prep/prepare.py --recipe recipes/shared_data_cpu.yaml     # the command-line entry point
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
import pyarrow as pa

from prefinetune.data import threaded_encode
from prefinetune.data.folders import writable_folder
from prefinetune.data.readers import read_split, split_source
from prefinetune.data.shards import MANIFEST_NAME, sha256_file
from prefinetune.data.synthetic import write_suite
from prefinetune.families.family import get_family
from prefinetune.families.records import has_token_types
from prefinetune.recipe.config import RecipeConfig, TaskConfig

__all__ = [
    "FORMAT_VERSION", "DEFAULT_SHARD_ROWS", "has_token_types", "task_schema", "tokenizer_info", "source_description",
    "task_fingerprint", "tokenize_records", "write_shards", "length_stats", "data_root", "prepare_tasks",
]

FORMAT_VERSION = 2  # 2: family shard schemas, per-task columns, split_stats
DEFAULT_SHARD_ROWS = 50_000
MIN_ROWS_PER_PROC = 10_000  # below this, extra tokenizer processes cost more than they save
THREAD_BATCH_ROWS = 20_000  # records per tokenize_encoded call on the threaded path (one progress step)
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


# ---------------------------------------------------------------- hashing and fingerprints

def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def tokenizer_info(tokenizer, name: str, max_length: int) -> dict:
    """Name, size and fingerprints of a tokenizer: vocab_sha256 = sha256 of the sorted vocab items."""
    vocab = tokenizer.get_vocab()
    return {
        "name": name,
        "class": type(tokenizer).__name__,
        "vocab_size": len(vocab),
        "vocab_sha256": _sha256_json(sorted(vocab.items())),
        "fingerprint": _sha256_json(_tokenizer_state(tokenizer, vocab)),
        "max_length": max_length,
    }


def _tokenizer_state(tokenizer, vocab: dict) -> Any:
    """What decides the token ids: the fast tokenizer's pipeline (normalizer, model, post-processor...),
    minus its per-call truncation/padding settings, which change whenever it is called, plus the
    wrapper's settings that the call applies (its class, truncation side, split_special_tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return [type(tokenizer).__name__, sorted(vocab.items())]
    state = json.loads(backend.to_str())
    state.pop("truncation", None)
    state.pop("padding", None)
    settings = {"class": type(tokenizer).__name__, "truncation_side": tokenizer.truncation_side,
                "split_special_tokens": bool(getattr(tokenizer, "split_special_tokens", False))}
    return {"backend": state, "settings": settings}


def _folder_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def source_description(task: TaskConfig, data_root: Union[str, Path, None]) -> dict:
    """What the task is read from: per-split file path + sha256, or the hub dataset + revision."""
    if task.format == "hub":
        hub = task.hub
        desc = {"format": "hub", "path": hub.path, "name": hub.name, "revision": hub.revision,
                "splits": {split: task.splits[split] for split in task.labeled_splits}}
        if Path(hub.path).is_dir():  # a local dataset folder: key it by its bytes, like files
            desc["folder_sha256"] = _sha256_json(_folder_hashes(Path(hub.path)))
        return desc
    files = {split: {"path": task.splits[split], "sha256": sha256_file(split_source(task, split, data_root))}
             for split in task.labeled_splits}
    return {"format": task.format, "files": files}


# task keys that change training, not the shards: left out of the fingerprint, so changing them re-prepares
# nothing (unlabeled_splits changes the shards only through the files prepared, which `source` lists)
TRAINING_ONLY = {"loss_weight", "unlabeled_splits"}


def task_fingerprint(task: TaskConfig, source: dict, tokenizer_fp: str, max_length: int,
                     on_bad_row: str, shard_rows: int) -> str:
    return _sha256_json({
        "format_version": FORMAT_VERSION, "source": source, "task": task.model_dump(mode="json", exclude=TRAINING_ONLY),
        "tokenizer": tokenizer_fp, "max_length": max_length, "on_bad_row": on_bad_row,
        "shard_rows": shard_rows,
    })


# ---------------------------------------------------------------- tokenization

def task_schema(task: TaskConfig, tokenizer) -> pa.Schema:
    """The shard columns of `task`: its family's schema for this tokenizer."""
    return get_family(task.family).shard_schema(has_token_types(tokenizer))


def _tokenize_batch(batch: dict, tokenizer, task: TaskConfig, max_length: int) -> dict:
    """A map() batch of records (as columns, or JSON-encoded in one column) -> the family's shard
    columns (any number of rows)."""
    if list(batch) == [_JSON_COLUMN]:
        records = [json.loads(r) for r in batch[_JSON_COLUMN]]
    else:
        keys = list(batch)
        records = [dict(zip(keys, values)) for values in zip(*batch.values())]
    return get_family(task.family).tokenize(records, tokenizer, task, max_length)


_JSON_COLUMN = "__prefinetune_record_json__"
_SCALARS = (str, int, float, bool, type(None))


def _as_columns(records: list[dict]) -> dict[str, list]:
    """Records as Arrow-friendly columns: one per key where every record has the same keys and each value
    of a key is a scalar of one type (None aside); else one column of JSON strings (nested records:
    choices, spans, token lists), which any shape survives."""
    keys = list(records[0])
    columns = {k: [r.get(k) for r in records] for k in keys}
    for key, values in columns.items():
        types = {type(v) for v in values if v is not None}
        if len(types) > 1 or not types <= set(_SCALARS):
            break
    else:
        first = records[0].keys()
        if all(r.keys() == first for r in records):
            return columns
    return {_JSON_COLUMN: [json.dumps(r, ensure_ascii=False) for r in records]}


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    import datasets

    was = datasets.is_progress_bar_enabled()
    (datasets.enable_progress_bars if enabled else datasets.disable_progress_bars)()
    try:
        yield
    finally:
        (datasets.enable_progress_bars if was else datasets.disable_progress_bars)()


def tokenize_records(records: list[dict], tokenizer, task: TaskConfig, max_length: int, num_proc: int = 1,
                     fingerprint: Optional[str] = None, desc: Optional[str] = None) -> pa.Table:
    """Records of `task` -> an Arrow table in the family's schema (it may hold more rows than there are
    records). Families with `tokenize_encoded`, given a fast tokenizer, are encoded here, `num_proc`
    threads running the Rust tokenizer (prefinetune.data.threaded_encode); the others run the family's
    `tokenize` through datasets.Dataset.map(batched=True, num_proc), flat records travelling to the
    workers as Arrow columns, others as JSON strings (one column, whatever their shape)."""
    schema = task_schema(task, tokenizer)
    if not records:
        return schema.empty_table()
    encoded = get_family(task.family).threadable_tokenize()
    if encoded is not None and threaded_encode.available(tokenizer):
        return _tokenize_in_threads(records, encoded, tokenizer, task, max_length, num_proc, schema, desc)
    return _tokenize_in_processes(records, tokenizer, task, max_length, _num_proc(len(records), num_proc),
                                  schema, fingerprint, desc)


def _tokenize_in_threads(records: list[dict], tokenize_encoded, tokenizer, task: TaskConfig, max_length: int,
                         threads: int, schema: pa.Schema, desc: Optional[str]) -> pa.Table:
    import datasets
    from tqdm.auto import tqdm

    tables = []
    batch = max(THREAD_BATCH_ROWS, 4 * threads * threaded_encode.CHUNK_ROWS)
    with threaded_encode.ThreadedEncoder(tokenizer, max_length, threads) as encode, \
            tqdm(total=len(records), desc=desc, unit=" rows", disable=not datasets.is_progress_bar_enabled()) as bar:
        for start in range(0, len(records), batch):
            part = records[start:start + batch]
            tables.append(pa.Table.from_pydict(tokenize_encoded(part, encode, task), schema=schema))
            bar.update(len(part))
    return pa.concat_tables(tables)


def _tokenize_in_processes(records: list[dict], tokenizer, task: TaskConfig, max_length: int, num_proc: int,
                           schema: pa.Schema, fingerprint: Optional[str], desc: Optional[str]) -> pa.Table:
    import datasets

    columns = _as_columns(records)
    ds = datasets.Dataset.from_dict(columns).map(
        partial(_tokenize_batch, tokenizer=tokenizer, task=task, max_length=max_length),
        batched=True, batch_size=1000, num_proc=num_proc if num_proc > 1 else None,
        remove_columns=list(columns), features=datasets.Features.from_arrow_schema(schema),
        new_fingerprint=fingerprint, desc=desc)
    return ds.with_format("arrow")[:].select(schema.names).cast(schema)


def _num_proc(rows: int, wanted: int) -> int:
    return max(1, min(wanted, rows // MIN_ROWS_PER_PROC))


# ---------------------------------------------------------------- shards and stats

def write_shards(table: pa.Table, split_dir: Path, shards_dir: Path, shard_rows: int) -> list[dict]:
    """Write `table` as shard-NNNNN.arrow files (at least one, even for 0 rows); returns their entries."""
    split_dir.mkdir(parents=True, exist_ok=True)
    for stale in split_dir.glob("shard-*.arrow"):
        stale.unlink()
    entries = []
    for i, start in enumerate(range(0, max(table.num_rows, 1), shard_rows)):
        part = table.slice(start, shard_rows)
        path = split_dir / f"shard-{i:05d}.arrow"
        tmp = path.with_name(path.name + ".tmp")
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(part)
        os.replace(tmp, path)
        entries.append({"file": path.relative_to(shards_dir).as_posix(), "rows": part.num_rows,
                        "sha256": sha256_file(path)})
    return entries


def _bucket_uppers(max_length: int) -> list[int]:
    uppers, edge = [], 8
    while edge < max_length:
        uppers.append(edge)
        edge *= 2
    return uppers + [max_length]


def length_stats(lengths: np.ndarray, max_length: int) -> dict:
    """Summary + power-of-two histogram.

    counts[i] = rows with bucket_upper[i-1] < length <= bucket_upper[i] (bucket 0 from length 0).
    """
    uppers = _bucket_uppers(max_length)
    if lengths.size == 0:
        return {"min": 0, "max": 0, "mean": 0.0, "p50": 0, "p95": 0, "at_max_length": 0,
                "histogram": {"bucket_upper": uppers, "counts": [0] * len(uppers)}}
    bins = np.searchsorted(np.asarray(uppers), lengths, side="left")
    counts = np.bincount(bins, minlength=len(uppers))
    return {
        "min": int(lengths.min()), "max": int(lengths.max()), "mean": round(float(lengths.mean()), 2),
        "p50": int(np.percentile(lengths, 50)), "p95": int(np.percentile(lengths, 95)),
        "at_max_length": int((lengths >= max_length).sum()),
        "histogram": {"bucket_upper": uppers, "counts": [int(c) for c in counts]},
    }


# ---------------------------------------------------------------- one task

def data_root(recipe: RecipeConfig) -> Optional[str]:
    """Where the task files are read from: data.root, or for the synthetic suite the run folder's
    synthetic_data (generated data never goes into a folder of inputs)."""
    if recipe.data.synthetic:
        return str(recipe.run_dir / "synthetic_data")
    return recipe.data.root


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"[prepare] {message}", file=sys.stderr, flush=True)


def _reusable(entry: Optional[dict], fingerprint: str, shards_dir: Path) -> bool:
    """The old entry has this fingerprint and every shard it lists is there with the recorded sha256."""
    if not entry or entry.get("fingerprint") != fingerprint:
        return False
    for split in entry.get("splits", {}).values():
        for shard in split["shards"]:
            path = shards_dir / shard["file"]
            if not path.is_file() or sha256_file(path) != shard["sha256"]:
                return False
        quarantine = split.get("quarantine_file")
        if quarantine and not (shards_dir / quarantine).is_file():
            return False
    return True


def _prepare_split(task: TaskConfig, split: str, recipe: RecipeConfig, tokenizer, shards_dir: Path,
                   shard_rows: int, fingerprint: str) -> dict:
    split_dir = shards_dir / task.name / split
    quarantine = split_dir / "quarantine.jsonl"
    quarantine.unlink(missing_ok=True)
    read = read_split(task, split, data_root(recipe), recipe.data.on_bad_row,
                      quarantine if recipe.data.on_bad_row == "quarantine" else None)
    max_length = recipe.model.max_length
    table = tokenize_records(read.records, tokenizer, task, max_length, recipe.data.num_proc,
                             fingerprint=_sha256_json([fingerprint, split])[:32], desc=f"{task.name}/{split}")
    shards = write_shards(table, split_dir, shards_dir, shard_rows)
    entry = {
        "source": task.splits[split],
        "records": len(read.records),
        "rows": table.num_rows,
        "shards": shards,
        "quarantined": read.quarantined,
        "unlabeled": read.unlabeled,
        "quarantine_file": quarantine.relative_to(shards_dir).as_posix() if read.quarantine_file else None,
        "max_length": max_length,
        **get_family(task.family).split_stats(table, task),
        "lengths": length_stats(table.column("length").to_numpy(), max_length),
    }
    return entry


def _task_line(name: str, splits: dict, seconds: float) -> str:
    """One progress line per prepared task: rows per split (records where a record made several rows)."""
    def rows(e: dict) -> str:
        return f"{e['rows']}" if e["rows"] == e["records"] else f"{e['rows']} ({e['records']} records)"

    quarantined = sum(e["quarantined"] for e in splits.values())
    unlabeled = sum(e.get("unlabeled", 0) for e in splits.values())
    skipped = f"; {unlabeled} without a gold label, skipped" if unlabeled else ""
    return (f"{name}: " + ", ".join(f"{split} {rows(e)} rows" for split, e in splits.items())
            + f"; {quarantined} quarantined{skipped}; {seconds:.1f}s")


def _check_names(task: TaskConfig) -> None:
    for split in task.splits:
        if not _SAFE_NAME.fullmatch(split):
            raise ValueError(
                f"task {task.name!r}: split name {split!r} must be letters, digits, '_', '-', '.'")


# ---------------------------------------------------------------- the whole recipe

def _read_old_manifest(shards_dir: Path) -> dict:
    try:
        return json.loads((shards_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@contextlib.contextmanager
def _shards_lock(shards_dir: Path):
    """An exclusive lock on the shards folder (`.prepare.lock`, flock) for one prepare at a time: two
    recipes, or two runs, sharing a shards folder take turns, and the second reuses what the first wrote."""
    with open(shards_dir / ".prepare.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_tasks(recipe: RecipeConfig, tokenizer, tokenizer_name: str, progress: bool = True,
                  shard_rows: int = DEFAULT_SHARD_ROWS) -> dict:
    """Prepare every task and split of `recipe` into shards; returns the manifest (also written).

    The manifest's "tasks" keeps the tasks other recipes prepared in the same folder (a task of the same
    name is replaced); its top-level fields and "last_run" (which tasks were "prepared" and which
    "reused") are this prepare's.
    """
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be >= 1, not {shard_rows}")
    shards_dir = writable_folder(recipe.shards_path, "data.shards_dir")
    with _shards_lock(shards_dir):
        return _prepare_tasks(recipe, tokenizer, tokenizer_name, progress, shard_rows, shards_dir)


def _prepare_tasks(recipe: RecipeConfig, tokenizer, tokenizer_name: str, progress: bool, shard_rows: int,
                   shards_dir: Path) -> dict:
    root = data_root(recipe)
    if recipe.data.synthetic:
        written = write_suite(root, recipe.data.synthetic_rows, recipe.run.seed)
        changed = sum(v == "written" for v in written.values())
        _say(progress, f"synthetic suite in {root}: {changed} file(s) written, "
                       f"{len(written) - changed} unchanged")
    if recipe.data.num_proc > 1:
        # parallelism is ours (encode threads, or forked datasets.map workers): no Rust pool on top of it
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    max_length = recipe.model.max_length
    tok = tokenizer_info(tokenizer, tokenizer_name, max_length)
    old_tasks = _read_old_manifest(shards_dir).get("tasks", {})
    tasks, report = {}, {"prepared": [], "reused": []}
    with _progress_bars(progress and sys.stderr.isatty()):    # in a log file, bars are only noise
        for task in recipe.tasks:
            _check_names(task)
            source = source_description(task, root)
            fingerprint = task_fingerprint(task, source, tok["fingerprint"], max_length,
                                           recipe.data.on_bad_row, shard_rows)
            if _reusable(old_tasks.get(task.name), fingerprint, shards_dir):
                tasks[task.name] = old_tasks[task.name]
                report["reused"].append(task.name)
                _say(progress, f"{task.name}: reused (fingerprint {fingerprint[:12]} unchanged, "
                               "shards verified)")
                continue
            started = time.time()
            splits = {split: _prepare_split(task, split, recipe, tokenizer, shards_dir, shard_rows, fingerprint)
                      for split in task.labeled_splits}
            _say(progress, _task_line(task.name, splits, time.time() - started))
            tasks[task.name] = {
                "fingerprint": fingerprint, "family": task.family,
                "label_names": list(task.label_names) if task.label_names else None,
                "num_labels": task.num_labels, "pair": task.columns.text_pair is not None,
                "columns": {f.name: str(f.type) for f in task_schema(task, tokenizer)},
                "source": source, "config": task.model_dump(mode="json"), "splits": splits,
            }
            report["prepared"].append(task.name)
    manifest = {
        "format_version": FORMAT_VERSION,
        "data_root": root,
        "on_bad_row": recipe.data.on_bad_row,
        "shard_rows": shard_rows,
        "max_length": max_length,
        "tokenizer": tok,
        "tasks": {**{name: entry for name, entry in old_tasks.items() if name not in tasks}, **tasks},
        "last_run": report,
    }
    _write_json(shards_dir / MANIFEST_NAME, manifest)
    _say(progress, f"manifest {shards_dir / MANIFEST_NAME}: {len(report['prepared'])} prepared, "
                   f"{len(report['reused'])} reused")
    return manifest
