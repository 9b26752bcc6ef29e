"""`prefinetune predict`: an export's predictions on a split of a recipe's tasks, as per-task JSONL and, for
GLUE and SuperGLUE tasks, the benchmarks' submission files.

    prefinetune predict --model runs/X/export --recipe recipes/shared_data_cpu.yaml --data-dir ../shared/data
    prefinetune predict --model runs/rte/export --recipe recipes/finetune/rte.yaml --split dev --out preds/

Every recipe task the export has a head for and that has the split is predicted (--tasks picks some);
the others are listed as skipped, with the reason. Output (default: predictions/<split> beside the
export): <task>.jsonl ({id, prediction, score[, gold]} per row), glue/*.tsv and superglue/*.jsonl (for
a benchmark task's unlabeled split) and summary.json (what was predicted from which file, and what was
skipped).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from prefinetune.cli.common import data_dir_overrides, input_errors
from prefinetune.recipe.config import load_recipe
from prefinetune.run.console import say

__all__ = ["make_parser", "main"]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prefinetune predict", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="an export folder (pre-finetuning or finetune)")
    p.add_argument("--recipe", required=True, help="the recipe whose tasks say where each split's rows are")
    p.add_argument("--split", default="test", help="the split to predict (default: test)")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help="only these tasks (default: all the export has)")
    p.add_argument("--out", help="output folder (default: predictions/<split> beside the export)")
    p.add_argument("--data-dir", help="data.root: folder the tasks' files are read from")
    p.add_argument("--batch-size", type=int, default=32, help="rows per forward pass (default 32)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="any recipe key, e.g. tasks.0.splits.test=...")
    return p


def chosen_tasks(recipe, info: dict, split: str, asked: list[str] | None) -> tuple[list, dict[str, str]]:
    """(the recipe tasks to predict, {task: why skipped}); a task asked for by name must be predictable."""
    heads = {t["name"] for t in info["tasks"]}
    names = [t.name for t in recipe.tasks]
    unknown = sorted(set(asked or []) - set(names))
    if unknown:
        raise ValueError(f"--tasks names {unknown}, not tasks of the recipe ({names})")
    chosen, skipped = [], {}
    for task in recipe.tasks:
        if asked and task.name not in asked:
            continue
        why = ("the export has no head for it" if task.name not in heads
               else f"it has no split {split!r} (splits: {sorted(task.splits)})" if split not in task.splits else None)
        if why and asked:
            raise ValueError(f"task {task.name!r}: {why}")
        if why:
            skipped[task.name] = why
        else:
            chosen.append(task)
    if not chosen:
        raise ValueError(f"nothing to predict: {skipped or 'no tasks'}")
    return chosen, skipped


def predict(args: argparse.Namespace) -> Path:
    import torch

    from prefinetune.data.prepare import data_root
    from prefinetune.export.folder import load_exported
    from prefinetune.model.source import load_tokenizer
    from prefinetune.predict.submission import write_submissions
    from prefinetune.predict.task_predictions import predict_task, write_jsonl

    recipe = load_recipe(args.recipe, data_dir_overrides(args.data_dir) + list(args.overrides))
    model, info = load_exported(args.model, trust_remote_code=recipe.model.trust_remote_code)
    tasks, skipped = chosen_tasks(recipe, info, args.split, args.tasks)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    tokenizer = load_tokenizer(str(args.model))
    out = Path(args.out) if args.out else Path(args.model).resolve().parent / "predictions" / args.split
    summary = {"model": str(args.model), "recipe": str(args.recipe), "split": args.split, "tasks": {},
               "skipped": skipped}
    done_tasks = []
    for task in tasks:
        done = predict_task(model, info, task, args.split, data_root(recipe), tokenizer, args.batch_size, device)
        path = write_jsonl(done, out / f"{task.name}.jsonl")
        summary["tasks"][task.name] = {"rows": len(done.rows), "source": done.source, "labeled": done.labeled,
                                       "file": path.name}
        say(f"[prefinetune] predict {task.name}/{args.split}: {len(done.rows)} rows from {done.source} -> {path}")
        done_tasks.append(done)
    summary["submissions"] = [str(p) for p in write_submissions(done_tasks, out)]
    if not summary["submissions"]:
        summary["no_submissions"] = ("submission files are written for the unlabeled splits (unlabeled_splits) of "
                                     "GLUE and SuperGLUE tasks; none was predicted")
    for name, why in skipped.items():
        say(f"[prefinetune] predict: skipped {name}: {why}")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        out = predict(args)
    except (*input_errors(), ValueError, FileNotFoundError, RuntimeError) as err:
        say(f"error: {err}", sys.stderr)
        return 2
    say(f"[prefinetune] predictions: {out}")
    return 0
