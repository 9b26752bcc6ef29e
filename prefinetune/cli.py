"""The command line shared by the launch scripts: a recipe, a few flags, and key=value overrides.

    python launch/local_cpu.py                                   # embedded default: offline, 2 CPU workers
    python launch/local_cpu.py --recipe recipes/shared_data_cpu.yaml --data-dir ../shared/data
    python launch/muppet_64gpu.py --recipe recipes/X.yaml --num-workers 8 train.updates=1000
    prefinetune finetune --recipe recipes/finetune/rte.yaml --data-dir ../shared/data --model runs/X/export
    prefinetune compare --recipe recipes/finetune/rte.yaml --models BASE CANDIDATE --fractions 0.1,1.0 --seeds 3

`prefinetune` alone (or `prefinetune pretrain`) pre-finetunes; `finetune` and `compare`: prefinetune/finetune/.

Flags are shorthands for overrides; any recipe key can be overridden as `section.key=value`
(value parsed as YAML, e.g. `tasks.0.label_names=[no,yes]`).
"""
from __future__ import annotations

import argparse
import sys

from prefinetune.config import RecipeError, load_recipe
from prefinetune.run_errors import RunFailed

__all__ = ["make_parser", "flag_overrides", "data_dir_overrides", "input_errors", "main", "finetune_main"]

# flag -> recipe key it overrides
_FLAGS = {"num_workers": "scaling.num_workers", "updates": "train.updates", "slots": "train.slots_per_update",
          "output_dir": "run.output_dir", "shards_dir": "data.shards_dir",
          "name": "run.name", "model": "model.name_or_path", "cpus_per_worker": "scaling.cpus_per_worker"}


def make_parser(default_recipe: str | None, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--recipe", default=default_recipe, required=default_recipe is None,
                   help=f"YAML recipe (default: {default_recipe})")
    p.add_argument("--num-workers", type=int, help="Ray Train workers (scaling.num_workers)")
    p.add_argument("--cpus-per-worker", type=float, help="CPUs reserved per worker")
    device = p.add_mutually_exclusive_group()
    device.add_argument("--cpu", dest="use_gpu", action="store_false", default=None, help="train on CPU (gloo)")
    device.add_argument("--gpu", dest="use_gpu", action="store_true", help="train on GPUs (NCCL)")
    p.add_argument("--updates", type=int, help="optimizer updates (train.updates)")
    p.add_argument("--slots", type=int, help="slots per update (train.slots_per_update)")
    p.add_argument("--output-dir", help="run.output_dir: where the run folder goes")
    p.add_argument("--name", help="run.name: the run folder's name")
    p.add_argument("--data-dir", help="data.root: folder the tasks' files are read from (never written to; "
                   "turns data.synthetic off)")
    p.add_argument("--shards-dir", help="data.shards_dir: prepared Arrow shards")
    p.add_argument("--model", help="model.name_or_path")
    p.add_argument("--resume-from", help="a checkpoint folder the run reported (run_dir/ray/NAME/checkpoint_*)")
    p.add_argument("--prepare-only", action="store_true", help="write the shards and stop")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="any recipe key, e.g. optim.lr=2e-5")
    return p


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The overrides the flags stand for, before the explicit key=value ones (which win)."""
    out = [f"{key}={getattr(args, flag)}" for flag, key in _FLAGS.items() if getattr(args, flag) is not None]
    out += data_dir_overrides(args.data_dir)
    if args.use_gpu is not None:
        out.append(f"scaling.use_gpu={str(args.use_gpu).lower()}")
    return out + list(args.overrides)


def data_dir_overrides(data_dir: str | None) -> list[str]:
    """What `--data-dir DIR` means in every entry point: read the tasks' files from DIR (data.root),
    and so not from a generated synthetic suite, which is never written into DIR."""
    return [] if data_dir is None else [f"data.root={data_dir}", "data.synthetic=false"]


def main(argv: list[str] | None = None, default_recipe: str | None = None,
         description: str = "prefinetune: multi-task pre-finetuning on Ray + DeepSpeed") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("finetune", "compare"):
        return _subcommand(argv[0], argv[1:])
    if argv and argv[0] == "pretrain":
        argv = argv[1:]
    args = make_parser(default_recipe, description).parse_args(argv)
    return _run(args)


def finetune_main(argv: list[str] | None = None) -> int:
    """`prefinetune finetune`: one downstream task from a plain model or an export (recipes/finetune/)."""
    args = make_parser(None, "prefinetune finetune: fine-tune a model or a prefinetune export on one task "
                       "(a recipe with a finetune: section, e.g. recipes/finetune/rte.yaml)").parse_args(argv)
    return _run(args, needs_finetune=True)


def _subcommand(name: str, argv: list[str]) -> int:
    if name == "finetune":
        return finetune_main(argv)
    from prefinetune.finetune.compare_cli import compare_main

    return compare_main(argv)


def _run(args: argparse.Namespace, needs_finetune: bool = False) -> int:
    from prefinetune.launcher import prepare_data, resolve_paths, run

    try:
        recipe = load_recipe(args.recipe, flag_overrides(args))
        if needs_finetune and recipe.finetune is None:
            raise RecipeError(f"recipe {args.recipe} has no finetune: section; fine-tuning recipes are in "
                              "recipes/finetune/ (pre-finetuning: prefinetune --recipe ...)")
        if args.prepare_only:
            prepare_data(resolve_paths(recipe))
        else:
            run(recipe, args.resume_from, source=args.recipe)
    except input_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunFailed as err:         # a worker stopped the run and said why (non-finite loss, disk full)
        print(f"error: the run stopped: {err}", file=sys.stderr)
        return 1
    return 0


def input_errors() -> tuple[type[Exception], ...]:
    """Errors in what the user gave (recipe keys, task files, rows): each names the key, file or row,
    so the entry points print the message alone, without a traceback, and exit 2."""
    from prefinetune.data.readers import BadRowError, TaskSourceError
    from prefinetune.finetune.plan import FinetuneError
    from prefinetune.tasks import FieldError

    return RecipeError, TaskSourceError, BadRowError, FieldError, FinetuneError
