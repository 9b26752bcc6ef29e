"""`prefinetune export`: a DeepSpeed checkpoint of a run as a Hugging Face folder (optionally pushed to the
hub); `prefinetune push`: an export folder to the hub. The token comes from HF_TOKEN (or the
huggingface_hub login) and is never written or logged.

    prefinetune export --recipe recipes/local_cpu.yaml --checkpoint runs/local_cpu/ray/local_cpu/checkpoint_000001 \
        --out runs/local_cpu/export2 [--metrics runs/local_cpu/eval_final.json] [--push-to-hub my-org/my-model]
    HF_TOKEN=... prefinetune push runs/local_cpu/export --repo-id my-org/my-model [--public]
    prefinetune task-folders runs/local_cpu/export mnli rte     # stock per-task folders, written later

--checkpoint is the folder engine.save_checkpoint wrote (with its 'latest' file) or one tag folder in it.
Trailing `section.key=value` arguments override the recipe, as in the other commands.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from prefinetune.recipe.config import RecipeError, load_recipe

__all__ = ["make_parser", "main", "push_parser", "push_main", "task_folders_main"]


def _hub_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--public", action="store_true", help="create the hub repo public (default: private)")
    p.add_argument("--revision", help="hub branch to upload to (default: main)")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prefinetune export",
                                description="DeepSpeed checkpoint -> Hugging Face export folder (-> hub)")
    p.add_argument("--recipe", required=True, help="the run's YAML recipe (model and tasks)")
    p.add_argument("--checkpoint", required=True, help="DeepSpeed checkpoint folder")
    p.add_argument("--tag", help="checkpoint tag (default: the one in the 'latest' file)")
    p.add_argument("--out", required=True, help="export folder to write (an earlier export there is replaced)")
    p.add_argument("--metrics", help="the run's eval_final.json, for the model card's metrics table")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the export to this hub model repo")
    _hub_flags(p)
    p.add_argument("overrides", nargs="*", help="recipe overrides, e.g. model.name_or_path=roberta-base")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        recipe = load_recipe(args.recipe, args.overrides)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from prefinetune.export import export_from_checkpoint
    from prefinetune.finetune.hooks import hooks_for

    metrics = json.loads(Path(args.metrics).read_text()) if args.metrics else None
    hooks = hooks_for(recipe)        # the model's shape in training (fine-tuning's LoRA adapters), merged here
    out = export_from_checkpoint(args.checkpoint, recipe, args.out, tag=args.tag, metrics=metrics,
                                 shape=hooks.shape_model, unshape=hooks.unshape_model)
    print(f"[prefinetune] export: {out}")
    return _push(out, args.push_to_hub, args) if args.push_to_hub else 0


def push_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prefinetune push", description="upload an export folder to a hub model repo")
    p.add_argument("export", help="the export folder (run_dir/export)")
    p.add_argument("--repo-id", required=True, help="the hub model repo, e.g. my-org/my-model")
    _hub_flags(p)
    return p


def push_main(argv: list[str] | None = None) -> int:
    args = push_parser().parse_args(argv)
    if not (Path(args.export) / "tasks.json").is_file():
        print(f"error: {args.export} is not a prefinetune export (no tasks.json)", file=sys.stderr)
        return 2
    return _push(Path(args.export), args.repo_id, args)


def _push(folder: Path, repo_id: str, args: argparse.Namespace) -> int:
    from prefinetune.export import push_to_hub

    url = push_to_hub(folder, repo_id, private=not args.public, revision=args.revision)
    print(f"[prefinetune] pushed: {url}")
    return 0


def task_folders_main(argv: list[str] | None = None) -> int:
    """`prefinetune task-folders EXPORT NAME...`: the per-task AutoModelFor* folders an export was written
    without (export.task_folders), added to it."""
    p = argparse.ArgumentParser(prog="prefinetune task-folders",
                                description="write stock per-task folders (tasks/<name>) into an export")
    p.add_argument("export", help="the export folder (run_dir/export)")
    p.add_argument("tasks", nargs="+", help="task names (tasks.json)")
    args = p.parse_args(argv)
    from prefinetune.export import add_task_folders

    try:
        written = add_task_folders(args.export, args.tasks)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for folder in written:
        print(f"[prefinetune] wrote {Path(args.export) / folder}")
    if len(written) < len(args.tasks):
        print(f"error: {len(args.tasks) - len(written)} of the {len(args.tasks)} folders could not be written (the "
              f"warnings above say why; tasks.json records it)", file=sys.stderr)
        return 1
    return 0
