"""Data preparation speed: rows/s of prefinetune's data_prep (read, validate, tokenize, write Arrow shards
with their manifest) against the plain baseline a user would write, `datasets.load_dataset(<format>,
data_files=...).map(tokenize, batched=True, num_proc=2)`, on the same file with the same tokenizer
(MiniLM, max length 128): SST-2 train (67k rows, TSV) from ../shared/data and a synthetic 1M-row JSONL
file written to --work. Interleaved in rounds, every run in a fresh folder and cache (nothing reused).

    python benchmarks/data_prep.py --data-dir ../shared/data --out benchmarks/results/data_prep.json
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minilm_tasks import MODEL, REPO, write_result  # noqa: E402

LENGTH, PROCS = 128, 2
WORDS = ("the a film movie great bad plot actor scene story good dull moving slow funny sad long short "
         "music ending script cast role director best worst really quite not very").split()


def synthetic_file(path: Path, rows: int, seed: int = 0) -> Path:
    """`rows` JSONL records {"text", "label"} of 5 to 30 random words (written once, reused)."""
    if path.is_file() and sum(1 for _ in path.open()) == rows:
        return path
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for _ in range(rows):
            words = rng.choice(WORDS, rng.integers(5, 31))
            f.write(json.dumps({"text": " ".join(words), "label": int(rng.integers(0, 2))}) + "\n")
    return path


def _baseline(file: Path, fmt: str, text: str, work: Path) -> int:
    """load_dataset + batched tokenize map, num_proc 2, in a cache folder of its own; returns rows."""
    import datasets

    from prefinetune.model.source import load_tokenizer

    tokenizer = load_tokenizer(MODEL)
    kwargs = {"delimiter": "\t", "quoting": 3} if fmt == "csv" else {}
    ds = datasets.load_dataset(fmt, data_files=str(file), split="train", cache_dir=str(work / "cache"), **kwargs)
    ds = ds.map(lambda b: tokenizer(b[text], truncation=True, max_length=LENGTH), batched=True, num_proc=PROCS,
                load_from_cache_file=False)
    return len(ds)


def _prefinetune(task: dict, root: Path, work: Path) -> int:
    from prefinetune.data.prepare import prepare_tasks
    from prefinetune.model.source import load_tokenizer
    from prefinetune.recipe.config import recipe_from_dict

    recipe = recipe_from_dict({"run": {"output_dir": str(work), "name": "prep"},
                               "model": {"name_or_path": MODEL, "max_length": LENGTH},
                               "data": {"root": str(root), "shards_dir": str(work / "shards"), "num_proc": PROCS},
                               "tasks": [task], "train": {"updates": 1}})
    manifest = prepare_tasks(recipe, load_tokenizer(MODEL), MODEL, progress=False)
    return manifest["tasks"][task["name"]]["splits"]["train"]["rows"]


def _time(fn, *args) -> tuple[float, int]:
    start = time.perf_counter()
    rows = fn(*args)
    return time.perf_counter() - start, rows


def _cases(data_dir: str, work: Path, rows: int) -> dict:
    from prefinetune.catalog.shared_data import catalog_task

    sst2 = catalog_task("sst2", splits={"train": "sst2/train.tsv"})
    big = synthetic_file(work / "synthetic" / "train.jsonl", rows)
    synthetic = {"name": "synthetic", "format": "jsonl", "splits": {"train": "train.jsonl"},
                 "columns": {"text": "text", "label": "label"}, "label_names": ["0", "1"],
                 "label_map": {"0": "0", "1": "1"}}
    return {"sst2": (sst2, Path(data_dir), Path(data_dir) / "sst2" / "train.tsv", "csv", "sentence"),
            f"synthetic_{rows}": (synthetic, big.parent, big, "json", "text")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "data_prep.json"))
    p.add_argument("--work", default="/tmp/prefinetune_data_prep_bench")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the synthetic file")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    import datasets

    datasets.disable_progress_bars()
    work = Path(args.work)
    results: dict = {}
    for name, (task, root, file, fmt, text) in _cases(args.data_dir, work, args.rows).items():
        times: dict[str, list] = {"baseline": [], "prefinetune": []}
        for r in range(args.rounds):                      # interleaved, each run in a fresh folder
            for kind in ("baseline", "prefinetune"):
                run_dir = Path(tempfile.mkdtemp(dir=work, prefix=f"{kind}-"))
                try:
                    seconds, rows = (_time(_baseline, file, fmt, text, run_dir) if kind == "baseline"
                                     else _time(_prefinetune, task, root, run_dir))
                finally:
                    shutil.rmtree(run_dir, ignore_errors=True)
                times[kind].append(seconds)
                print(f"round {r + 1}: {name:18s} {kind:11s} {rows:8d} rows {seconds:7.1f} s "
                      f"{rows / seconds:9.0f} rows/s", flush=True)
        med = {k: float(np.median(v)) for k, v in times.items()}
        results[name] = {"rows": rows, "median_s": med, "rows_per_s": {k: rows / v for k, v in med.items()},
                         "prefinetune_vs_baseline": med["baseline"] / med["prefinetune"]}
        print(f"{name}: prefinetune x{results[name]['prefinetune_vs_baseline']:.2f} the baseline's rows/s")
    write_result(args.out, {"settings": {"model": MODEL, "max_length": LENGTH, "num_proc": PROCS,
                                         "rounds": args.rounds, "device": "cpu (2 cores)",
                                         "baseline": "datasets.load_dataset(fmt).map(tokenizer, batched=True, "
                                                     "num_proc=2), fresh cache"},
                            "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
