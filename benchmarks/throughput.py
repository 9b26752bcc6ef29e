"""Training throughput side by side: what a user would otherwise run against prefinetune, on the same model
(MiniLM), data (SST-2 train from ../shared/data, tokenized once to max length 128), 32 examples per
optimizer step (2 micro-batches of 16), AdamW:

  a. a bare PyTorch loop, random rows, each micro-batch padded to its longest row (the reference);
  b. Hugging Face Trainer, dynamic padding (DataCollatorWithPadding) and train_sampling_strategy
     "group_by_length" (what was the group_by_length flag before transformers 5);
  c. prefinetune, a one-task recipe, 1 Ray Train worker (2 CPUs), its default batches;
  c_random. the same with train.token_budget off (batch_size random rows; isolates the machinery);
  c_zero0. c with deepspeed.zero_stage 0 (no ZeRO partitioning: what ZeRO-2 costs on one worker);
  d. prefinetune, 2 workers (1 CPU each), its default batches.

Each system runs in a process of its own, in rounds that interleave them; each is timed over its steady
updates only (prefinetune: between its metrics windows; the others: after 2 warm-up steps), so start-up
(Ray, model load) is left out. Examples/s is measured; real (non-padding) tokens/s is examples/s times
the mean real length of the rows each drew. Figures are medians over rounds.

    python benchmarks/throughput.py --data-dir ../shared/data --out benchmarks/results/throughput.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minilm_tasks import MODEL, REPO, write_result  # noqa: E402

SYSTEMS = ("a", "b", "c", "c_random", "c_zero0", "d")
MICRO, ACCUMULATE, LENGTH, LR = 16, 2, 128, 1e-5
NAMES = {"a": "bare PyTorch loop", "b": "HF Trainer (group_by_length)", "c": "prefinetune, 1 worker",
         "c_random": "prefinetune, 1 worker, random rows", "c_zero0": "prefinetune, 1 worker, ZeRO stage 0",
         "d": "prefinetune, 2 workers"}


def _sst2(data_dir: str):
    """(token ids per row, labels) of SST-2 train, tokenized as prefinetune does (max length 128)."""
    import csv

    from prefinetune.model.source import load_tokenizer

    tokenizer = load_tokenizer(MODEL)
    with open(Path(data_dir) / "sst2" / "train.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    ids = tokenizer([r["sentence"] for r in rows], truncation=True, max_length=LENGTH)["input_ids"]
    return tokenizer, ids, np.array([int(r["label"]) for r in rows])


def _bare_loop(data_dir: str, steps: int) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification

    from prefinetune.model.source import NO_HUB_KERNELS, resolve_model_source

    tokenizer, ids, labels = _sst2(data_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(resolve_model_source(MODEL), num_labels=2,
                                                               **NO_HUB_KERNELS).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    rng = np.random.default_rng(0)
    times, real = [], 0
    for step in range(steps + 2):
        start = time.perf_counter()
        for _ in range(ACCUMULATE):
            rows = rng.integers(0, len(ids), MICRO)
            batch = tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt")
            out = model(**batch, labels=torch.as_tensor(labels[rows]))
            (out.loss / ACCUMULATE).backward()
            if step >= 2:
                real += int(batch["attention_mask"].sum())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    seconds = sum(times[2:])
    examples = steps * MICRO * ACCUMULATE
    return {"examples_per_s": examples / seconds, "real_tokens_per_s": real / seconds,
            "threads": torch.get_num_threads()}


def _trainer(data_dir: str, steps: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from prefinetune.model.source import NO_HUB_KERNELS, resolve_model_source

    tokenizer, ids, labels = _sst2(data_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(resolve_model_source(MODEL), num_labels=2,
                                                               **NO_HUB_KERNELS)
    data = Dataset.from_dict({"input_ids": ids, "labels": labels.tolist()})
    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=MICRO,
                                 gradient_accumulation_steps=ACCUMULATE, max_steps=steps + 2, learning_rate=LR,
                                 train_sampling_strategy="group_by_length", use_cpu=True,
                                 report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True,
                                 dataloader_num_workers=0, seed=0)
        Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer),
                callbacks=[Clock()]).train()
    seconds = marks[-1] - marks[1]
    examples = (len(marks) - 2) * MICRO * ACCUMULATE
    mean_real = float(np.mean([len(x) for x in ids]))     # group_by_length's megabatches are drawn at random
    return {"examples_per_s": examples / seconds, "real_tokens_per_s": examples / seconds * mean_real,
            "threads": torch.get_num_threads()}


def _prefinetune(data_dir: str, steps: int, workers: int, token_budget: bool, zero_stage: int = 2) -> dict:
    from prefinetune.catalog.shared_data import catalog_task
    from prefinetune.recipe.config import recipe_from_dict
    from prefinetune.run.driver import run

    window = max(steps // 3, 2)
    with tempfile.TemporaryDirectory() as work:
        recipe = recipe_from_dict({
            "run": {"output_dir": work, "name": "throughput"},
            "model": {"name_or_path": MODEL, "max_length": LENGTH},
            "data": {"root": data_dir, "shards_dir": f"{work}/shards"},
            "tasks": [catalog_task("sst2")],
            "train": {"updates": window * 4, "slots_per_update": ACCUMULATE, "batch_size": MICRO,
                      "log_every": window, **({} if token_budget else {"token_budget": None})},
            "optim": {"lr": LR}, "deepspeed": {"zero_stage": zero_stage},
            "eval": {"every_updates": 10**6, "max_rows": 32},
            "checkpoint": {"every_updates": 10**6, "keep": 1},
            "scaling": {"num_workers": workers, "use_gpu": False, "cpus_per_worker": 2 // workers}})
        run(recipe)
        records = [json.loads(x) for x in (recipe.run_dir / "metrics.jsonl").read_text().splitlines()]
        shards = recipe.shards_path
        from prefinetune.data.shards import open_split

        lengths = open_split(shards, "sst2", "train").lengths
    windows = [r for r in records if "lr" in r]
    first, last = windows[0], windows[-1]        # the first window holds the warm-up; timed after it
    examples = last["seen/sst2"] - first["seen/sst2"]
    seconds = last["elapsed_s"] - first["elapsed_s"]
    efficiency = float(np.mean([r["padding_efficiency/sst2"] for r in windows[1:]]))
    mean_real = float(np.mean(lengths))          # every row is drawn at the same rate, with or without budget
    return {"examples_per_s": examples / seconds, "real_tokens_per_s": examples / seconds * mean_real,
            "padding_efficiency": efficiency, "examples_per_update": examples / (last["update"] - first["update"])}


def measure(system: str, data_dir: str, steps: int) -> dict:
    if system == "a":
        return _bare_loop(data_dir, steps)
    if system == "b":
        return _trainer(data_dir, steps)
    workers = 2 if system == "d" else 1
    return _prefinetune(data_dir, steps, workers, token_budget=system != "c_random",
                        zero_stage=0 if system == "c_zero0" else 2)


def _run_one(system: str, data_dir: str, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--one", system, "--data-dir", data_dir, "--steps", str(steps)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"system {system}: exit {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _summary(runs: dict) -> dict:
    med = {s: {k: float(np.median([r[k] for r in rs])) for k in rs[0] if isinstance(rs[0][k], (int, float))}
           for s, rs in runs.items()}
    for s, row in med.items():
        row["name"] = NAMES[s]
        for ref in ("a", "b"):
            for key in ("examples_per_s", "real_tokens_per_s"):
                if ref in med:
                    row[f"{key}_vs_{ref}"] = row[key] / med[ref][key]
        row["rounds"] = len(runs[s])
    return med


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "throughput.json"))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=24, help="timed optimizer steps per system and round")
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    p.add_argument("--one", choices=SYSTEMS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.data_dir, args.steps)))
        return 0
    runs: dict[str, list] = {s: [] for s in args.systems}
    for r in range(args.rounds):
        for system in args.systems:
            runs[system].append(_run_one(system, args.data_dir, args.steps))
            x = runs[system][-1]
            print(f"round {r + 1}: {NAMES[system]:36s} {x['examples_per_s']:7.1f} ex/s "
                  f"{x['real_tokens_per_s']:8.0f} real tok/s", flush=True)
    table = _summary(runs)
    for s, row in table.items():
        ratios = ", ".join(f"{k.replace('_per_s_vs_', '/s vs ')} x{v:.2f}" for k, v in row.items() if "_vs_" in k)
        print(f"{row['name']:36s} {row['examples_per_s']:7.1f} ex/s; {ratios}")
    write_result(args.out, {"settings": {"model": MODEL, "data": "sst2 train", "max_length": LENGTH,
                                         "examples_per_step": MICRO * ACCUMULATE, "micro_batch": MICRO,
                                         "rounds": args.rounds, "timed_steps": args.steps, "device": "cpu (2 cores)"},
                            "results": table})
    return 0


if __name__ == "__main__":
    sys.exit(main())
