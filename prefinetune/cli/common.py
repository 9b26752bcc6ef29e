"""What every entry point's command line shares: the run's flags (each a shorthand for a recipe key),
`--data-dir`, and which errors are the user's input (printed alone, exit 2).

    args = make_parser(None, "description").parse_args(argv)
    recipe = load_recipe(args.recipe, flag_overrides(args))
"""
from __future__ import annotations

import argparse

from prefinetune.recipe.config import RecipeError

__all__ = ["make_parser", "flag_overrides", "data_dir_overrides", "input_errors"]

# flag -> recipe key it overrides
_FLAGS = {"num_workers": "scaling.num_workers", "updates": "train.updates", "slots": "train.slots_per_update",
          "output_dir": "run.output_dir", "shards_dir": "data.shards_dir",
          "name": "run.name", "model": "model.name_or_path", "cpus_per_worker": "scaling.cpus_per_worker"}


def make_parser(default_recipe: str | None, description: str, prog: str | None = None,
                epilog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=default_recipe, required=default_recipe is None,
                   help="YAML recipe" + (f" (default: {default_recipe})" if default_recipe else " (required)"))
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


def input_errors() -> tuple[type[Exception], ...]:
    """Errors in what the user gave (recipe keys, task files, rows): each names the key, file or row,
    so the entry points print the message alone, without a traceback, and exit 2."""
    from prefinetune.data.readers import BadRowError, TaskSourceError
    from prefinetune.families import FieldError
    from prefinetune.finetune.plan import FinetuneError

    return RecipeError, TaskSourceError, BadRowError, FieldError, FinetuneError
